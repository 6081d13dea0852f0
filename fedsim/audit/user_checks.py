"""User-level lines against the scenario's DP-FedAvg plan and the sampling accounted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.findings import Finding, close, violation, warning, who
from fedsim.audit.inputs import LedgerLine
from fedsim.audit.line_checks import check_common, check_stored
from fedsim.audit.user import UserLevel, user_entries
from fedsim.config import Scenario
from fedsim.privacy.records import DISCARDED


def check_user_lines(
    lines: Sequence[LedgerLine],
    scenario: Scenario,
    user: UserLevel | None,
    cache: EpsilonCache,
) -> list[Finding]:
    """Every user-level line: stored cumulative epsilon, scenario, client sampling."""
    out: list[Finding] = []
    mode = scenario.dp.mode
    if lines and mode != "user":
        out.append(
            violation(
                "ledger-scenario",
                f"the ledger has {len(lines)} user-level line(s) but the scenario has "
                f"dp.mode = {mode!r}",
            )
        )
    plan = _user_plan(scenario) if lines and mode == "user" else None
    rounds: Counter[int] = Counter()
    for i, line in enumerate(lines):
        rec, n = line.record, line.line_no
        out.extend(check_common(line, scenario))
        counted = rec["status"] != DISCARDED  # a killed attempt's release, run again later
        if counted:
            rounds[int(rec["round"])] += 1
        if counted and rounds[int(rec["round"])] == 2:
            out.append(
                warning(
                    "duplicate-line",
                    f"round {rec['round']} has more than one user-level release; each is composed",
                    n,
                )
            )
        # The stored epsilon is the population's after this release: compose 1..i.
        out.extend(check_stored(line, user_entries(lines[: i + 1]), cache))
        out.extend(_check_user_clients(line, scenario))
        out.extend(check_noise_split(line, scenario))
        if rec["sampling"] == "fixed" and float(rec["sample_rate"]) < 1.0:
            out.append(
                violation(
                    "client-sampling",
                    f"{who(rec)}: accounted amplification without Poisson sampling: "
                    f"clients were sampled fixed-size but the release is accounted with "
                    f"sample_rate {rec['sample_rate']} < 1",
                    n,
                )
            )
        if plan is not None:
            out.extend(_check_user_plan(line, plan))
    out.extend(_check_realised_rate(user))
    return out


def _check_realised_rate(user: UserLevel | None) -> list[Finding]:
    """The realised fraction of clients sampled must sit in the accounted rate's band."""
    rate = user.realised if user is not None else None
    if rate is None or rate.within_band:
        return []
    return [
        violation(
            "client-sampling",
            f"Poisson client sampling: the mean fraction of clients sampled over "
            f"{rate.releases} release(s) is {rate.observed:.6g} but the accounted rate "
            f"is {rate.accounted:.6g} ({rate.z_score:+.2f} binomial standard deviations; "
            f"allowed +-{rate.band_sigmas:g})",
        )
    ]


@dataclass(frozen=True)
class _UserPlan:
    """What the scenario prescribes for every user-level release."""

    noise_multiplier: float
    sample_rate: float
    sampling: str
    clip_norm: float | None  # None with adaptive clipping: it changes every round
    count_noise_std: float | None = None  # adaptive clipping's sigma_b


def _user_plan(scenario: Scenario) -> _UserPlan:
    # Same functions the server builds DP-FedAvg with, so audit and run cannot drift.
    from fedsim.strategies.factory import user_noise_multiplier, user_sample_rate

    dp = scenario.dp
    adaptive = bool(getattr(dp, "adaptive_clipping", False))
    return _UserPlan(
        noise_multiplier=float(user_noise_multiplier(scenario)),
        sample_rate=float(user_sample_rate(scenario)),
        sampling=str(getattr(dp, "client_sampling", "poisson")),
        clip_norm=None if adaptive else float(dp.max_grad_norm),
        # The server's default: expected clients / 20 (Andrew et al. 2021).
        count_noise_std=(
            float(dp.clip_count_stddev or scenario.clients_per_round / 20.0) if adaptive else None
        ),
    )


