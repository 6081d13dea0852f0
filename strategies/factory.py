"""Flower strategies by name or import path, configured from a scenario.

The strategies are Flower's own (`flwr.serverapp.strategy`), unchanged, fedsim's
(SCAFFOLD, FedNova) and the user's (any subclass of Flower's ``Strategy``, by
``@fedsim.register_strategy`` or ``"package.module:Class"``): all entries of
`fedsim.registry.STRATEGIES`. fedsim only sets their sampling so that the strategy
samples exactly the scenario's cohort from the virtual clients the grid exposes.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAvg, Strategy

from fedsim import registry
from fedsim.config import Scenario, ScenarioError
from fedsim.strategies.dp_fedavg import AdaptiveClipping, DPFedAvg, ReleaseAccountant

#: name -> strategy class: a read-only view of `fedsim.registry.STRATEGIES` (names match
#: in any case: "FedAdam" is "fedadam").
STRATEGIES: registry.RegistryView = registry.STRATEGIES.view()

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
_HIDDEN = _MANAGED | _FIXED | {"train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"}


def _scenario_value(scenario: Scenario, path: str) -> Any:
    node: Any = scenario
    for part in path.split("."):
        node = getattr(node, part)
    return node


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
        ScenarioError: unknown strategy, one that cannot be imported, an option it
            does not take, or a value of the wrong type (checked against the
            constructor's defaults).
    """
    name = scenario.strategy.name
    try:
        cls = registry.STRATEGIES.load(name)
    except registry.RegistryError as exc:
        raise ScenarioError([f"strategy.name = {name!r}: {exc}"]) from None
    params, open_options = registry.STRATEGIES.options(name)
    defaults = registry.STRATEGIES.info(name).get("defaults", {})
    filled = {k: _scenario_value(scenario, path) for k, path in defaults.items()}
    options = {**filled, **scenario.strategy.options}
    problems = [
        _option_problem(cls, key, value, params, open_options)
        for key, value in scenario.strategy.options.items()
    ]
    missing = [
        k
        for k, default in params.items()
        if default is registry.REQUIRED and k not in options and k not in _HIDDEN
    ]
    problems += [f"strategy.options.{k}: required by {cls.__name__}" for k in missing]
    problems = [p for p in problems if p]
    if problems:
        raise ScenarioError(problems)
    return cls, options


def _option_problem(
    cls: type, key: str, value: Any, params: dict[str, Any], open_options: bool
) -> str | None:
    """What is wrong with one strategy option, or None."""
    if key in _HIDDEN or (key not in params and not open_options):
        allowed = sorted(set(params) - _HIDDEN)
        return f"strategy.options.{key}: not an option of {cls.__name__}; allowed {allowed}"
    default = params.get(key, registry.REQUIRED)
    if default is registry.REQUIRED or default is None:
        return None  # nothing to compare the type with
    if isinstance(default, bool) != isinstance(value, bool) or (
        isinstance(default, int | float)
        and not isinstance(default, bool)
        and not isinstance(value, int | float)
    ):
        return f"strategy.options.{key} = {value!r}: expected a number like {default!r}"
    if isinstance(default, int | float) and not isinstance(default, bool) and value < 0:
        return f"strategy.options.{key} = {value!r}: must be >= 0"
    return None


def build_strategy(scenario: Scenario, accounting: ReleaseAccountant | None = None) -> Strategy:
    """The scenario's Flower strategy, its options validated against its signature.

    Flower's sampling arguments are passed where the constructor takes them (a
    user's Strategy that samples its own way need not). With dp.mode = "user" the
    strategy is wrapped in DP-FedAvg, which records its releases in `accounting`.

    Raises:
        ScenarioError: unknown strategy, or an option it does not take.
    """
    cls, options = strategy_options(scenario)
    params, open_options = registry.STRATEGIES.options(scenario.strategy.name)
    sampling = {k: v for k, v in sampling_kwargs(scenario).items() if k in params or open_options}
    strategy = cls(**sampling, **options)
    if scenario.dp.mode == "user":
        return wrap_user_dp(scenario, strategy, accounting)
    return strategy


def user_noise_multiplier(scenario: Scenario) -> float:
    """z of the DP-FedAvg releases: given, or the smallest meeting dp.target_epsilon
    over all scenario rounds (one release per round; the rule of
    `fedsim.privacy.plan.worst_case_noise`, the one DP-SGD clients follow)."""
    from fedsim.privacy.plan import worst_case_noise

    dp = scenario.dp
    return worst_case_noise(
        noise_multiplier=dp.noise_multiplier,
        target_epsilon=dp.target_epsilon,
        delta=dp.delta,
        sample_rate=user_sample_rate(scenario),
        steps_per_round=1,
        rounds=scenario.rounds,
        accountant=dp.accountant,
    )


def user_sample_rate(scenario: Scenario) -> float:
    """The accounted client sampling rate: q = m / N (Poisson), 1.0 (fixed: no amplification)."""
    if scenario.dp.client_sampling == "poisson":
        return scenario.clients_per_round / scenario.population
    return 1.0


def wrap_user_dp(
    scenario: Scenario, strategy: Strategy, accounting: ReleaseAccountant | None = None
) -> DPFedAvg:
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
        accounting=accounting,
    )
