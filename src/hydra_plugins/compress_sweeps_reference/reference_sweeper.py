"""Hydra sweeper plugin `hydra/sweeper=reference` (conf/hydra/sweeper/reference.yaml): the grid plus one reference
job. Hydra only loads plugins from the `hydra_plugins` namespace; the logic is in `compress_sweeps.sweeps.sweeper`."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

from compress_sweeps.sweeps.sweeper import reference_point


class ReferenceSweeper(BasicSweeper):
    """The basic grid sweeper, plus one job of the first grid point with `reference` overrides applied."""

    def __init__(
        self, max_batch_size: int | None = None, params: dict[str, str] | None = None, reference: Sequence[str] = ()
    ) -> None:
        super().__init__(max_batch_size, params)
        self.reference = list(reference)

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's batches, the reference job first in the first batch unless the grid already holds it."""
        batches = BasicSweeper.split_arguments(overrides, max_batch_size)
        if not self.reference:
            return batches
        point = reference_point(batches[0][0], self.reference)
        grid = [sorted(job) for batch in batches for job in batch]
        return batches if sorted(point) in grid else [[point, *batches[0]], *batches[1:]]
