"""Reading what the audit trusts: a run directory's scenario and privacy ledger.

The audit recomputes every epsilon from ``scenario.toml`` and ``privacy_ledger.jsonl``,
and checks each participation against the plan for the client's shard size, read from
``clients.json`` (the run directory only: no data set, no Flower, Ray or torch).
``summary.json`` is read only to cross-check what the run claimed (noise RNG, stored
epsilon summary). Anything unreadable raises :class:`AuditInputError`: nothing is
skipped.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.audit.errors import AuditInputError
from fedsim.config import Scenario, ScenarioError
from fedsim.privacy import ACCOUNTANTS, LedgerError, PrivacyEvent, records
from fedsim.privacy.records import SAMPLE_LEVEL as SAMPLE_LEVEL  # re-exported for the audit
from fedsim.privacy.records import USER_LEVEL as USER_LEVEL
from fedsim.rundir import CLIENTS_FILE, RunDirCorruptError, read_clients

SCENARIO_FILE = "scenario.toml"
LEDGER_FILE = "privacy_ledger.jsonl"
SUMMARY_FILE = "summary.json"

PLD_INSTALL_HINT = "pip install 'fedsim[audit]'"


@dataclass(frozen=True)
class LedgerLine:
    """One ledger line and its 1-based line number in the file."""

    line_no: int
    record: dict[str, Any]

    @property
    def level(self) -> str:
        return str(self.record["level"])


@dataclass(frozen=True)
class RunInputs:
    """Everything read from one run directory.

    Attributes:
        run_dir: The directory.
        scenario: The resolved scenario the run wrote.
        lines: Every ledger line in file order (empty without a ledger file).
        ledger_present: Whether ``privacy_ledger.jsonl`` exists.
        summary: ``summary.json`` as a dict, or None when the file is absent (a run
            that was killed before its end).
        shard_sizes: Training shard size of each client from ``clients.json``, or None
            when the file is absent (a run written before fedsim wrote it).
    """

    run_dir: Path
    scenario: Scenario
    lines: list[LedgerLine]
    ledger_present: bool
    summary: dict[str, Any] | None
    shard_sizes: np.ndarray | None = None

    def level(self, level: str) -> list[LedgerLine]:
        """The lines of one level (``"sample"`` or ``"user"``), in file order."""
        return [line for line in self.lines if line.level == level]


def load_run(run_dir: Path | str) -> RunInputs:
    """Read and validate a run directory.

    Raises:
        AuditInputError: a missing directory or file, a bad scenario, an unreadable
            ``summary.json``, or a corrupt / truncated / invalid ledger line (the
            message and ``line_no`` name the line).
    """
    path = Path(run_dir)
    if not path.exists():
        raise AuditInputError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise AuditInputError(f"{path} is not a directory (expected a fedsim run directory)")
    scenario_path = path / SCENARIO_FILE
    if not scenario_path.is_file():
        raise AuditInputError(f"{scenario_path} is missing: is {path} a fedsim run directory?")
    try:
        # Schema checks only: the model and strategy checks import torch and Flower,
        # and this scenario passed them when the run started.
        scenario = Scenario.from_toml(scenario_path, checks="schema")
    except ScenarioError as exc:
        raise AuditInputError(f"bad scenario: {exc}") from exc

    ledger_path = path / LEDGER_FILE
    ledger_present = ledger_path.is_file()
    if ledger_present:
        lines = _read_lines(ledger_path)
    elif scenario.dp.mode != "off":
        raise AuditInputError(
            f"{ledger_path} is missing, but the scenario has dp.mode = {scenario.dp.mode!r}: "
            "without the ledger there is nothing to audit"
        )
    else:
        lines = []
    summary = _read_summary(path / SUMMARY_FILE)
    return RunInputs(
        run_dir=path,
        scenario=scenario,
        lines=lines,
        ledger_present=ledger_present,
        summary=summary,
        shard_sizes=_read_shard_sizes(path / CLIENTS_FILE, scenario.population),
    )


def _read_lines(path: Path) -> list[LedgerLine]:
    try:
        # User-level lines too: the ledger's resume keeps them as written, the audit not.
        numbered = records.read_numbered(path, check_user=True)
    except LedgerError as exc:
        raise AuditInputError(f"corrupt ledger: {exc}", line_no=exc.line_no) from exc
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror}") from exc
    return [LedgerLine(line_no=n, record=r) for n, r in numbered]


def event_of(record: dict[str, Any]) -> PrivacyEvent:
    """The mechanism a ledger line reports (validated by PrivacyEvent)."""
    return PrivacyEvent(
        noise_multiplier=record["noise_multiplier"],
        sample_rate=record["sample_rate"],
        steps=record["steps"],
        max_grad_norm=record["max_grad_norm"],
        delta=record["delta"],
    )


def _read_summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditInputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AuditInputError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- shards


def _read_shard_sizes(path: Path, population: int) -> np.ndarray | None:
    """Training shard size of every client, as the run wrote them (None: no file).

    Raises:
        AuditInputError: the file is corrupt, or lists another number of clients than
            the scenario's population.
    """
    try:
        sizes = read_clients(path)
    except RunDirCorruptError as exc:
        raise AuditInputError(str(exc)) from exc
    if sizes is None:
        return None
    if len(sizes) != population:
        raise AuditInputError(
            f"{path} lists {len(sizes)} clients but the scenario's population is {population}"
        )
    return np.asarray(sizes, dtype=np.int64)


# --------------------------------------------------------------------------- accountants


def dp_accounting_available() -> bool:
    """Whether Google's dp-accounting (needed by the 'pld' accountant) is installed."""
    return importlib.util.find_spec("dp_accounting") is not None


def parse_accountants(text: str | None) -> list[str] | None:
    """Split a ``--accountants rdp,prv,pld`` value; None (flag absent) stays None.

    Raises:
        AuditInputError: an empty list or an unknown / unavailable name.
    """
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise AuditInputError(
            f"--accountants is empty; give a comma-separated list of {', '.join(ACCOUNTANTS)}"
        )
    if "" in names:
        raise AuditInputError(f"--accountants {text!r} has an empty name between commas")
    return check_accountants(names)


def check_accountants(names: Sequence[str]) -> list[str]:
    """Validate accountant names (deduplicated, order kept).

    Raises:
        AuditInputError: an unknown name (listing the allowed ones), or 'pld' without
            dp-accounting installed.
    """
    if isinstance(names, str):
        raise AuditInputError(
            f"accountants must be a list of names, got the string {names!r}; "
            "use parse_accountants() for 'rdp,prv'"
        )
    unknown = [n for n in names if n not in ACCOUNTANTS]
    if unknown:
        raise AuditInputError(
            f"unknown accountant(s) {', '.join(repr(n) for n in unknown)}; "
            f"allowed: {', '.join(ACCOUNTANTS)}"
        )
    if not names:
        raise AuditInputError(f"no accountant requested; allowed: {', '.join(ACCOUNTANTS)}")
    if "pld" in names and not dp_accounting_available():
        raise AuditInputError(
            "accountant 'pld' needs Google's dp-accounting, which is not installed: "
            f"{PLD_INSTALL_HINT}"
        )
    return list(dict.fromkeys(names))


def default_accountants(scenario: Scenario) -> list[str]:
    """The scenario's accountant, then rdp and prv.

    PLD (Google's dp-accounting) runs when named (`--accountants rdp,prv,pld`): it is
    the slowest (~0.5 s a history), and the default audit answers in under 3 s.
    """
    return list(dict.fromkeys([scenario.dp.accountant, "rdp", "prv"]))
