"""Client errors: one-line reasons, errors.log, and the rule that stops a failing run.

A client's injected faults (`faults.*`: dropouts, `fail_probability`, stragglers,
a worker killed on purpose) are data: the run goes on and reports them. A client
whose code raised is a real error; so is a worker that could not build the
scenario's components. The worker marks such outcomes (``extra["raised"]``, and
``extra["fatal"]`` for a worker that could not set up), the grid marks cohorts
that never answered (``extra["cohort_failed"]``), and `FailureWatch` stops the
run when

* a worker could not set up (every client it gets would fail the same way);
* every client that trained in a round raised;
* more than `faults.max_failed_fraction` of the client trainings so far raised.

Ledger and metrics lines keep the one-line reason; the full tracebacks go to
``errors.log`` in the run directory.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsim.errors import FedsimError

if TYPE_CHECKING:
    from fedsim.config import Scenario
    from fedsim.engine.grid import RoundReport
    from fedsim.protocol import ClientOutcome

# Terminal colour and cursor codes (Ray colours its tracebacks).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
# Longest reason kept in a ledger or metrics line.
REASON_CHARS = 300
# Name of the file in the run directory that collects the full tracebacks.
ERRORS_LOG = "errors.log"


class ClientErrors(FedsimError, RuntimeError):
    """The run stopped because its clients fail with real errors (not injected faults)."""


def plain_text(text: str) -> str:
    """`text` without terminal escape codes."""
    return _ANSI.sub("", text)


def short_reason(error: BaseException | str, limit: int = REASON_CHARS) -> str:
    """One line naming an error, at most `limit` characters.

    An exception gives ``Type: message``; text holding a traceback (Ray's and
    Flower's error strings embed one) gives its last line, the exception itself.
    """
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error
    lines = [line.strip() for line in plain_text(text).splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    line = lines[-1] if "Traceback (most recent call last)" in text else " ".join(lines)
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def traceback_text(exc: BaseException) -> str:
    """The full traceback of `exc`, without escape codes."""
    return plain_text("".join(traceback.format_exception(exc)))


def is_real_error(outcome: ClientOutcome) -> bool:
    """A failure that is not a fault the scenario injected."""
    return outcome.error is not None and bool(
        outcome.extra.get("raised") or outcome.extra.get("cohort_failed")
    )


class FailureWatch:
    """Counts real client errors over a run, logs them and stops the run by the rules above.

    Args:
        scenario: the run's scenario (faults.max_failed_fraction, faults.crash_worker_at).
        run_dir: where errors.log is appended to.
    """

    def __init__(self, scenario: Scenario, run_dir: Path) -> None:
        self.max_fraction = scenario.faults.max_failed_fraction
        crash = scenario.faults.crash_worker_at
        # The round whose lost cohort the scenario caused on purpose (a test of recovery).
        self.crash_round = int(crash[0]) if crash else None
        self.log_path = Path(run_dir) / ERRORS_LOG
        self.trainings = 0
        self.errors = 0
        self.first: str | None = None

    def observe(self, report: RoundReport) -> None:
        """Take one training round's outcomes into account.

        Raises:
            ClientErrors: one of the stopping rules holds; the message names the first
                error of the run and where the tracebacks are.
        """
        trained = [o for o in report.outcomes if not o.extra.get("dropped")]
        real = [o for o in trained if self._counts(o, report.round)]
        self._log(report, real)
        self.trainings += len(trained)
        self.errors += len(real)
        if real and self.first is None:
            self.first = f"client {real[0].client}: {real[0].error}"
        where = f"(tracebacks in {self.log_path})"
        fatal = [o for o in real if o.extra.get("fatal")]
        if fatal:
            raise ClientErrors(f"round {report.round}: {fatal[0].error} {where}")
        if real and len(real) == len(trained):
            raise ClientErrors(
                f"round {report.round}: every client that trained failed with an error "
                f"({len(real)} of {len(trained)}); first: {self.first} {where}"
            )
        if self.errors > self.max_fraction * self.trainings:
            raise ClientErrors(
                f"round {report.round}: {self.errors} of {self.trainings} client trainings "
                f"so far failed with errors, more than faults.max_failed_fraction = "
                f"{self.max_fraction:g}; first: {self.first} {where}"
            )

    def _counts(self, outcome: ClientOutcome, round: int) -> bool:
        if not is_real_error(outcome):
            return False
        # faults.crash_worker_at kills a worker on purpose: its lost cohort is injected.
        return not (outcome.extra.get("cohort_failed") and round == self.crash_round)

    def _log(self, report: RoundReport, real: list[ClientOutcome]) -> None:
        """Append each distinct traceback of the round once, with the clients it hit."""
        seen: dict[str, list[int]] = {}
        for o in real:
            text = str(o.extra.get("traceback") or o.error)
            seen.setdefault(text, []).append(o.client)
        for reason in report.cohort_errors:
            seen.setdefault(plain_text(reason), [])
        if not seen:
            return
        with self.log_path.open("a", encoding="utf-8") as f:
            for text, clients in seen.items():
                who = f"clients {clients}" if clients else "a cohort"
                f.write(f"--- round {report.round}, {who}\n{text.rstrip()}\n")


def outcome_fields(exc: BaseException, *, fatal: bool = False) -> dict[str, Any]:
    """The ``extra`` a worker attaches to a client whose code raised `exc`."""
    extra: dict[str, Any] = {"raised": 1, "traceback": traceback_text(exc)}
    if fatal:
        extra["fatal"] = 1
    return extra
