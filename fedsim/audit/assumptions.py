"""The assumptions every epsilon in an audit rests on, stated in words.

An epsilon without its assumptions is a number without a meaning: which records
are neighbours, how batches and clients were sampled, where the noise came from,
which accountant and delta, and how participations compose. Topics (stable keys
of ``--json``'s ``assumptions``): example_sampling, client_sampling,
neighbouring_relation, noise_rng, sampling_rng, accountant, composition,
trust_model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.audit.sample import SAMPLE_RULE_SHORT, SampleLevel
from fedsim.audit.user import USER_RULE, UserLevel
from fedsim.config import Scenario

ACCOUNTANT_NAMES = {
    "rdp": "Opacus RDPAccountant (Renyi DP, converted with Balle et al. 2020; an upper bound)",
    "prv": "Opacus PRVAccountant (Gopi et al. 2021; numerically tight upper bound)",
    "gdp": "Opacus GaussianAccountant (CLT approximation; can under-estimate)",
    "pld": "dp-accounting PLD accountant (privacy loss distributions; tight)",
}


def noise_rng(scenario: Scenario, summary: dict[str, Any] | None) -> tuple[str, str]:
    """The noise source (``"seeded"`` / ``"os-entropy"``) and where that was read."""
    if summary is not None and summary.get("noise_rng") in ("seeded", "os-entropy"):
        return str(summary["noise_rng"]), "summary.json"
    source = "os-entropy" if scenario.dp.secure_rng else "seeded"
    return source, "scenario dp.secure_rng"


def sampling_rng(scenario: Scenario, summary: dict[str, Any] | None) -> tuple[str, str]:
    """Where batch masks and Poisson cohorts came from (``"seeded"`` / ``"os-entropy"``).

    A summary.json without ``sampling_rng`` was written before fedsim drew the sampling
    from OS entropy: its sampling was seeded whatever dp.secure_rng says.
    """
    if summary is not None:
        value = summary.get("sampling_rng")
        if value in ("seeded", "os-entropy"):
            return str(value), "summary.json"
        return "seeded", "summary.json (no sampling_rng: a run whose sampling was seeded)"
    return ("os-entropy" if scenario.dp.secure_rng else "seeded"), "scenario dp.secure_rng"


#: The trust boundary the epsilons hold under (README, "Privacy model").
TRUST_MODEL = (
    "the run directory is the curator's, not the public's. The epsilons cover what "
    "the mechanism releases: the model after each round (and, with adaptive clipping, "
    "the noised unclipped fraction in each user-level ledger line). The rest of the "
    "directory is curator-side and unprotected: the scenario seed, per-client train "
    "losses (aggregated into metrics.jsonl unnoised), the sampled client ids in the "
    "ledger, per-client ledger lines and the canary plan. Publish the model, not the "
    "run directory."
)


def build_assumptions(
    scenario: Scenario,
    summary: dict[str, Any] | None,
    shard_sizes: np.ndarray | None,
    sample: SampleLevel | None,
    user: UserLevel | None,
) -> dict[str, str]:
    """One sentence or two per topic, with the run's own numbers filled in."""
    dp = scenario.dp
    out: dict[str, str] = {}
    out["example_sampling"] = _example_sampling(scenario, shard_sizes, sample)
    out["client_sampling"] = _client_sampling(scenario, user)
    relation = []
    if sample is not None:
        relation.append(
            "sample level: add/remove one training example of one client (Opacus' adjacency)"
        )
    if user is not None:
        clip = (
            f"adaptive clip norm starting at {dp.max_grad_norm:g}; the noisy unclipped "
            "count is part of each release and the ledger's z is the joint noise "
            "multiplier of sum and count, Andrew et al. 2021"
            if getattr(dp, "adaptive_clipping", False)
            else f"clip norm {dp.max_grad_norm:g}"
        )
        relation.append(
            "user level: add/remove all the data of one client (its whole update clipped, "
            f"{clip}; equal weights in the sum)"
        )
    out["neighbouring_relation"] = (
        "; ".join(relation) if relation else "none: the run made no DP release"
    )
    out["noise_rng"] = _noise_text(scenario, summary, user is not None)
    out["sampling_rng"] = _sampling_text(scenario, summary, sample, user)
    names = ACCOUNTANT_NAMES.get(dp.accountant, dp.accountant)
    out["accountant"] = (
        f"{dp.accountant}: {names}, delta = {dp.delta:g}; add/remove adjacency. "
        "Other accountants are shown for comparison only."
    )
    rules = []
    if sample is not None:
        rules.append(
            "sample level: within a client, sequential composition of every DP-SGD step of "
            "every participation (failed ones included: the steps taken before failing); "
            f"across clients, {SAMPLE_RULE_SHORT}"
        )
    if user is not None:
        per_client = (
            "with Poisson sampling every release covers every client, so each client's "
            "user-level epsilon is the population's"
            if user.poisson_releases
            else "with fixed-size sampling (no amplification, q = 1) a client's user-level "
            "epsilon composes only the releases it took part in"
        )
        rules.append(f"user level: {USER_RULE}; {per_client}")
    out["composition"] = "; ".join(rules) if rules else "nothing to compose"
    out["trust_model"] = TRUST_MODEL
    return out


