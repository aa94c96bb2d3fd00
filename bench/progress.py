"""A progress bar on stderr for a run of many stages: one step per stage."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StageBar:
    """rich.progress on stderr; `with StageBar(total) as bar:` then begin() and end() per stage."""

    def __init__(self, total: int):
        self._progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("starting", total=total)

    def __enter__(self) -> StageBar:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def begin(self, name: str) -> None:
        """Show the stage that is running now."""
        self._progress.update(self._task, description=name)

    def end(self) -> None:
        """Count one stage as done."""
        self._progress.advance(self._task)
