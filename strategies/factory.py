"""Flower strategies by name, configured from a scenario.

The strategies are Flower's own (`flwr.serverapp.strategy`), unchanged: fedsim
only sets their sampling so that the strategy samples exactly the scenario's
cohort from the virtual clients the grid exposes.
"""

from __future__ import annotations

import inspect
from typing import Any

from flwr.serverapp.strategy import FedAvg, Strategy

from fedsim.config import Scenario, ScenarioError
from fedsim.strategies.dp_fedavg import AdaptiveClipping, DPFedAvg

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg}

# Set by fedsim from the scenario's sampling and evaluation sections.
_MANAGED = {
    "fraction_train",
    "fraction_evaluate",
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_nodes",
}


def sampling_kwargs(scenario: Scenario) -> dict[str, Any]:
    """Flower sampling arguments giving exactly `clients_per_round` per round.

    Flower samples int(n * fraction) nodes, at least min_*_nodes; setting both makes
    the cohort size exact despite float rounding.
    """
    m = scenario.clients_per_round
    frac_eval = scenario.evaluation.federated_fraction
    return {
        "fraction_train": m / scenario.population,
        "min_train_nodes": m,
        "min_available_nodes": m,
        "fraction_evaluate": frac_eval,
        "min_evaluate_nodes": 1 if frac_eval > 0 else 0,
    }


def build_strategy(scenario: Scenario) -> Strategy:
    """The scenario's Flower strategy, its options validated against its signature.

    Raises:
        ScenarioError: unknown strategy, or an option it does not take.
    """
    name = scenario.strategy.name
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ScenarioError([f"strategy.name = {name!r}: allowed {sorted(STRATEGIES)}"])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    options = dict(scenario.strategy.options)
    bad = sorted(k for k in options if k not in accepted or k in _MANAGED)
    if bad:
        allowed = sorted(
            accepted - _MANAGED - {"train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"}
        )
        raise ScenarioError(
            [
                f"strategy.options.{k}: not an option of {cls.__name__}; allowed {allowed}"
                for k in bad
            ]
        )
    strategy = cls(**sampling_kwargs(scenario), **options)
    if scenario.dp.mode == "user":
        return wrap_user_dp(scenario, strategy)
    return strategy


def user_noise_multiplier(scenario: Scenario) -> float:
    """z of the DP-FedAvg releases: given, or the smallest meeting dp.target_epsilon."""
    dp = scenario.dp
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    from fedsim.privacy import noise_multiplier_for

    q = user_sample_rate(scenario)
    return noise_multiplier_for(
        target_epsilon=float(dp.target_epsilon or 0.0),
        delta=dp.delta,
        sample_rate=q,
        steps=scenario.rounds,
        accountant=dp.accountant,
    )


def user_sample_rate(scenario: Scenario) -> float:
    """The accounted client sampling rate: q = m / N (Poisson), 1.0 (fixed: no amplification)."""
    if scenario.dp.client_sampling == "poisson":
        return scenario.clients_per_round / scenario.population
    return 1.0


def wrap_user_dp(scenario: Scenario, strategy: Strategy) -> DPFedAvg:
    """Wrap a FedAvg-family strategy in user-level DP-FedAvg."""
    if not isinstance(strategy, FedAvg):
        raise ScenarioError(
            [f"dp.mode = 'user' needs a FedAvg-family strategy, got {type(strategy).__name__}"]
        )
    dp = scenario.dp
    adaptive = (
        AdaptiveClipping(
            target_quantile=dp.target_unclipped_quantile,
            learning_rate=dp.clip_learning_rate,
            count_stddev=dp.clip_count_stddev,
        )
        if dp.adaptive_clipping
        else None
    )
    return DPFedAvg(
        strategy,
        population=scenario.population,
        noise_multiplier=user_noise_multiplier(scenario),
        clip_norm=dp.max_grad_norm,
        sampling=dp.client_sampling,
        clients_per_round=scenario.clients_per_round,
        seed=scenario.seed,
        secure_rng=dp.secure_rng,
        adaptive=adaptive,
    )
