"""The live progress display: start-up phases as they happen, a bar with an ETA in a
fixed 80-column layout, clients done counted on after a resume."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from fedsim.cli.progress import WIDTH, RunProgress
from tests.conftest import small_scenario


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _row(rnd: int, **extra: Any) -> dict[str, Any]:
    row = {
        "round": rnd,
        "accuracy": 0.912345,
        "loss": 0.30123,
        "epsilon_max": 123456.789,
        "clients_trained": 10,
        "clients_failed": 0,
    }
    row.update(extra)
    return row


def _lines(progress: RunProgress, console: Console) -> list[str]:
    console.print(progress.render())
    return console.export_text(clear=True).rstrip("\n").splitlines()


def _progress(name: str = "quickstart") -> tuple[RunProgress, Console, FakeClock]:
    clock = FakeClock()
    console = Console(width=200, record=True, force_terminal=False)
    sc = small_scenario(name=name)
    return RunProgress(sc, enabled=False, console=console, clock=clock), console, clock


def test_lines_fit_80_columns_even_on_a_wide_terminal() -> None:
    progress, console, clock = _progress(name=("a_very_long_scenario_name_for_a_sweep_" * 3)[:100])
    progress.start(rounds=100_000)
    clock.now += 5
    progress.update(_row(1, clients_trained=9_999_999, clients_failed=12_345))
    lines = _lines(progress, console)
    assert len(lines) == 2
    assert all(len(line) <= WIDTH for line in lines), [len(ln) for ln in lines]
    assert "1/100000" in lines[0]


def test_eta_is_mean_round_time_times_rounds_left() -> None:
    progress, console, clock = _progress()
    progress.start(rounds=10)
    assert "eta -:--:--" in _lines(progress, console)[0]  # no round finished yet
    for rnd in (1, 2):
        clock.now += 30
        progress.update(_row(rnd))
    # 60 s for 2 rounds: 8 rounds left at 30 s each.
    assert progress.eta() == 240
    assert "eta 0:04:00" in _lines(progress, console)[0]


def test_clients_done_counts_on_after_a_resume() -> None:
    progress, console, clock = _progress()
    previous = [_row(1), _row(2, clients_failed=1), _row(3)]
    progress.start(rounds=6, done=3, previous=previous)
    lines = _lines(progress, console)
    assert "3/6" in lines[0]
    clock.now += 10
    progress.update(_row(4, clients_trained=7))
    lines = _lines(progress, console)
    assert "4/6" in lines[0]
    assert "clients done 37" in lines[1] and "failed 1" in lines[1]
    # The ETA uses only rounds this process ran: 10 s each, 2 to go.
    assert "eta 0:00:20" in lines[0]


def test_first_round_says_what_it_waits_for() -> None:
    progress, console, _ = _progress()
    progress.start(rounds=3)
    assert "round 1: waiting for the first replies" in _lines(progress, console)[1]


def test_startup_phases_are_printed_as_they_begin() -> None:
    clock = FakeClock()
    console = Console(width=80, record=True)
    progress = RunProgress(small_scenario(), console=console, clock=clock)
    progress.phase("starting Ray")
    clock.now += 12.4
    progress.phase("loading data (digits)")
    text = console.export_text()
    assert "0:00:00  starting Ray..." in text
    assert "0:00:12  loading data (digits)..." in text


def test_quiet_shows_nothing() -> None:
    console = Console(width=80, record=True)
    progress = RunProgress(small_scenario(), enabled=False, console=console)
    progress.phase("starting Ray")
    progress.start(rounds=2)
    progress.update(_row(1))
    progress.note("stopped")
    progress.stop()
    assert console.export_text() == ""


def test_a_name_with_markup_is_shown_as_is() -> None:
    # Scenario names are plain identifiers now; a scenario built in code without
    # validation (model_copy) must still never be read as rich markup.
    clock = FakeClock()
    console = Console(width=200, record=True, force_terminal=False)
    sc = small_scenario().model_copy(update={"name": "q[/]"})
    progress = RunProgress(sc, enabled=False, console=console, clock=clock)
    progress.start(rounds=2)
    assert _lines(progress, console)[0].startswith("q[/]")
