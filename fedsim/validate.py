"""Cross-component checks of a scenario: model, strategy and data, before anything starts.

`fedsim.config` holds the schema (a leaf: no torch, Flower or Ray at import); the checks
here build the model, resolve the strategy's options and size the data set, importing
those libraries inside the functions that need them. `Scenario.cross_check` runs them,
each only when the sections it reads were valid.

A built-in model with its default options on a built-in data set, and a built-in
strategy without options, are judged from the registry's facts instead (`model_is_known`,
`strategy_is_known`): tests/test_validate.py builds every such case, so the facts hold,
and `fedsim check` of such a scenario imports neither torch, Opacus nor Flower. Anything
else (options, user components) is built, as a run would.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fedsim import registry
from fedsim.config import OWN_PARTITIONS, Scenario, ScenarioError
from fedsim.registry import RegistryError


def model_io(scenario: Scenario) -> tuple[tuple[int, ...], int] | None:
    """Input shape and class count of the scenario's data, without loading it.

    None where only loading tells: a hub data set, or a user loader registered
    without input_shape and num_classes.
    """
    name = scenario.data.name
    info = registry.DATASETS.info(name)
    if info.get("input_shape") is not None and info.get("num_classes") is not None:
        return tuple(info["input_shape"]), int(info["num_classes"])
    if name == "shakespeare":  # seq_len characters of a fixed vocabulary
        return (scenario.data.shakespeare.seq_len,), int(info["num_classes"])
    if name == "synthetic":
        syn = scenario.data.synthetic
        return (syn.dim,), syn.num_classes
    return None


def _loads(reg: registry.Registry, name: str) -> bool:
    """Whether the component behind `name` imports; a user one that does not is left
    to `check_imports` (a run-start check: a finished run stays readable without it)."""
    try:
        reg.load(name)
    except RegistryError:
        return False
    return True


def model_is_known(scenario: Scenario) -> bool:
    """Whether the registry's facts alone show that the scenario's model builds.

    True for a built-in model with its default options, on a built-in data set whose
    examples have dimensions the model takes (registry info "input_ndim"), and, under
    DP, one Opacus' validator accepts (info "opacus"). Building it could only succeed
    then (tests/test_validate.py builds each pairing); in every other case `check_model`
    builds the model, so the errors a user sees come from the builder itself.
    """
    name = scenario.model.name
    if not registry.MODELS.is_builtin(name) or scenario.model.options():
        return False
    if not registry.DATASETS.is_builtin(scenario.data.name):
        return False  # a user loader's shape may be anything the tests never built
    io = model_io(scenario)
    info = registry.MODELS.info(name)
    if io is None or info.get("input_ndim") not in (None, len(io[0])):
        return False
    return scenario.dp.mode == "off" or bool(info.get("opacus"))


def check_model(scenario: Scenario) -> list[str]:
    """Build the model once on the CPU (and check Opacus can privatise it, under DP).

    A bad option or a layer Opacus cannot handle is reported now, not inside a Ray
    worker minutes later. A model `model_is_known` vouches for is not built.
    """
    if model_is_known(scenario):
        return []
    from fedsim.models import ModelError, build_model, check_options, check_private

    name = scenario.model.name
    if not _loads(registry.MODELS, name):
        return []
    io = model_io(scenario)
    try:
        if io is None:  # the data's shape is known once loaded: check the option names
            check_options(name, scenario.model.options())
            return []
        shape, classes = io
        model = build_model(
            name, input_shape=shape, num_classes=classes, **scenario.model.options()
        )
        if scenario.dp.mode != "off":
            check_private(model)
    except ModelError as exc:
        return [f"model: {exc}"]
    except Exception as exc:  # noqa: BLE001 - a user builder's own error, reported here
        from fedsim.failures import short_reason

        return [f"model.name = {name!r}: building it raised {short_reason(exc)}"]
    return []


def strategy_is_known(scenario: Scenario) -> bool:
    """Whether the strategy's constructor has nothing to refuse: a built-in without options.

    Its options can then only lack a required one, and every built-in takes its
    required options from the registry's "defaults" (tests/test_validate.py resolves
    each built-in so), so its constructor is not imported (Flower: seconds).
    """
    return registry.STRATEGIES.is_builtin(scenario.strategy.name) and not scenario.strategy.options


def check_strategy(scenario: Scenario) -> list[str]:
    """The strategy's options against its constructor, and its fit with training and DP."""
    if not strategy_is_known(scenario):
        from fedsim.strategies.factory import strategy_options

        if not _loads(registry.STRATEGIES, scenario.strategy.name):
            return []
        try:
            strategy_options(scenario)
        except ScenarioError as exc:
            return exc.problems
    name = scenario.strategy.name
    info = registry.STRATEGIES.info(name)
    if info.get("local_sgd") and scenario.train.optimizer != "sgd":
        return [
            f"strategy.name = {name!r}: its update rule assumes local SGD; "
            "set train.optimizer = 'sgd'"
        ]
    if scenario.dp.mode == "user" and not info.get("user_dp"):
        allowed = [e.name for e in registry.STRATEGIES.entries() if e.info.get("user_dp")]
        return [
            f"strategy.name = {name!r}: user-level DP-FedAvg replaces the "
            f"aggregation; allowed with dp.mode = 'user': {', '.join(map(repr, allowed))}"
        ]
    return []


