"""The commands' progress bar: rich on a terminal, nothing elsewhere; log lines wait while it is drawn."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from bridge.logs import logs_held


class ProgressBar:
    """A rich progress bar on a terminal (a no-op callback elsewhere)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._progress = (
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console)
            if enabled
            else None
        )
        self._tasks: dict[str, TaskID] = {}
        self._held = logs_held()

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        if self._progress is None:
            return None
        self._held.__enter__()  # log lines wait until the bar is gone
        self._progress.start()
        return self._update

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._held.__exit__(None, None, None)

    def _update(self, phase: str, done: int, total: int) -> None:
        """One phase's progress; a total of 0 or less means not known (the bar pulses, the count runs)."""
        assert self._progress is not None
        known = total if total > 0 else None
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(phase, total=known)
        self._progress.update(self._tasks[phase], completed=done, total=known)
