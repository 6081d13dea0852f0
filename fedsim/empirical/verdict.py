"""`fedsim audit RUN_DIR --empirical`: the empirical bound beside the accountant's epsilon.

Reads only the run directory: `empirical_audit.json` (written at the end of a run
with `audit.canaries`), `privacy_ledger.jsonl` and `scenario.toml`. The claimed
epsilon is recomputed from the ledger (never taken from a stored number).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedsim.errors import FedsimError

EXIT_CLEAN, EXIT_VIOLATION, EXIT_BAD_INPUT = 0, 1, 2


class EmpiricalInputError(FedsimError, ValueError):
    """The run directory lacks what the empirical audit needs."""


def empirical_verdict(run_dir: Path) -> dict[str, Any]:
    """The empirical audit of a run, checked against the recomputed claimed epsilon.

    Raises:
        EmpiricalInputError: no empirical_audit.json (run without audit.canaries), or an
            unreadable file (named in the message).
    """
    run_dir = Path(run_dir)
    path = run_dir / "empirical_audit.json"
    if not path.is_file():
        raise EmpiricalInputError(
            f"{path} not found: the run had no canaries; rerun with --set audit.canaries=1000"
        )
    try:
        audit = json.loads(path.read_text(encoding="utf-8"))
        scenario = tomllib.loads((run_dir / "scenario.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmpiricalInputError(f"{run_dir}: unreadable audit input ({exc})") from exc
    level = _level(scenario)
    claimed = _claimed_epsilon(run_dir, scenario)
    if audit.get("method") == "one_shot":
        return _one_shot_verdict(audit, claimed, level)
    bound = float(audit["epsilon_lower_bound"])
    method = audit.get("method", "one_run")
    return {
        "method": method,
        "level": level,
        "kind": "lower bound" if method == "one_run" else "estimate",
        "epsilon_lower_bound": bound,
        "confidence": audit.get("confidence"),
        "canaries": audit.get("canaries"),
        "included": audit.get("included"),
        "guesses": audit.get("guesses"),
        "correct": audit.get("correct"),
        "claimed_epsilon": claimed,
        "delta": audit.get("delta") if claimed is not None else None,
        "violation": claimed is not None and bound > claimed,
        "note": (
            "DP is off: nothing is claimed; the bound measures leakage"
            if claimed is None
            else "a lower bound above the claimed epsilon means the implementation "
            "does not deliver its guarantee"
        ),
    }


def _one_shot_verdict(audit: dict[str, Any], claimed: float | None, level: str) -> dict[str, Any]:
    """The one-shot *estimate* beside the claim: above it is a warning, never a violation."""
    estimate = float(audit["epsilon_estimate"])
    return {
        "method": "one_shot",
        "level": level,
        "kind": "estimate",
        "epsilon_estimate": estimate,
        "confidence": None,
        "canaries": audit.get("canaries"),
        "included": audit.get("canaries"),
        "guesses": None,
        "correct": None,
        "claimed_epsilon": claimed,
        "delta": audit.get("delta"),
        "violation": False,
        "exceeds_claim": claimed is not None and estimate > claimed,
        "note": "user-level one-shot estimate (Andrew et al. 2023): a Gaussian fit of "
        "canary cosines, not a certified bound",
    }


def _level(scenario: dict[str, Any]) -> str:
    """The privacy level the run claims: "user", "example" (DP-SGD), or "none"."""
    mode = scenario.get("dp", {}).get("mode", "off")
    return {"user": "user", "sample": "example"}.get(mode, "none")


def _claimed_epsilon(run_dir: Path, scenario: dict[str, Any]) -> float | None:
    """Max over clients of the run's own level's epsilon, recomposed from the ledger."""
    dp = scenario.get("dp", {})
    mode = dp.get("mode", "off")
    if mode == "off":
        return None
    from fedsim.privacy import PrivacyLedger

    ledger_path = run_dir / "privacy_ledger.jsonl"
    if not ledger_path.is_file() or ledger_path.stat().st_size == 0:
        return 0.0
    ledger = PrivacyLedger.load(ledger_path, delta=dp["delta"], accountant=dp["accountant"])
    return ledger.level_summary(int(scenario["population"]), mode)["max"]


def empirical_command(run_dir: str, *, as_json: bool, console: Console | None = None) -> int:
    """Print the empirical audit; exit 0 clean, 1 violation, 2 unreadable input."""
    console = console or Console()
    try:
        verdict = empirical_verdict(Path(run_dir))
    except (EmpiricalInputError, ValueError) as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    if as_json:
        print(json.dumps(verdict, indent=2))
    else:
        level = verdict["level"]
        table = Table(
            title=f"empirical privacy audit ({verdict['method']}, "
            f"{level + ' level' if level != 'none' else 'no DP'})"
        )
        table.add_column("quantity")
        table.add_column("value", justify="right")
        measured = verdict.get("epsilon_estimate", verdict.get("epsilon_lower_bound"))
        rows = [
            (f"claimed {level}-level epsilon (accountant, max over clients)",
             _f(verdict["claimed_epsilon"])),
            ("delta", _g(verdict["delta"])),
            (f"empirical epsilon {verdict['kind']}", _f(measured)),
            ("confidence", _f(verdict["confidence"])),
            ("canaries (included)", f"{verdict['canaries']} ({verdict['included']})"),
            ("guesses / correct", f"{verdict['guesses']} / {verdict['correct']}"),
            ("verdict", _word(verdict)),
        ]  # fmt: skip
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
        console.print(verdict["note"])
    return EXIT_VIOLATION if verdict["violation"] else EXIT_CLEAN


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def _g(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def _word(verdict: dict[str, Any]) -> str:
    if verdict["violation"]:
        return "VIOLATION"
    if verdict.get("exceeds_claim"):
        return "estimate above the claim (not a proof)"
    return "consistent"
