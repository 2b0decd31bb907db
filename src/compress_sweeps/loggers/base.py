"""The small interface every logger offers to the train entrypoint and the training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class RunLogger(Protocol):
    def start(self, config: dict, run_dir: Path) -> None:
        """Open the run: `config` is the resolved config as a plain nested dict."""

    def log(self, values: dict[str, float], step: int) -> None:
        """Append a history row at optimizer step `step`."""

    def finish(self, summary: dict, exit_code: int) -> None:
        """Write the final results as the run summary and close the run (also when the job failed)."""


class NullLogger:
    """`logger=none`: log nothing."""

    def start(self, config: dict, run_dir: Path) -> None:
        pass

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def finish(self, summary: dict, exit_code: int) -> None:
        pass