# The sklearn digits set: 1,797 images (see fedsim.data.digits).
DIGITS_IMAGES: int = registry.DATASETS.info("digits")["examples"]


def train_size(scenario: Scenario) -> int | None:
    """Training examples the scenario's data set will have, without loading it.

    None where only loading tells (files of unknown length, natural groups, hub,
    user loaders). tests/test_config_limits.py checks each number against the real loader.
    """
    data = scenario.data
    if data.name == "digits":
        # sklearn's train_test_split holds out ceil(test_fraction * n).
        return DIGITS_IMAGES - math.ceil(data.test_fraction * DIGITS_IMAGES)
    if data.name == "mnist1d":
        total = data.mnist1d_samples // 10 * 10  # the generator makes n // 10 per class
        return int(total * (1.0 - data.test_fraction))
    return registry.DATASETS.info(data.name).get("train_examples")


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
#: Checks that may import torch/opacus (build the model) or Flower (strategy signatures):
#: those `model_is_known` and `strategy_is_known` do not vouch for. They run only once
#: every other check passes, so a scenario with a plain mistake is refused in a fraction
#: of a second instead of after seconds of imports.
HEAVY_CHECKS: frozenset[Callable[[Scenario], list[str]]] = frozenset({check_model, check_strategy})


# ---------------------------------------------------------------------- this machine

GIB = 2**30
# What one process costs before any data: Python with torch, Flower and Opacus imported
# (measured: ~430 MiB unique set size on Linux x86-64, torch 2.13 CPU).
PROCESS_BASE_BYTES = 400 * 2**20
# Images are read as uint8 and converted to float32: the uint8 copy (a quarter of the
# float32 bytes) is alive at the peak of loading.
_IMAGE_LOAD_PEAK = 1.25
# fedsim.data.synthetic: device sizes int(lognormal(4, 2)) + min_samples, capped.
_SYNTHETIC_CAP = 1000


def _synthetic_mean_samples(min_samples: int) -> float:
    """Expected samples per synthetic device (the capped power law of the generator)."""
    import numpy as np
    from scipy.special import ndtri

    z = ndtri((np.arange(20_000) + 0.5) / 20_000)  # quantiles of N(0, 1)
    sizes = np.minimum(np.floor(np.exp(4.0 + 2.0 * z)) + min_samples, _SYNTHETIC_CAP)
    return float(sizes.mean())


def data_bytes(scenario: Scenario) -> tuple[int, str | None] | None:
    """Peak bytes one process needs to load the scenario's data, and the field that sets it.

    The field (e.g. "population" for synthetic data) is None when the data set has a
    fixed size; the estimate is None where only loading tells (shakespeare, femnist, hub).
    """
    data = scenario.data
    if data.name == "synthetic":
        syn, clients = data.synthetic, scenario.population
        samples = clients * _synthetic_mean_samples(syn.min_samples)
        # Per device: v (float64 and a float32 copy), W and b (float64); per sample: the
        # noise, the features and the train/test copies (float32), and five int64 arrays.
        per_device = syn.dim * 12 + syn.dim * syn.num_classes * 8 + syn.num_classes * 8
        per_sample = syn.dim * 4 * 3 + 8 * 5
        return int(clients * per_device + samples * per_sample), "population"
    io = model_io(scenario)
    total = registry.DATASETS.info(data.name).get("examples")
    if io is None or (total is None and data.name != "mnist1d"):
        return None
    features = math.prod(io[0]) * 4 + 8  # float32 features and an int64 label
    if data.name == "mnist1d":
        # The generator works in float64 and keeps its own copy: about three times ours.
        return int(data.mnist1d_samples * features * 3), "data.mnist1d_samples"
    peak = _IMAGE_LOAD_PEAK if data.name != "digits" else 1.0
    return int(total * features * peak), None


