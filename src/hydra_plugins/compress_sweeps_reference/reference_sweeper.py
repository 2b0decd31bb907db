"""Hydra sweeper plugin `hydra/sweeper=reference` (conf/hydra/sweeper/reference.yaml): the grid (or a union of grids)
plus one reference job. Hydra only loads plugins from the `hydra_plugins` namespace; the logic is in
`compress_sweeps.sweeps.sweeper`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

from compress_sweeps.sweeps.sweeper import grid_union, reference_point


class ReferenceSweeper(BasicSweeper):
    """The basic grid sweeper, plus one job of the first grid point with `reference` overrides applied."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        reference: Sequence[str] = (),
        grids: Sequence[Mapping[str, str]] = (),
    ) -> None:
        super().__init__(max_batch_size, params)
        self.reference = list(reference)
        self.grids = [[f"{key}={value}" for key, value in grid.items()] for grid in grids]

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's batches (or the union of `grids`), the reference job first in the first batch unless the
        sweep already holds it."""
        if self.grids:
            batches = self._union(overrides, max_batch_size)
        else:
            batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        if not self.reference:
            return batches
        point = reference_point(batches[0][0], self.reference)
        grid = [sorted(job) for batch in batches for job in batch]
        return batches if sorted(point) in grid else [[point, *batches[0]], *batches[1:]]

    def _union(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """Every grid's jobs, in batches. `overrides` are the sweep's `params` (first, in Hydra's basic sweeper and in
        the precheck) and then the command line's; each grid's own overrides go between the two."""
        parser = OverridesParser.create()
        params, command_line = overrides[: len(self.params)], overrides[len(self.params) :]
        grids = [parser.parse_overrides(grid) for grid in self.grids]

        def product(chosen: list[Override]) -> list[list[str]]:
            return BasicSweeper.split_arguments(chosen, None)[0]

        jobs = grid_union(params, grids, command_line, product)
        size = max_batch_size or len(jobs)
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]
