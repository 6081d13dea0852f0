"""The audit's result, :class:`AuditReport`, and its JSON form.

``AuditReport.to_json()`` returns strict JSON (no NaN/Infinity). Keys are stable;
new keys may be added, existing ones keep their meaning::

    schema            "fedsim-audit/1"
    run_dir           str
    exit_code         0 clean, 1 violations found
    scenario          {name, dp_mode, population, rounds, clients_per_round,
                       accountant, delta, target_epsilon, max_epsilon, noise_rng,
                       noise_rng_source}
    ledger            {lines, sample_lines, user_lines, failed_lines}
    sample_level      null | {accountant, delta, population, clients_seen,
                       epsilon: {min, median, max},
                       participations: {total, min, median, max},
                       worst_client: {client, epsilon, participations},
                       median_client: {client, epsilon, participations},
                       histogram: {edges, counts, infinite},
                       clients: [{client, epsilon, participations}, ...]}  # seen ones
    user_level        null | {accountant, delta, releases, epsilon,
                       epsilon_without_amplification, poisson_releases, fixed_releases,
                       per_client_epsilon: null | {min, median, max},
                       realised_sample_rate: null | {accounted, observed, releases,
                                                     z_score, band_sigmas, within_band}}
    guarantees        [{level, epsilon, delta, accountant, rule, rule_in_words}, ...]
    accountants       {requested, threshold,
                       rows: [{subject, level, client, epsilon: {name: value|null},
                               notes: {name: text}, max_relative_disagreement,
                               between: [low, high] | null, flagged}]}
    assumptions       {example_sampling, client_sampling, neighbouring_relation,
                       noise_rng, accountant, composition}
    violations        [{kind, line, message}]
    warnings          [{kind, line, message}]
    non_finite        {json_pointer: "inf" | "-inf" | "nan"}: every value written as
                       null because it was not finite (e.g. epsilon with no noise)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.audit.crosscheck import TIGHT_AGREEMENT, AccountantRow
from fedsim.audit.findings import Finding
from fedsim.audit.sample import SAMPLE_RULE, SAMPLE_RULE_SHORT, ClientEpsilon, SampleLevel
from fedsim.audit.stats import Spread
from fedsim.audit.user import USER_RULE, USER_RULE_SHORT, UserLevel
from fedsim.config import Scenario

SCHEMA = "fedsim-audit/1"
EXIT_CLEAN, EXIT_VIOLATIONS, EXIT_BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class LedgerCounts:
    """How many ledger lines of each kind the audit read."""

    lines: int
    sample_lines: int
    user_lines: int
    failed_lines: int
    #: Lines of killed attempts a resume ran again with fresh noise (still composed).
    discarded_lines: int = 0


@dataclass
class AuditReport:
    """Everything ``fedsim audit`` found about one run directory.

    Attributes:
        run_dir: The audited directory.
        scenario: Its scenario.
        ledger: Line counts.
        sample: Recomputed example-level accounting (None without sample lines and DP).
        user: Recomputed user-level accounting (None without user lines).
        accountants: Accountants of the cross-check, in order.
        rows: The cross-check, one row per history (worst / median client, population).
        assumptions: Topic -> the assumption in words.
        findings: Violations and warnings, in the order found.
        noise_rng: "seeded", "os-entropy", or None when no noise was added.
        noise_rng_source: Where ``noise_rng`` was read.
    """

    run_dir: Path
    scenario: Scenario
    ledger: LedgerCounts
    sample: SampleLevel | None
    user: UserLevel | None
    accountants: list[str]
    rows: list[AccountantRow]
    assumptions: dict[str, str]
    findings: list[Finding] = field(default_factory=list)
    noise_rng: str | None = None
    noise_rng_source: str | None = None

    @property
    def violations(self) -> list[str]:
        """One line per violation (``[kind] line N: message``); empty when clean."""
        return [str(f) for f in self.findings if f.severity == "violation"]

    @property
    def warnings(self) -> list[str]:
        """One line per warning."""
        return [str(f) for f in self.findings if f.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """0 when clean, 1 when any violation was found."""
        return EXIT_VIOLATIONS if self.violations else EXIT_CLEAN

    def guarantees(self) -> list[dict[str, Any]]:
        """The population guarantee of each level present, with its composition rule."""
        out = []
        if self.sample is not None:
            out.append(
                {
                    "level": "sample",
                    "epsilon": self.sample.guarantee,
                    "delta": self.sample.delta,
                    "accountant": self.sample.accountant,
                    "rule": SAMPLE_RULE_SHORT,
                    "rule_in_words": SAMPLE_RULE,
                }
            )
        if self.user is not None:
            rule, words = USER_RULE_SHORT, USER_RULE
            if self.user.epsilon_without_amplification is not None:
                # The ledger's own number assumed Poisson client sampling that did not
                # happen; the guarantee that holds accounts those releases with q = 1.
                rule += " (fixed-size releases with q = 1)"
                words += (
                    "; releases whose clients were sampled fixed-size are accounted with "
                    "q = 1 here, because the amplification the ledger assumed did not happen"
                )
            out.append(
                {
                    "level": "user",
                    "epsilon": self.user.guarantee,
                    "delta": self.user.delta,
                    "accountant": self.user.accountant,
                    "rule": rule,
                    "rule_in_words": words,
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """The report as one strict-JSON document (see the module docstring for keys)."""
        sc = self.scenario
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "run_dir": str(self.run_dir),
            "exit_code": self.exit_code,
            "scenario": {
                "name": sc.name,
                "dp_mode": sc.dp.mode,
                "population": sc.population,
                "rounds": sc.rounds,
                "clients_per_round": sc.clients_per_round,
                "accountant": sc.dp.accountant,
                "delta": sc.dp.delta,
                "target_epsilon": sc.dp.target_epsilon,
                "max_epsilon": getattr(sc.dp, "max_epsilon", None),
                "noise_rng": self.noise_rng,
                "noise_rng_source": self.noise_rng_source,
            },
            "ledger": {
                "lines": self.ledger.lines,
                "sample_lines": self.ledger.sample_lines,
                "user_lines": self.ledger.user_lines,
                "failed_lines": self.ledger.failed_lines,
            },
            "sample_level": _sample_json(self.sample),
            "user_level": _user_json(self.user),
            "guarantees": self.guarantees(),
            "accountants": {
                "requested": list(self.accountants),
                "tight_agreement": TIGHT_AGREEMENT,
                "rows": [_row_json(r) for r in self.rows],
            },
            "assumptions": dict(self.assumptions),
            "violations": [_finding_json(f) for f in self.findings if f.severity == "violation"],
            "warnings": [_finding_json(f) for f in self.findings if f.severity == "warning"],
        }
        clean, non_finite = strict_json(doc)
        clean["non_finite"] = non_finite
        return clean


def _spread_json(s: Spread) -> dict[str, float]:
    return {"min": s.min, "median": s.median, "max": s.max}


def _client_json(c: ClientEpsilon) -> dict[str, Any]:
    return {"client": c.client, "epsilon": c.epsilon, "participations": c.participations}


def _sample_json(s: SampleLevel | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "accountant": s.accountant,
        "delta": s.delta,
        "population": s.population,
        "clients_seen": len(s.clients),
        "epsilon": _spread_json(s.epsilon),
        "participations": {
            "total": s.total_participations,
            "min": int(s.participations.min),
            "median": s.participations.median,
            "max": int(s.participations.max),
        },
        "worst_client": _client_json(s.worst),
        "median_client": _client_json(s.median),
        "histogram": {
            "edges": list(s.histogram.edges),
            "counts": list(s.histogram.counts),
            "infinite": s.histogram.infinite,
        },
        "clients": [_client_json(c) for c in s.clients],
    }


def _user_json(u: UserLevel | None) -> dict[str, Any] | None:
    if u is None:
        return None
    rate = u.realised
    return {
        "accountant": u.accountant,
        "delta": u.delta,
        "releases": u.releases,
        "epsilon": u.epsilon,
        "epsilon_without_amplification": u.epsilon_without_amplification,
        "poisson_releases": u.poisson_releases,
        "fixed_releases": u.fixed_releases,
        "per_client_epsilon": None if u.per_client is None else _spread_json(u.per_client),
        "realised_sample_rate": None
        if rate is None
        else {
            "accounted": rate.accounted,
            "observed": rate.observed,
            "releases": rate.releases,
            "z_score": rate.z_score,
            "band_sigmas": rate.band_sigmas,
            "within_band": rate.within_band,
        },
    }


def _row_json(r: AccountantRow) -> dict[str, Any]:
    return {
        "subject": r.subject,
        "level": r.level,
        "client": r.client,
        "epsilon": dict(r.epsilon),
        "notes": dict(r.notes),
        "max_relative_disagreement": r.disagreement,
        "between": list(r.between) if r.between is not None else None,
        "tightest": r.tightest,
        "tightest_epsilon": r.tightest_epsilon,
        "looseness": dict(r.looseness),
        "problems": list(r.problems),
        "flagged": r.flagged,
    }


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"kind": f.kind, "line": f.line, "message": f.message}


def strict_json(value: Any, pointer: str = "") -> tuple[Any, dict[str, str]]:
    """Replace non-finite floats by None, recursively; report where (JSON pointers).

    Returns:
        ``(clean, non_finite)`` where ``non_finite`` maps each replaced value's JSON
        pointer (RFC 6901) to ``"inf"``, ``"-inf"`` or ``"nan"``.
    """
    found: dict[str, str] = {}

    def walk(v: Any, where: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            found[where] = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
            return None
        if isinstance(v, dict):
            return {k: walk(x, f"{where}/{_escape(str(k))}") for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x, f"{where}/{i}") for i, x in enumerate(v)]
        return v

    return walk(value, pointer), found


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
