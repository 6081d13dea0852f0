"""What the audit's checks report: :class:`Finding`, a violation or a warning.

Each check returns :class:`Finding` s. A *violation* means the run's claim does not
hold as written (exit code 1): a stored epsilon that is not what the events
compose to, a client that did something other than the scenario's plan, privacy
amplification that was accounted but did not happen, or a budget exceeded. A
*warning* is worth a look but does not falsify the claim (accountants that
disagree, a duplicated line that only over-counts).

Finding kinds (stable; ``--json`` reports them):

========================= ========== ==================================================
kind                      severity   meaning
========================= ========== ==================================================
stored-epsilon            violation  a ledger line's (or summary.json's) epsilon differs
                                     from the recomputed one by > 1e-6 relative
budget                    violation  epsilon above ``dp.max_epsilon`` (per client) or
                                     ``dp.target_epsilon``; a warning where per-client
                                     user-level budgets cannot be recomputed
plan-mismatch             violation  noise, clip norm or steps differ from the
                                     scenario's plan (``plan_participation`` for
                                     DP-SGD, ``user_noise_multiplier`` and
                                     ``dp.max_grad_norm`` for DP-FedAvg)
accounting-mismatch       violation  accountant or delta differs from the scenario's
reported-mismatch         violation  the run itself marked the line with ``"mismatch"``
sample-rate               violation  accounted example sampling rate != batch / shard
client-sampling           violation  user-level client sampling is not what was
                                     accounted (fixed-size with q < 1, a Poisson rate
                                     off by > 4 binomial sigmas, another rate)
ledger-scenario           violation  lines the scenario cannot produce (unknown client,
                                     round out of range, too many clients in a round,
                                     a level its dp.mode does not write)
summary                   violation  summary.json contradicts the scenario
noise-split               violation  a user-level line's noise_multiplier is not the
                                     joint multiplier of its sum's multiplier and its
                                     count's noise std / sensitivity (adaptive
                                     clipping); a warning when the line lacks them
accountant-disagreement   warning    RDP below PRV/PLD beyond numerical tolerance, or
                                     PRV and PLD > 2 % apart, on one history (RDP
                                     above them is expected looseness: not a finding)
duplicate-line            warning    the same (round, client) twice (counted twice)
delta-size                warning    delta >= 1 / number of records it protects
shards-unknown            warning    no clients.json: the shard-dependent plan checks
                                     (steps, sample rate, delta vs shard) are skipped
summary-missing           warning    no summary.json (run killed or still running?)
summary-unchecked         warning    summary.json's spread cannot be recomputed
accountant-note           warning    a warning raised inside an accountant library
========================= ========== ==================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

#: Relative difference between a stored and a recomputed epsilon that is a violation.
STORED_EPSILON_RTOL = 1e-6

# Parameters are floats the run computed the same way; this only absorbs float noise.
_PARAM_RTOL, _PARAM_ATOL = 1e-9, 1e-12

Severity = Literal["violation", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem the audit found.

    Attributes:
        kind: Stable identifier (see the module docstring).
        message: What is wrong, in words, naming values and the line.
        line: 1-based ledger line, or None when no single line is at fault.
        severity: "violation" (exit code 1) or "warning".
    """

    kind: str
    message: str
    line: int | None = None
    severity: Severity = "violation"

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"[{self.kind}] {where}{self.message}"


def violation(kind: str, message: str, line: int | None = None) -> Finding:
    """A finding that falsifies the run's claim (exit code 1)."""
    return Finding(kind=kind, message=message, line=line, severity="violation")


def warning(kind: str, message: str, line: int | None = None) -> Finding:
    """A finding worth a look that does not falsify the claim."""
    return Finding(kind=kind, message=message, line=line, severity="warning")


def differs(stored: float, recomputed: float, rtol: float = STORED_EPSILON_RTOL) -> bool:
    """True when two epsilons differ by more than ``rtol`` relative (inf == inf)."""
    return not math.isclose(stored, recomputed, rel_tol=rtol, abs_tol=1e-12)


def close(a: float, b: float) -> bool:
    """True when two DP parameters (noise, rate, clip, delta) agree up to float noise."""
    return math.isclose(a, b, rel_tol=_PARAM_RTOL, abs_tol=_PARAM_ATOL)


def who(rec: dict[str, Any]) -> str:
    """'round R, client C' (or 'user level'): names a ledger line in messages."""
    if "client" in rec:
        return f"round {rec['round']}, client {rec['client']}"
    return f"round {rec['round']}, user level"
