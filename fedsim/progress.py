"""Live terminal progress of a run (rich): one bar, the latest round's numbers."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsim.config import Scenario


class RunProgress:
    """Round counter with accuracy, loss, epsilon so far and clients done."""

    def __init__(self, scenario: Scenario, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.scenario = scenario
        self._progress: Progress | None = None
        self._task: Any = None
        self._clients = 0

    def start(self, rounds: int, done: int = 0) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(
            f"{self.scenario.name}: round",
            total=rounds,
            completed=done,
            stats="starting workers...",
        )
        self._progress.start()

    def update(self, row: dict[str, Any]) -> None:
        self._clients += row.get("clients_trained", 0)
        if self._progress is None:
            return
        parts = []
        if row.get("accuracy") is not None:
            parts.append(f"acc {row['accuracy']:.3f}  loss {row['loss']:.3f}")
        if row.get("epsilon_max") is not None:
            parts.append(f"eps max {row['epsilon_max']:.2f}")
        parts.append(f"clients done {self._clients}")
        if row.get("clients_failed"):
            parts.append(f"[red]failed {row['clients_failed']}[/red]")
        self._progress.update(self._task, advance=1, stats="  ".join(parts))

    def note(self, text: str) -> None:
        """Print a line above the progress bar (e.g. why the run stopped)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