def _noise_text(scenario: Scenario, summary: dict[str, Any] | None, has_user: bool) -> str:
    source, where = noise_rng(scenario, summary)
    if scenario.dp.mode == "off" and not has_user:
        return "no noise: dp.mode = 'off'"
    if source == "seeded":
        return (
            f"noise: seeded ({where}): generators seeded from the scenario seed "
            f"({scenario.seed}) and the round (and client, for DP-SGD). Runs are "
            "reproducible, but anyone who knows the seed can subtract the noise: the "
            "epsilons describe the mechanism, not a guarantee claimed for this run. Set "
            "dp.secure_rng = true for that."
        )
    return (
        f"noise: secret (OS entropy; {where}): generators seeded with fresh OS entropy for "
        "every participation / release (torch's and numpy's generators, not a CSPRNG: "
        "torchcsprng is not used); DP-SGD also runs Opacus secure_mode's floating-point "
        "mitigation."
    )


def _sampling_text(
    scenario: Scenario,
    summary: dict[str, Any] | None,
    sample: SampleLevel | None,
    user: UserLevel | None,
) -> str:
    if sample is None and user is None:
        return "not applicable: no DP release"
    what = []
    if sample is not None:
        what.append("DP-SGD batch masks")
    if user is not None and user.poisson_releases:
        what.append("Poisson client cohorts")
    drawn = " and ".join(what) or "sampling"
    source, where = sampling_rng(scenario, summary)
    if source == "seeded":
        return (
            f"sampling: seeded (reproducible, no secrecy; {where}): {drawn} follow from the "
            f"scenario seed ({scenario.seed}), so whoever holds the run directory knows who "
            "was sampled and amplification by subsampling does not hold against them"
        )
    return (
        f"sampling: secret (OS entropy; {where}): {drawn} drawn from generators seeded with "
        "fresh OS entropy, unknown to whoever holds the seed; the sampled client ids in "
        "the ledger are curator-side records (see the trust model)"
    )


def _example_sampling(
    scenario: Scenario, shard_sizes: np.ndarray | None, sample: SampleLevel | None
) -> str:
    if sample is None:
        return "not applicable: no sample-level (DP-SGD) lines"
    text = (
        "Poisson: in each local step every example of client c joins the batch "
        "independently with probability q_c = batch_size / shard_size_c "
        f"(batch_size = {scenario.train.batch_size})"
    )
    if shard_sizes is not None and len(shard_sizes):
        b = scenario.train.batch_size
        rates = np.minimum(1.0, b / np.maximum(shard_sizes, 1))
        text += (
            f"; shard sizes {int(shard_sizes.min())}..{int(shard_sizes.max())}, "
            f"so q_c in {float(rates.min()):.4g}..{float(rates.max()):.4g}"
        )
    return text


def _client_sampling(scenario: Scenario, user: UserLevel | None) -> str:
    parts = []
    if scenario.dp.mode != "user":
        parts.append(
            f"{scenario.clients_per_round} of {scenario.population} clients per round, "
            "fixed-size (Flower strategy); sample-level epsilons claim no amplification "
            "from client sampling"
        )
    if user is not None:
        q = scenario.clients_per_round / scenario.population
        parts.append(
            f"user level: {user.poisson_releases} release(s) with Poisson client sampling "
            f"(each client joins independently with q = {scenario.clients_per_round}/"
            f"{scenario.population} = {q:.4g}, done by fedsim's DP-FedAvg; amplification "
            f"accounted), {user.fixed_releases} with fixed-size cohorts (accounted with "
            "q = 1, no amplification)"
        )
    return "; ".join(parts)