def _check_user_plan(line: LedgerLine, plan: _UserPlan) -> list[Finding]:
    rec = line.record
    problems = []
    if not close(float(rec["noise_multiplier"]), plan.noise_multiplier):
        problems.append(
            f"noise_multiplier {rec['noise_multiplier']!r} != planned {plan.noise_multiplier!r}"
        )
    if plan.clip_norm is not None and not close(float(rec["max_grad_norm"]), plan.clip_norm):
        problems.append(
            f"clip norm {rec['max_grad_norm']!r} != dp.max_grad_norm {plan.clip_norm!r}"
        )
    if int(rec["steps"]) != 1:
        problems.append(f"steps {rec['steps']} != 1 (one release per round)")
    std = rec.get("count_noise_std")
    if plan.count_noise_std is not None and std is not None:
        if not close(float(std), plan.count_noise_std):
            problems.append(
                f"count noise std {std!r} != planned {plan.count_noise_std!r} "
                "(dp.clip_count_stddev, default clients_per_round / 20)"
            )
    out = []
    if problems:
        out.append(violation("plan-mismatch", f"{who(rec)}: " + "; ".join(problems), line.line_no))
    if rec["sampling"] != plan.sampling or not close(float(rec["sample_rate"]), plan.sample_rate):
        out.append(
            violation(
                "client-sampling",
                f"{who(rec)}: accounted {rec['sampling']} sampling at rate "
                f"{rec['sample_rate']!r}, but the scenario samples {plan.sampling} at "
                f"{plan.sample_rate!r} (clients_per_round / population for Poisson, 1 "
                "for fixed-size)",
                line.line_no,
            )
        )
    return out


def check_noise_split(line: LedgerLine, scenario: Scenario) -> list[Finding]:
    """The line's composed multiplier recomputed from the sum's and the count's noise.

    With adaptive clipping a release is the clipped sum (multiplier
    ``clip_sum_noise_multiplier``) and the unclipped count (noise std
    ``count_noise_std``, add/remove sensitivity ``count_sensitivity``); the accountant
    composes their joint multiplier, which must equal the line's ``noise_multiplier``.
    """
    from fedsim.strategies.dp_fedavg import joint_noise_multiplier

    rec, n = line.record, line.line_no
    z_sum = rec.get("clip_sum_noise_multiplier")
    if z_sum is None:
        if getattr(scenario.dp, "adaptive_clipping", False):
            return [
                warning(
                    "noise-split",
                    f"{who(rec)}: adaptive clipping, but the line does not record the "
                    "sum's multiplier and the count's noise std and sensitivity; the "
                    "composed noise_multiplier cannot be checked against the mechanism",
                    n,
                )
            ]
        return []
    try:
        joint = joint_noise_multiplier(
            float(z_sum), rec.get("count_noise_std"), rec.get("count_sensitivity")
        )
    except (TypeError, ValueError) as exc:
        return [violation("noise-split", f"{who(rec)}: unreadable noise split: {exc}", n)]
    if close(joint, float(rec["noise_multiplier"])):
        return []
    return [
        violation(
            "noise-split",
            f"{who(rec)}: composed noise_multiplier {rec['noise_multiplier']!r}, but the "
            f"sum's multiplier {z_sum!r} and the count's noise std "
            f"{rec.get('count_noise_std')!r} at sensitivity {rec.get('count_sensitivity')!r} "
            f"give a joint multiplier of {joint!r} (Andrew et al. 2021, Thm 1): the "
            "release is less private than accounted",
            n,
        )
    ]


def _check_user_clients(line: LedgerLine, scenario: Scenario) -> list[Finding]:
    rec, n = line.record, line.line_no
    out = []
    if int(rec["clients_sampled"]) > scenario.population:
        out.append(
            violation(
                "ledger-scenario",
                f"{who(rec)}: {rec['clients_sampled']} clients sampled, more than the "
                f"population {scenario.population}",
                n,
            )
        )
    clients = rec.get("clients")
    if clients is None:
        return out
    if len(clients) != int(rec["clients_sampled"]):
        out.append(
            violation(
                "ledger-scenario",
                f"{who(rec)}: clients_sampled = {rec['clients_sampled']} but the line "
                f"lists {len(clients)} client(s)",
                n,
            )
        )
    outside = sorted({int(c) for c in clients if int(c) >= scenario.population})
    if outside:
        out.append(
            violation(
                "ledger-scenario",
                f"{who(rec)}: client(s) {outside[:5]} outside the population "
                f"0..{scenario.population - 1}",
                n,
            )
        )
    return out
