"""Live terminal progress of a run (rich): the start-up phases as they happen, then one
bar with an ETA and the latest round's numbers, laid out to fit 80 columns.

Start-up (Ray, the Flower engine, data, shards, the first round's workers) takes tens of
seconds before any round ends; each phase is printed when it begins, with the seconds
since the run started, so the terminal is never silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fedsim.config import Scenario

#: Width the display is laid out for: it never needs more, whatever the numbers.
WIDTH = 80
_NAME_WIDTH = 16
_BAR_WIDTH = 24


def _clock(seconds: float | None) -> str:
    """h:mm:ss, or '-:--:--' when unknown."""
    if seconds is None:
        return "-:--:--"
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunProgress:
    """Start-up phases, then a round bar: ETA, accuracy, loss, epsilon, clients done.

    Args:
        scenario: The run's scenario (its name heads the bar).
        enabled: False for ``--quiet``: nothing is shown, counts are still kept.
        console: Where to draw (default: stderr).
        clock: Seconds source (tests pass a fake one).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        enabled: bool = True,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.scenario = scenario
        self.console = console or Console(stderr=True)
        self._clock = clock
        self._t0 = clock()
        self._live: Live | None = None
        self.rounds = 0
        self.done = 0
        self.clients = 0
        self.failed = 0
        self._first_done = 0
        self._started: float | None = None
        self._last: dict[str, Any] = {}
        self._status = ""

    # ------------------------------------------------------------------ start-up
    def phase(self, text: str) -> None:
        """A start-up phase begins (e.g. "starting Ray"): shown at once, on its own line
        before the bar exists, in the bar's status line after."""
        if not self.enabled:
            return
        if self._live is not None:
            self._status = text
            self._live.refresh()
            return
        self.console.print(
            f"{_clock(self._clock() - self._t0)}  {text}...", markup=False, highlight=False
        )

    def start(self, rounds: int, done: int = 0, previous: Sequence[dict[str, Any]] = ()) -> None:
        """Show the bar: `rounds` in all, `done` already finished (a resume), whose metric
        rows `previous` count towards clients done."""
        self.rounds, self.done, self._first_done = rounds, done, done
        self.clients = sum(int(r.get("clients_trained") or 0) for r in previous)
        self.failed = sum(int(r.get("clients_failed") or 0) for r in previous)
        self._last = dict(previous[-1]) if previous else {}
        self._started = self._clock()
        self._status = f"round {done + 1}: waiting for the first replies (workers start)"
        if not self.enabled:
            return
        self._live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=2,
            transient=False,
            redirect_stderr=False,
            redirect_stdout=False,
        )
        self._live.start()

    # ------------------------------------------------------------------ rounds
    def update(self, row: dict[str, Any]) -> None:
        """One round finished with metrics `row`."""
        self.done += 1
        self.clients += int(row.get("clients_trained") or 0)
        self.failed += int(row.get("clients_failed") or 0)
        self._last = dict(row)
        self._status = ""
        if self._live is not None:
            self._live.refresh()

    def eta(self) -> float | None:
        """Seconds left: this process's mean round time times the rounds to go."""
        ran = self.done - self._first_done
        if self._started is None or ran <= 0:
            return None
        per_round = (self._clock() - self._started) / ran
        return per_round * max(0, self.rounds - self.done)

    def render(self) -> Group:
        """The two lines of the display (each at most :data:`WIDTH` columns)."""
        head = Table.grid(padding=(0, 1))
        head.add_column(width=_NAME_WIDTH, no_wrap=True, overflow="ellipsis")
        head.add_column(width=_BAR_WIDTH)
        head.add_column(width=11, justify="right", no_wrap=True)
        head.add_column(width=24, no_wrap=True)
        name = Text(self.scenario.name, style="bold")
        name.truncate(_NAME_WIDTH, overflow="ellipsis")
        elapsed = self._clock() - self._t0
        head.add_row(
            name,
            ProgressBar(total=max(1, self.rounds), completed=self.done, width=_BAR_WIDTH),
            f"{self.done}/{self.rounds}",
            f"{_clock(elapsed)} eta {_clock(self.eta())}",
        )
        return Group(head, self._stats_line())

    def _stats_line(self) -> Text:
        if self._status:
            line = Text("  " + self._status, style="dim")
        else:
            row = self._last
            parts = []
            if row.get("accuracy") is not None:
                parts.append(f"acc {row['accuracy']:.3f}  loss {row['loss']:.3f}")
            if row.get("epsilon_max") is not None:
                parts.append(f"eps max {row['epsilon_max']:.2f}")
            parts.append(f"clients done {self.clients}")
            line = Text("  " + "  ".join(parts))
            if self.failed:
                line.append(f"  failed {self.failed}", style="red")
        line.no_wrap = True
        line.truncate(WIDTH, overflow="ellipsis")
        return line

    def note(self, text: str) -> None:
        """Print a line above the progress bar (e.g. why the run stopped)."""
        if self.enabled:
            self.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        """End the live display, leaving its last state on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            if not self.console.is_terminal:
                # Written to a file, the last frame has no line end: what follows
                # (the results table) would start on its last line.
                self.console.line()


__all__ = ["WIDTH", "RunProgress"]