def check_memory(scenario: Scenario, available: int | None = None) -> list[str]:
    """The data's memory in the server and every local worker against what is available.

    Each process loads the data set once (fedsim.data.load_dataset); with a Ray cluster
    (backend.ray_address) the workers run elsewhere and only the server is counted.

    Args:
        available: bytes free on this machine; default psutil's available memory.
    """
    estimate = data_bytes(scenario)
    if estimate is None:
        return []
    per_data, field = estimate
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    workers = 0 if scenario.backend.ray_address else scenario.backend.workers
    processes = 1 + workers
    total = processes * (PROCESS_BASE_BYTES + per_data)
    if total <= available:
        return []
    who = "the server" + (f" and {workers} backend.workers" if workers else "")
    head = (
        f"{scenario.data.name} data takes about {per_data / GIB:.2f} GiB in each of "
        f"{processes} processes ({who}; plus {PROCESS_BASE_BYTES / GIB:.1f} GiB of Python, "
        f"torch and Flower each) = {total / GIB:.1f} GiB, more than the "
        f"{available / GIB:.1f} GiB available on this machine"
    )
    room = available / processes - PROCESS_BASE_BYTES
    if field is not None:
        value = _field_value(scenario, field)
        allowed = max(0, int(value * room / per_data)) if room > 0 else 0
        return [f"{field} = {value}: {head}; allowed {field} <= {allowed} with these workers"]
    fit = int(available // (PROCESS_BASE_BYTES + per_data)) - 1
    allowed = f"allowed backend.workers <= {fit}" if fit >= 1 else "not even one worker fits"
    return [f"backend.workers = {scenario.backend.workers}: {head}; {allowed}"]


def _field_value(scenario: Scenario, field: str) -> int:
    node: object = scenario
    for part in field.split("."):
        node = getattr(node, part)
    return int(node)  # type: ignore[call-overload]


def check_data_files(scenario: Scenario) -> list[str]:
    """data.root holds the files of a file-based data set (nothing is read yet)."""
    data = scenario.data
    if not data.root:
        # Nothing to locate: fedsim.data is not imported (its package imports torch).
        return []
    from fedsim.data import DataError

    try:
        if data.name in ("mnist", "fashion_mnist"):
            from fedsim.data.idx import locate_idx_files

            locate_idx_files(data.name, data.root)
        elif data.name == "cifar10":
            from fedsim.data.cifar import locate_cifar10

            locate_cifar10(data.root)
        elif data.name == "femnist":
            from fedsim.data.femnist import locate_femnist

            locate_femnist(data.root)
        elif data.name == "hub":
            from pathlib import Path

            if not Path(data.root).expanduser().exists():
                raise DataError(f"hub: root {data.root!r} does not exist")
    except DataError as exc:
        return [f"data.root = {data.root!r}: {exc}"]
    return []


def check_noise(scenario: Scenario) -> list[str]:
    """Zero noise (or -0.0) in a DP mode is no privacy (epsilon = inf): not started as DP.

    A run-start check, not a schema rule: a finished run with zero noise must still load,
    so that `fedsim audit` can report its infinite epsilon.
    """
    z = scenario.dp.noise_multiplier
    if scenario.dp.mode == "off" or z is None or z > 0.0:
        return []
    return [
        f"dp.noise_multiplier = {z!r}: dp.mode = {scenario.dp.mode!r} needs noise > 0 (zero "
        'noise gives epsilon = inf); for a run without DP set dp.mode = "off"'
    ]


def check_imports(scenario: Scenario) -> list[str]:
    """Every user component (an import path) imports here and is of the right kind.

    The Ray workers import them by the same path from the same sys.path and working
    directory, so a module missing here is reported now rather than as a round of
    failed clients.
    """
    problems = []
    for field, reg, name in (
        ("model.name", registry.MODELS, scenario.model.name),
        ("data.name", registry.DATASETS, scenario.data.name),
        ("strategy.name", registry.STRATEGIES, scenario.strategy.name),
    ):
        if reg.is_builtin(name):
            continue
        try:
            reg.load(name)
        except RegistryError as exc:
            problems.append(f"{field} = {name!r}: {exc}")
    return problems


# Checks for starting a new run on this machine (files, memory, what fedsim will not
# start): `fedsim check` and `fedsim run` run them; auditing or reporting a finished run
# does not.
RUN_CHECKS: tuple[tuple[frozenset[str], Callable[[Scenario], list[str]]], ...] = (
    (frozenset({"dp"}), check_noise),
    (frozenset({"model", "data", "strategy"}), check_imports),
    (frozenset({"data"}), check_data_files),
    (frozenset({"data", "population", "backend"}), check_memory),
)
