"""Flower strategies by name, configured from a scenario.

The strategies are Flower's own (`flwr.serverapp.strategy`), unchanged: fedsim
only sets their sampling so that the strategy samples exactly the scenario's
cohort from the virtual clients the grid exposes.
"""

from __future__ import annotations

import inspect
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

from fedsim.config import Scenario, ScenarioError
from fedsim.strategies.dp_fedavg import AdaptiveClipping, DPFedAvg
from fedsim.strategies.fednova import FedNova
from fedsim.strategies.scaffold import Scaffold

#: Flower's update-aggregation strategies, by the name a scenario uses.
STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "qfedavg": QFedAvg,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "scaffold": Scaffold,
    "fednova": FedNova,
}

# Options fedsim fills from the scenario when the user does not set them.
_DEFAULTS = {
    "qfedavg": lambda sc: {"client_learning_rate": sc.train.lr},
    "scaffold": lambda sc: {"local_lr": sc.train.lr, "population": sc.population},
    "fednova": lambda sc: {"momentum": sc.train.momentum},
}
# Options that would break fedsim's wiring (reply keys, callables).
_FIXED = {"weighted_by_key", "arrayrecord_key", "configrecord_key", "train_loss_key"}

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


def strategy_options(scenario: Scenario) -> tuple[type[Strategy], dict[str, Any]]:
    """The strategy class and its validated options.

    Raises:
        ScenarioError: unknown strategy, an option it does not take, or a value of the
            wrong type (checked against the constructor's defaults).
    """
    name = scenario.strategy.name
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ScenarioError([f"strategy.name = {name!r}: allowed {sorted(STRATEGIES)}"])
    params = {k: v for k, v in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    hidden = _MANAGED | _FIXED | {"train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"}
    allowed = sorted(set(params) - hidden)
    options = {**_DEFAULTS.get(name, lambda sc: {})(scenario), **scenario.strategy.options}
    problems = []
    for key, value in scenario.strategy.options.items():
        if key not in params or key in hidden:
            problems.append(
                f"strategy.options.{key}: not an option of {cls.__name__}; allowed {allowed}"
            )
            continue
        default = params[key].default
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, int | float)
            and not isinstance(default, bool)
            and not isinstance(value, int | float)
        ):
            problems.append(
                f"strategy.options.{key} = {value!r}: expected a number like {default!r}"
            )
        elif isinstance(default, int | float) and not isinstance(default, bool) and value < 0:
            problems.append(f"strategy.options.{key} = {value!r}: must be >= 0")
    missing = [
        k
        for k, p in params.items()
        if p.default is inspect.Parameter.empty and k not in options and k not in hidden
    ]
    problems += [f"strategy.options.{k}: required by {cls.__name__}" for k in missing]
    if problems:
        raise ScenarioError(problems)
    return cls, options


def build_strategy(scenario: Scenario) -> Strategy:
    """The scenario's Flower strategy, its options validated against its signature.

    Raises:
        ScenarioError: unknown strategy, or an option it does not take.
    """
    cls, options = strategy_options(scenario)
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
        canaries=scenario.audit.canary_clients,
    )
