"""Cross-component checks of a scenario: model, strategy and data, before anything starts.

`fedsim.config` holds the schema (a leaf: no torch, Flower or Ray at import); the checks
here build the model, resolve the strategy's options and size the data set, importing
those libraries inside the functions that need them. `Scenario.cross_check` runs them,
each only when the sections it reads were valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fedsim.config import OWN_PARTITIONS, Scenario, ScenarioError, did_you_mean

# Input shape and class count of the data sets whose shape is fixed by their format.
_IO = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "femnist": ((1, 28, 28), 62),
    "mnist1d": ((1, 40), 10),
}


def model_io(scenario: Scenario) -> tuple[tuple[int, ...], int] | None:
    """Input shape and class count of the scenario's data, without loading it.

    None for a hub data set, whose shape is known only once it is loaded.
    """
    if scenario.data.name in _IO:
        return _IO[scenario.data.name]
    if scenario.data.name == "hub":
        return None
    if scenario.data.name == "shakespeare":
        from fedsim.data.shakespeare import VOCAB

        return (scenario.data.shakespeare.seq_len,), len(VOCAB)
    syn = scenario.data.synthetic
    return (syn.dim,), syn.num_classes


def check_model(scenario: Scenario) -> list[str]:
    """Build the model once on the CPU (and check Opacus can privatise it, under DP).

    A bad option or a layer Opacus cannot handle is reported now, not inside a Ray
    worker minutes later.
    """
    from fedsim.models import MODELS, ModelError, build_model, check_private

    name = scenario.model.name
    if name not in MODELS:
        return [
            f"model.name = {name!r}: unknown model; allowed: {', '.join(sorted(MODELS))}"
            f"{did_you_mean(name, MODELS)}"
        ]
    io = model_io(scenario)
    if io is None:
        return []
    shape, classes = io
    try:
        model = build_model(
            name, input_shape=shape, num_classes=classes, **scenario.model.options()
        )
        if scenario.dp.mode != "off":
            check_private(model)
    except ModelError as exc:
        return [f"model: {exc}"]
    return []


def check_strategy(scenario: Scenario) -> list[str]:
    """The strategy's options against its constructor, and its fit with training and DP."""
    from fedsim.strategies.factory import strategy_options

    try:
        strategy_options(scenario)
    except ScenarioError as exc:
        return exc.problems
    name = scenario.strategy.name
    if name in ("scaffold", "fednova") and scenario.train.optimizer != "sgd":
        return [
            f"strategy.name = {name!r}: its update rule assumes local SGD; "
            "set train.optimizer = 'sgd'"
        ]
    if scenario.dp.mode == "user" and name not in ("fedavg", "fedprox"):
        return [
            f"strategy.name = {name!r}: user-level DP-FedAvg replaces the "
            "aggregation; allowed with dp.mode = 'user': 'fedavg', 'fedprox'"
        ]
    return []


# The sklearn digits set: 1,797 images (see fedsim.data.digits).
DIGITS_IMAGES = 1797
# Training images of the data sets whose split is fixed by their format.
_FIXED_TRAIN = {"cifar10": 50_000}


def train_size(scenario: Scenario) -> int | None:
    """Training examples the scenario's data set will have, without loading it.

    None where only loading tells (files of unknown length, natural groups, hub).
    tests/test_config_limits.py checks each number against the real loader.
    """
    data = scenario.data
    if data.name == "digits":
        # sklearn's train_test_split holds out ceil(test_fraction * n).
        return DIGITS_IMAGES - math.ceil(data.test_fraction * DIGITS_IMAGES)
    if data.name == "mnist1d":
        total = data.mnist1d_samples // 10 * 10  # the generator makes n // 10 per class
        return int(total * (1.0 - data.test_fraction))
    return _FIXED_TRAIN.get(data.name)


def client_capacity(scenario: Scenario, n: int) -> tuple[int, str]:
    """Most clients `n` training examples can be partitioned over, and the rule that says so.

    The rules of fedsim.data.partition (iid and dirichlet give each client at least
    min_partition_size examples) and flwr-datasets (at least one example per client);
    tests/test_config_limits.py checks them against the partitioners.
    """
    data = scenario.data
    own = data.partition in OWN_PARTITIONS and data.partition_backend == "fedsim"
    if own and data.partition in ("iid", "dirichlet"):
        min_size = data.min_partition_size
    elif data.partition == "dirichlet":  # flwr-datasets: shards.py passes the same default
        option = data.partition_options.get("min_partition_size", data.min_partition_size)
        min_size = option if isinstance(option, int) else data.min_partition_size
    else:
        min_size = 1
    if min_size <= 1:
        return n, "at least one example per client"
    return n // min_size, f"at least min_partition_size = {min_size} examples per client"


def check_population(scenario: Scenario) -> list[str]:
    """The population against what the data set's training split can give every client."""
    n = train_size(scenario)
    if n is None or scenario.data.partition == "natural":
        return []
    most, rule = client_capacity(scenario, n)
    if scenario.population <= most:
        return []
    return [
        f"population = {scenario.population}: {scenario.data.name} has {n} training examples "
        f"(data.test_fraction = {scenario.data.test_fraction:g}); {scenario.data.partition} "
        f"partitioning with {rule} allows population <= {most}"
    ]


# (top-level keys a check reads, the check), run by `Scenario.cross_check`.
COMPONENT_CHECKS: tuple[tuple[frozenset[str], Callable[[Scenario], list[str]]], ...] = (
    (frozenset({"model", "data", "dp"}), check_model),
    (
        frozenset({"strategy", "train", "dp", "sampling", "population", "evaluation"}),
        check_strategy,
    ),
    (frozenset({"data", "population"}), check_population),
)
