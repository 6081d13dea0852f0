"""``audit_run``: read a run directory, recompute its accounting, check it, report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from fedsim.audit.accounting import EpsilonCache
from fedsim.audit.assumptions import build_assumptions, noise_rng
from fedsim.audit.crosscheck import AccountantRow, compare_accountants
from fedsim.audit.errors import AuditInputError
from fedsim.audit.findings import Finding
from fedsim.audit.inputs import (
    SAMPLE_LEVEL,
    USER_LEVEL,
    LedgerLine,
    RunInputs,
    check_accountants,
    default_accountants,
    load_run,
)
from fedsim.audit.report import AuditReport, LedgerCounts
from fedsim.audit.run_checks import (
    accountant_notes,
    check_budget,
    check_delta_size,
    check_disagreement,
    check_shards_known,
    check_summary,
)
from fedsim.audit.sample import SampleLevel, client_histories, sample_level
from fedsim.audit.sample_checks import check_sample_lines
from fedsim.audit.user import UserLevel, user_entries, user_level
from fedsim.audit.user_checks import check_user_lines
from fedsim.privacy import PrivacyError
from fedsim.privacy.records import DISCARDED, FAILED

T = TypeVar("T")


def audit_run(run_dir: Path | str, *, accountants: Sequence[str] | None = None) -> AuditReport:
    """Audit a run directory from its files alone (ledger, scenario, clients.json).

    Every epsilon is recomputed from the ledger's events (stored epsilons are only
    compared against), every event is checked against what the scenario planned for
    that client, and the assumptions behind the numbers are stated.

    Args:
        run_dir: A directory written by ``fedsim run``.
        accountants: Accountants for the side-by-side cross-check (names from
            ``fedsim.privacy.ACCOUNTANTS``). Default: the scenario's accountant, rdp,
            and prv (pld when named: it is the slowest). The per-client table and the
            guarantees always use the scenario's accountant.

    Returns:
        The report; ``report.violations`` is empty when the run is consistent.

    Raises:
        AuditInputError: unreadable input: missing directory or file, corrupt or
            truncated ledger line (``line_no`` set), bad scenario, unknown accountant,
            'pld' without dp-accounting, or a corrupt ``clients.json``.
    """
    requested = check_accountants(accountants) if accountants is not None else None
    inputs = load_run(run_dir)
    if requested is None:
        requested = default_accountants(inputs.scenario)
    return build_report(inputs, shard_sizes=inputs.shard_sizes, accountants=requested)


def build_report(
    inputs: RunInputs, *, shard_sizes: np.ndarray | None, accountants: Sequence[str]
) -> AuditReport:
    """The audit of already-loaded inputs (no file access; see :func:`audit_run`).

    Raises:
        AuditInputError: not even the fallback accountant (RDP) can compose the events.
    """
    sc = inputs.scenario
    cache = EpsilonCache()
    sample_lines = inputs.level(SAMPLE_LEVEL)
    user_lines = inputs.level(USER_LEVEL)
    delta, primary = sc.dp.delta, sc.dp.accountant

    findings: list[Finding] = []
    sample: SampleLevel | None = None
    if sample_lines or sc.dp.mode == "sample":
        sample = _recompute(
            "sample",
            primary,
            findings,
            lambda acc: sample_level(
                sample_lines, population=sc.population, accountant=acc, delta=delta, cache=cache
            ),
        )
    user: UserLevel | None = _recompute(
        "user",
        primary,
        findings,
        lambda acc: user_level(
            user_lines, population=sc.population, accountant=acc, delta=delta, cache=cache
        ),
    )

    rows = _cross_check(sample_lines, user_lines, sample, user, accountants, delta, cache)

    findings += check_shards_known(sc, sample_lines, shard_sizes)
    findings += check_sample_lines(sample_lines, sc, shard_sizes, cache)
    findings += check_user_lines(user_lines, sc, user, cache)
    findings += check_budget(sc, sample, user)
    findings += check_summary(inputs.summary, sc, sample, user)
    findings += check_delta_size(sc, shard_sizes, sample is not None, user is not None)
    findings += check_disagreement(rows)
    findings += accountant_notes(cache)

    has_noise = sc.dp.mode != "off" or user is not None
    rng, rng_source = noise_rng(sc, inputs.summary) if has_noise else (None, None)
    return AuditReport(
        run_dir=inputs.run_dir,
        scenario=sc,
        ledger=_ledger_counts(inputs, sample_lines, user_lines),
        sample=sample,
        user=user,
        accountants=list(accountants),
        rows=rows,
        assumptions=build_assumptions(sc, inputs.summary, shard_sizes, sample, user),
        findings=findings,
        noise_rng=rng,
        noise_rng_source=rng_source,
    )


#: Accountant that composes any history, used when the scenario's cannot.
FALLBACK_ACCOUNTANT = "rdp"


def _recompute(
    level: str, accountant: str, findings: list[Finding], compute: Callable[[str], T]
) -> T:
    """Run ``compute(accountant)``; fall back to RDP (with a violation) if it refuses.

    Only 'gdp' refuses histories (several (z, q) pairs), and fedsim's own ledger
    refuses to record such a history with 'gdp': a ledger that holds one was not
    written as the scenario says, which is a violation, not unreadable input.
    """
    try:
        return compute(accountant)
    except PrivacyError as exc:
        if accountant == FALLBACK_ACCOUNTANT:
            raise AuditInputError(
                f"cannot recompute the {level}-level epsilons with {accountant!r}: {exc}"
            ) from exc
        findings.append(
            Finding(
                kind="accounting-mismatch",
                message=(
                    f"{level} level: the scenario's accountant {accountant!r} cannot compose "
                    f"the ledger's events ({exc}); {level}-level figures below use "
                    f"{FALLBACK_ACCOUNTANT!r} instead"
                ),
            )
        )
        return compute(FALLBACK_ACCOUNTANT)


def _cross_check(
    sample_lines: Sequence[LedgerLine],
    user_lines: Sequence[LedgerLine],
    sample: SampleLevel | None,
    user: UserLevel | None,
    accountants: Sequence[str],
    delta: float,
    cache: EpsilonCache,
) -> list[AccountantRow]:
    """Worst and median client (sample level) and the population (user level)."""
    rows = []
    if sample is not None:
        histories = client_histories(sample_lines)
        for subject, who in (("worst client", sample.worst), ("median client", sample.median)):
            rows.append(
                compare_accountants(
                    histories.get(who.client, []),
                    subject=f"{subject} ({who.client})",
                    level="sample",
                    client=who.client,
                    accountants=accountants,
                    delta=delta,
                    cache=cache,
                )
            )
    if user is not None:
        rows.append(
            compare_accountants(
                user_entries(user_lines),
                subject="population (user level)",
                level="user",
                client=None,
                accountants=accountants,
                delta=delta,
                cache=cache,
            )
        )
    return rows


def _ledger_counts(
    inputs: RunInputs, sample_lines: Sequence[LedgerLine], user_lines: Sequence[LedgerLine]
) -> LedgerCounts:
    """How many ledger lines there are, per level and per failed/discarded status."""
    return LedgerCounts(
        lines=len(inputs.lines),
        sample_lines=len(sample_lines),
        user_lines=len(user_lines),
        failed_lines=sum(1 for line in inputs.lines if line.record["status"] == FAILED),
        discarded_lines=sum(1 for line in inputs.lines if line.record["status"] == DISCARDED),
    )
