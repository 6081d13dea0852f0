"""Checks every ledger line gets, whatever its level.

The run's own mismatch mark, accountant and delta against the scenario, the round
range, and the stored epsilon against the composition of the events up to that line.
"""

from __future__ import annotations

from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.findings import Finding, close, differs, violation, who
from fedsim.audit.inputs import LedgerLine
from fedsim.config import Scenario
from fedsim.privacy import PrivacyError


def check_common(line: LedgerLine, scenario: Scenario) -> list[Finding]:
    """Checks every line gets: the run's own mismatch mark, accountant, delta, round."""
    rec, n = line.record, line.line_no
    out = []
    if "mismatch" in rec:
        out.append(
            violation(
                "reported-mismatch",
                f"{who(rec)}: the run flagged this participation: {rec['mismatch']}",
                n,
            )
        )
    if rec["accountant"] != scenario.dp.accountant:
        out.append(
            violation(
                "accounting-mismatch",
                f"{who(rec)}: accountant {rec['accountant']!r} but the scenario's "
                f"dp.accountant is {scenario.dp.accountant!r}",
                n,
            )
        )
    if not close(float(rec["delta"]), scenario.dp.delta):
        out.append(
            violation(
                "accounting-mismatch",
                f"{who(rec)}: delta {rec['delta']} but the scenario's dp.delta is "
                f"{scenario.dp.delta}",
                n,
            )
        )
    if not 1 <= int(rec["round"]) <= scenario.rounds:
        out.append(
            violation(
                "ledger-scenario",
                f"{who(rec)}: round {rec['round']} outside the scenario's rounds "
                f"1..{scenario.rounds}",
                n,
            )
        )
    return out


def check_stored(
    line: LedgerLine, history: list[tuple[float, float, int]], cache: EpsilonCache
) -> list[Finding]:
    """The line's stored epsilon against its own accountant and delta over ``history``."""
    rec = line.record
    try:
        recomputed = cache.epsilon(history, delta=float(rec["delta"]), accountant=rec["accountant"])
    except PrivacyError as exc:
        return [
            violation(
                "stored-epsilon",
                f"{who(rec)}: stored epsilon {rec['epsilon']} cannot be recomputed with "
                f"accountant {rec['accountant']!r}: {exc}",
                line.line_no,
            )
        ]
    stored = float(rec["epsilon"])
    if differs(stored, recomputed):
        return [
            violation(
                "stored-epsilon",
                f"{who(rec)}: stored epsilon {stored!r} but the events up to this line "
                f"compose to {recomputed!r} ({rec['accountant']}, delta={rec['delta']})",
                line.line_no,
            )
        ]
    return []
