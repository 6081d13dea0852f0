"""Scenario: the whole description of one simulation, validated before anything starts.

A scenario is a TOML file (see scenarios/*.toml) loaded into pydantic models that
forbid unknown keys. Every problem is collected into one `ScenarioError` that names
each bad field, its value and what is allowed, so a user fixes a file in one pass.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedsim import registry
from fedsim.errors import FedsimError
from fedsim.registry import Registry, did_you_mean


class ScenarioError(FedsimError, ValueError):
    """A scenario that cannot run; `problems` holds one line per bad field."""

    bad_input = True

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid scenario{where} ({len(self.problems)} problem(s)):\n{lines}")


class _Section(BaseModel):
    # Unknown keys are errors: a typo must never silently fall back to a default.
    # inf/nan are refused too: `non_finite_problems` reports them in a file, this flag
    # guards values assigned in code.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SamplingConfig(_Section):
    """Which clients train each round (the strategy samples them, fixed-size)."""

    clients_per_round: int | None = Field(None, ge=1, description="exact cohort size")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="share of the population")

    @model_validator(mode="after")
    def _one_of(self) -> SamplingConfig:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("give either clients_per_round or fraction, not both")
        return self


class ShakespeareOptions(_Section):
    seq_len: int = Field(80, ge=1, le=1000)
    min_samples: int = Field(100, ge=1)
    max_samples_per_role: int | None = Field(2000, ge=1)
    max_roles: int | None = Field(None, ge=1)


class SyntheticOptions(_Section):
    alpha: float = Field(1.0, ge=0.0, description="model heterogeneity across clients")
    beta: float = Field(1.0, ge=0.0, description="feature heterogeneity across clients")
    dim: int = Field(60, ge=1)
    num_classes: int = Field(10, ge=2)
    min_samples: int = Field(50, ge=2)


def _registered(registry: Registry) -> Any:
    """A str field holding a registered name or an import path of `registry`'s kind.

    Validation normalises it to what the resolved scenario records (see
    `Registry.canonical`), so workers and resume rebuild the same component.
    """
    return Annotated[str, AfterValidator(registry.canonical)]


DatasetName = _registered(registry.DATASETS)
PartitionMethod = _registered(registry.PARTITIONS)
ModelName = _registered(registry.MODELS)
StrategyName = _registered(registry.STRATEGIES)
ObjectiveName = Annotated[
    str, AfterValidator(lambda v: v if v == "auto" else registry.OBJECTIVES.canonical(v))
]
# Methods fedsim implements itself (vectorised numpy); the rest go through flwr-datasets.
OWN_PARTITIONS = tuple(
    e.name for e in registry.PARTITIONS.entries() if "fedsim" in e.info["backends"]
)


class HubOptions(_Section):
    """A Hugging Face dataset via flwr-datasets (online), or its save_to_disk copy (root)."""

    dataset: str = ""
    subset: str = ""
    image_key: str = "image"
    label_key: str = "label"
    group_key: str = ""
    train_split: str = "train"
    test_split: str = "test"


class DataConfig(_Section):
    """The data set (a registered name or "pkg.module:load") and its split over clients."""

    name: DatasetName = "digits"
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of a user data loader"
    )
    root: str | None = Field(None, description="directory of the files (mnist, cifar10, ...)")
    partition: PartitionMethod = "iid"
    partition_backend: Literal["fedsim", "flwr"] = Field(
        "fedsim", description="'flwr' runs iid/dirichlet/natural through flwr-datasets too"
    )
    partition_options: dict[str, Any] = Field(
        default_factory=dict, description="flwr-datasets partitioner options"
    )
    alpha: float = Field(0.5, gt=0.0, description="Dirichlet concentration (dirichlet only)")
    min_partition_size: int = Field(2, ge=0, description="fewest samples a client may get")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    validation_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of the training split held out and evaluated instead of the test "
        "split, for choosing settings (0: evaluate the test split)",
    )
    mnist1d_samples: int = Field(5000, ge=10, description="MNIST-1D samples to generate")
    shakespeare: ShakespeareOptions = ShakespeareOptions()
    synthetic: SyntheticOptions = SyntheticOptions()
    hub: HubOptions = HubOptions()

    def loader_options(self, population: int) -> dict[str, Any]:
        """Keyword options for `fedsim.data.load_dataset` (without the seed)."""
        if not registry.DATASETS.is_builtin(self.name):
            return dict(self.options)  # a user loader: load(seed=..., **data.options)
        if self.name == "shakespeare":
            return {"test_fraction": self.test_fraction, **self.shakespeare.model_dump()}
        if self.name == "synthetic":
            return {
                "test_fraction": self.test_fraction,
                "num_clients": population,
                **self.synthetic.model_dump(),
            }
        if self.name == "mnist1d":
            return {"test_fraction": self.test_fraction, "num_samples": self.mnist1d_samples}
        if registry.DATASETS.info(self.name).get("files"):
            return {"root": self.root}
        if self.name == "hub":
            return {
                "root": self.root or "",
                "test_fraction": self.test_fraction,
                **self.hub.model_dump(),
            }
        return {"test_fraction": self.test_fraction}


class ModelConfig(BaseModel):
    """`name` picks a registered model or "pkg.module:build"; the other keys are its options."""

    # Extra keys are the model's own options; build_model rejects unknown ones.
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: ModelName = "cnn"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainConfig(_Section):
    """Local training on each client."""

    epochs: int = Field(1, ge=1, le=1000)
    min_epochs: int | None = Field(
        None, ge=1, description="system heterogeneity: epochs ~ U{min_epochs..epochs} per round"
    )
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.1, gt=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    max_steps: int | None = Field(
        None, ge=1, description="cap on local steps per round (large shards)"
    )
    objective: ObjectiveName = Field(
        "auto",
        description="client objective (fedsim.clients.objectives); auto: the strategy's",
    )


class StrategyConfig(_Section):
    """A Flower strategy by name; `options` are its constructor's keyword arguments."""

    name: StrategyName = "fedavg"
    options: dict[str, Any] = Field(default_factory=dict)


class DPConfig(_Section):
    """Differential privacy.

    'sample': DP-SGD on every client (example-level DP, per-client budgets).
    'user':   DP-FedAvg on the server (user-level DP: clip each client's update to
              max_grad_norm, add Gaussian noise to the sum).
    """

    mode: Literal["off", "sample", "user"] = "off"
    noise_multiplier: float | None = Field(None, ge=0.0, description="> 0 to start a DP run")
    target_epsilon: float | None = Field(None, gt=0.0)
    max_grad_norm: float = Field(1.0, gt=0.0, description="per-example (sample) / update (user)")
    delta: float = Field(1e-5, gt=0.0, lt=1.0)
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"
    secure_rng: bool = False
    grad_sample_mode: Literal["auto", "hooks", "ghost"] = Field(
        "auto", description="DP-SGD clipping path; auto = ghost where Linear layers dominate"
    )
    max_epsilon: float | None = Field(None, gt=0.0, description="per-client budget")
    # user level only
    client_sampling: Literal["poisson", "fixed"] = "poisson"
    adaptive_clipping: bool = False
    target_unclipped_quantile: float = Field(0.5, gt=0.0, lt=1.0)
    clip_learning_rate: float = Field(0.2, gt=0.0)
    clip_count_stddev: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _noise_source(self) -> DPConfig:
        if self.mode == "off":
            return self
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError("give either noise_multiplier or target_epsilon, not both")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(f"dp.mode = {self.mode!r} needs noise_multiplier or target_epsilon")
        if self.max_epsilon is not None and self.target_epsilon is not None:
            if self.target_epsilon > self.max_epsilon:
                raise ValueError(
                    f"target_epsilon ({self.target_epsilon}) exceeds max_epsilon "
                    f"({self.max_epsilon})"
                )
        return self


class BackendConfig(_Section):
    """Where clients run: Ray workers (actors) started by Flower's simulation engine."""

    workers: int = Field(2, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    clients_per_message: int | Literal["auto"] = "auto"
    ray_address: str | None = None
    round_timeout: float = Field(3600.0, gt=0.0, description="seconds to wait for a round")
    connect_timeout: float = Field(30.0, gt=0.0, description="seconds to reach a Ray cluster")
    threads_per_worker: int = Field(1, ge=1, description="torch threads in each worker")
    engine: Literal["auto", "vectorised", "sequential"] = Field(
        "auto",
        description="how a worker trains its clients: vectorised (torch.func over a chunk "
        "of clients), sequential (one after the other), auto (vectorised if the model "
        "passes a one-batch vmap probe)",
    )
    vector_clients: int | Literal["auto"] = Field(
        "auto", description="clients per vectorised chunk (V); auto: from the model size"
    )

    @model_validator(mode="after")
    def _k(self) -> BackendConfig:
        if isinstance(self.clients_per_message, int) and self.clients_per_message < 1:
            raise ValueError("clients_per_message must be 'auto' or an integer >= 1")
        if isinstance(self.vector_clients, int) and self.vector_clients < 1:
            raise ValueError("vector_clients must be 'auto' or an integer >= 1")
        return self


class EvaluationConfig(_Section):
    every: int = Field(1, ge=0, description="central evaluation every N rounds (0 = never)")
    federated_fraction: float = Field(0.0, ge=0.0, le=1.0)
    client_holdout: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of each shard held out for federated eval"
    )
    batch_size: int = Field(256, ge=1)
    max_test_samples: int | None = Field(
        None, ge=1, description="evaluate on a seeded subset of the test set (large sets)"
    )


class FaultsConfig(_Section):
    """Client behaviour: dropouts, failures and stragglers, seeded per (round, client).

    These injected faults are data: a run goes on through them. A client whose code
    raises (a real error, not `fail_probability`) is different: a round in which every
    client that trained raised, or a run in which more than `max_failed_fraction` of
    the client trainings so far raised, stops with the first error (fedsim.failures).

    Stragglers: each client has a fixed speed factor s ~ LogNormal(0, speed_sigma)
    (seeded per client); a participation lasts steps * s simulated seconds. With a
    `round_deadline`, a client finishing later is dropped from aggregation (it did
    train, so its privacy is spent and recorded as "late"), or kept if accept_late.
    """

    dropout_probability: float = Field(0.0, ge=0.0, le=1.0, description="drops before training")
    fail_probability: float = Field(0.0, ge=0.0, le=1.0, description="raises mid-training")
    speed_sigma: float = Field(0.0, ge=0.0, description="spread of client speeds (lognormal)")
    round_deadline: float | None = Field(None, gt=0.0, description="simulated seconds")
    accept_late: bool = False
    nan_probability: float = Field(
        0.0, ge=0.0, le=1.0, description="client returns NaN weights (tests rejection)"
    )
    crash_worker_at: list[int] | None = Field(
        None, description="[round, client]: the worker process dies on that client (tests)"
    )
    max_failed_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="stop the run once more client trainings than this raised real errors",
    )


class AuditConfig(_Section):
    """Empirical privacy audit run alongside training (one-run, example level)."""

    canaries: int = Field(0, ge=0, le=100_000, description="canary examples (0 = off)")
    canary_clients: int = Field(
        0, ge=0, le=100_000, description="user level: canary clients (one-shot estimate)"
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


class CheckpointConfig(_Section):
    every: int = Field(1, ge=0, description="checkpoint every N rounds (0 = never)")


class TrackingConfig(_Section):
    """Experiment tracking beside the run's own files (optional extra ``fedsim[tracking]``).

    ``tensorboard``: event files in ``RUN_DIR/tensorboard``. ``mlflow``: one MLflow run in
    a local store (``RUN_DIR/mlflow.db``, artifacts in ``RUN_DIR/mlruns``, unless
    ``tracking_uri`` names another local one; never a server). Both get the per-round
    metrics, epsilon and the resolved scenario as hyper-parameters.
    """

    tensorboard: bool = False
    mlflow: bool = False
    tracking_uri: str | None = Field(
        None, description="MLflow store: a local path, file: or sqlite: URI (no server)"
    )
    experiment: str | None = Field(None, description="MLflow experiment (default: the name)")

    @model_validator(mode="after")
    def _usable(self) -> TrackingConfig:
        # Whether the packages are installed is checked where a run starts
        # (fedsim.engine.tracking.check_installed), not here: reading or auditing a run on a
        # machine without them must still work.
        uri = self.tracking_uri
        if uri is not None:
            if not self.mlflow:
                raise ValueError("tracking.tracking_uri is set but tracking.mlflow is false")
            scheme = uri.split(":", 1)[0].lower() if "://" in uri else "file"
            if scheme not in ("file", "sqlite") or not uri.strip():
                raise ValueError(
                    f"tracking.tracking_uri = {uri!r}: only a local store: a directory, a "
                    "file: or a sqlite: URI (fedsim never logs to a tracking server)"
                )
        return self


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class Scenario(_Section):
    """One simulation. Load with `Scenario.from_toml(path)`."""

    name: str = Field("scenario", description="run name: the default run directory runs/NAME")
    seed: int = Field(0, ge=0)
    rounds: int = Field(3, ge=1, le=100_000)
    population: int = Field(10, ge=1, le=10_000_000)
    sampling: SamplingConfig = SamplingConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = StrategyConfig()
    dp: DPConfig = DPConfig()
    backend: BackendConfig = BackendConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    faults: FaultsConfig = FaultsConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    audit: AuditConfig = AuditConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # The name becomes a path (runs/NAME) that --overwrite may empty: it must not
        # be able to point anywhere else.
        if not _NAME_RE.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                "a name is a plain identifier used as a directory name: 1 to 100 letters, "
                "digits, '-', '_' or '.', no path separators, not '.' or '..'"
            )
        return value

    # ------------------------------------------------------------------ derived
    @property
    def clients_per_round(self) -> int:
        """Cohort size the strategy samples each round."""
        if self.sampling.clients_per_round is not None:
            return self.sampling.clients_per_round
        fraction = 1.0 if self.sampling.fraction is None else self.sampling.fraction
        return max(1, int(math.floor(self.population * fraction + 1e-9)))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_toml(
        cls,
        path: str | Path,
        overrides: list[str] | None = None,
        *,
        before_run: bool = False,
        checks: Literal["all", "schema"] = "all",
    ) -> Scenario:
        """Read a scenario file, apply `key.path=value` overrides and validate.

        `before_run` adds the checks for starting a new run here, as `fedsim check` and
        `fedsim run` do before anything starts: this machine's data.root files and
        memory, and settings fedsim will not start (zero noise in a DP mode). Reading a
        finished run (audit, report) leaves it off.

        `checks="schema"` leaves out the checks that build the model and the strategy
        (they import torch, Opacus and Flower, seconds of start-up): for readers of a
        finished run, whose scenario those checks passed when it started.

        Raises:
            ScenarioError: unreadable file, bad TOML, or any invalid field.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError([f"cannot read scenario file: {exc.strerror}"], str(path)) from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError([f"not valid TOML: {exc}"], str(path)) from exc
        return cls.from_dict(
            raw, overrides=overrides, source=str(path), before_run=before_run, checks=checks
        )

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        overrides: list[str] | None = None,
        source: str | None = None,
        *,
        before_run: bool = False,
        checks: Literal["all", "schema"] = "all",
    ) -> Scenario:
        """Validate a scenario given as a dict (the TOML structure); see `from_toml`."""
        if checks not in ("all", "schema"):
            raise ValueError(f"checks must be 'all' or 'schema', got {checks!r}")
        if not isinstance(raw, dict):
            raise ScenarioError([f"a scenario must be a table, got {type(raw).__name__}"], source)
        data = json.loads(json.dumps(raw))  # deep copy: never mutate the caller's dict
        problems: list[str] = []
        for item in overrides or []:
            try:
                apply_override(data, item)
            except ValueError as exc:
                problems.append(str(exc))
        scenario, bad, schema_problems = _validate_schema(cls, data)
        problems += schema_problems
        if scenario is not None:
            # Checks of the valid parts run too: one pass shows every problem.
            problems += scenario.cross_check(
                skip=bad, machine=before_run, heavy=checks == "all"
            )
        if problems or scenario is None:
            raise ScenarioError(problems, source)
        return scenario

    def cross_check(
        self, skip: Collection[str] = (), machine: bool = False, heavy: bool = True
    ) -> list[str]:
        """Checks that involve several fields or components (pydantic checks each field alone).

        Args:
            skip: top-level keys ("dp", "population", ...) whose values were invalid and
                replaced by defaults; a check that reads one of them is not run, since it
                would judge the default instead of what the user wrote.
            machine: also run the checks for starting a new run (see `from_toml`).
            heavy: run the checks that build the model and the strategy (torch, Flower).
        """
        from fedsim.validate import COMPONENT_CHECKS, HEAVY_CHECKS, RUN_CHECKS

        skipped = set(skip)
        problems: list[str] = []
        light = [c for c in (*_FIELD_CHECKS, *COMPONENT_CHECKS) if c[1] not in HEAVY_CHECKS]
        heavy_checks = [c for c in COMPONENT_CHECKS if c[1] in HEAVY_CHECKS] if heavy else []
        for reads, check in light:
            if not skipped & reads:
                problems.extend(check(self))
        if skipped or problems:
            # The model, strategy and machine checks import torch/Flower/the data
            # loaders: they judge a scenario with no plain mistake left, so a typo is
            # refused in a fraction of a second.
            return problems
        for _, check in (*heavy_checks, *(RUN_CHECKS if machine else ())):
            problems.extend(check(self))
        return problems

    def _check_cohort(self) -> list[str]:
        if self.clients_per_round > self.population:
            return [
                f"sampling.clients_per_round = {self.clients_per_round}: more than the "
                f"population ({self.population}); allowed 1..{self.population}"
            ]
        return []

    def _check_data_fields(self) -> list[str]:
        problems: list[str] = []
        data = self.data
        info = registry.DATASETS.info(data.name)
        builtin = registry.DATASETS.is_builtin(data.name)
        natural = [e.name for e in registry.DATASETS.entries() if e.info.get("natural")]
        # A user loader's natural ids are known once it has run (groups_train).
        if data.partition == "natural" and builtin and not info.get("natural"):
            problems.append(
                f"data.partition = 'natural': {data.name} has no natural clients; "
                f"natural ids exist for {', '.join(natural)}"
            )
        if info.get("files") and not data.root:
            problems.append(
                f"data.root: required for data.name = {data.name!r} (the directory "
                "holding its files; data sets are never downloaded at run time)"
            )
        if data.options and builtin:
            problems.append(
                f"data.options: keyword options of a user data loader; {data.name!r} is "
                "built in and takes its settings from the [data] fields"
            )
        if (
            data.partition_options
            and data.partition in OWN_PARTITIONS
            and (data.partition_backend == "fedsim")
        ):
            problems.append(
                "data.partition_options: only used by flwr-datasets partitioners; set "
                "data.partition_backend = 'flwr' or remove them"
            )
        return problems

    def _check_model_fits_data(self) -> list[str]:
        # What the built-ins take and give ("features" or "tokens"); a user component's
        # inputs are checked by building it (fedsim.validate.check_model).
        takes = registry.MODELS.info(self.model.name).get("input")
        gives = registry.DATASETS.info(self.data.name).get("input")
        if takes is None or gives is None or takes == gives:
            return []
        if gives == "tokens":
            allowed = [e.name for e in registry.MODELS.entries() if e.info["input"] == "tokens"]
            return [
                f"model.name = {self.model.name!r}: {self.data.name} needs a sequence model; "
                f"allowed: {', '.join(repr(n) for n in allowed)}"
            ]
        return [
            f"model.name = {self.model.name!r}: needs text data; data.name = {self.data.name!r}"
        ]

    def _check_adaptive_clipping(self) -> list[str]:
        problems: list[str] = []
        if self.dp.mode == "user" and self.dp.adaptive_clipping:
            from fedsim.strategies.dp_fedavg import split_noise

            z = self.dp.noise_multiplier
            if z is not None:
                sigma_b = self.dp.clip_count_stddev or self.clients_per_round / 20.0
                try:
                    split_noise(z, sigma_b)
                except ValueError as exc:
                    problems.append(f"dp.adaptive_clipping: {exc}")
        return problems

    def _check_epochs(self) -> list[str]:
        if self.train.min_epochs is not None and self.train.min_epochs > self.train.epochs:
            return [
                f"train.min_epochs = {self.train.min_epochs}: must be <= train.epochs "
                f"({self.train.epochs})"
            ]
        return []

    def _check_audit(self) -> list[str]:
        problems: list[str] = []
        if self.audit.canary_clients and self.dp.mode != "user":
            problems.append(
                "audit.canary_clients: the one-shot audit estimates user-level DP; it needs "
                "dp.mode = 'user' (for example-level DP use audit.canaries)"
            )
        if self.audit.canaries and self.dp.mode == "user":
            problems.append(
                "audit.canaries: example canaries audit sample-level DP; with dp.mode = "
                "'user' use dp.mode = 'sample' or 'off', or set audit.canaries = 0"
            )
        return problems

    def warnings(self) -> list[str]:
        """Settings that are allowed but probably not what a user wants."""
        out = []
        if self.dp.mode == "user" and self.dp.delta >= 1.0 / self.population:
            out.append(
                f"dp.delta = {self.dp.delta:g} >= 1/population (1/{self.population}): a "
                "user-level guarantee with such a delta allows leaking one client outright; "
                f"use delta < {1.0 / self.population:.2g}"
            )
        if self.dp.mode != "off" and self.dp.secure_rng is False:
            out.append(
                "dp.secure_rng = false: noise is seeded (reproducible experiments); "
                "set it to true for a run whose guarantee you claim"
            )
        return out

    def to_toml(self) -> str:
        """The resolved scenario as TOML (every default written out)."""
        return dumps_toml(self.model_dump(mode="json", exclude_none=True))

    def fingerprint(self) -> str:
        """Stable JSON of the resolved scenario (what workers cache on)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


# (top-level keys a check reads, the check); `Scenario.cross_check` skips a check that
# reads a key whose value was invalid.
_FIELD_CHECKS: tuple[tuple[frozenset[str], Callable[[Scenario], list[str]]], ...] = (
    (frozenset({"sampling", "population"}), Scenario._check_cohort),
    (frozenset({"data"}), Scenario._check_data_fields),
    (frozenset({"data", "model"}), Scenario._check_model_fits_data),
    (frozenset({"dp", "sampling", "population"}), Scenario._check_adaptive_clipping),
    (frozenset({"train"}), Scenario._check_epochs),
    (frozenset({"audit", "dp"}), Scenario._check_audit),
)


def _validate_schema(
    cls: type[Scenario], data: dict[str, Any]
) -> tuple[Scenario | None, set[str], list[str]]:
    """Validate field by field: (scenario, invalid top-level keys, problems).

    With invalid keys, the scenario is the rest with defaults in their place, so that
    checks of the valid sections can still run; None if even that does not validate.
    """
    non_finite = non_finite_problems(data)
    problems = [message for _, message in non_finite]
    bad = {loc.split(".")[0].split("[")[0] for loc, _ in non_finite}
    try:
        scenario = cls.model_validate(data)
    except ValidationError as exc:
        problems += _describe(exc, skip={loc for loc, _ in non_finite})
        bad |= {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        try:
            scenario = cls.model_validate({k: v for k, v in data.items() if k not in bad})
        except ValidationError:
            scenario = None
    return scenario, bad, problems


def non_finite_problems(data: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, message) for every inf or nan float anywhere in a raw scenario.

    The one rule for non-finite values: it covers typed fields and free-form option
    tables (model options, strategy.options, data.partition_options) alike.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return [(path, f"{path} = {data!r}: must be a finite number (inf and nan are not allowed)")]
    items: Any = ()
    if isinstance(data, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in data.items())
    elif isinstance(data, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(data))
    return [found for sub, value in items for found in non_finite_problems(value, sub)]


def _describe(exc: ValidationError, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """One line per pydantic error; `skip` holds dotted locations already reported."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        if loc in skip:
            continue
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key (value {value!r}); remove it or check spelling")
        elif err["type"] == "missing":
            problems.append(f"{loc}: required")
        elif isinstance(value, dict):
            # A section's own check (several fields): its message names the fields.
            named = msg.startswith(f"{loc}.")  # the message already names the field
            problems.append(msg if named else f"{loc or '(top level)'}: {msg}")
        else:
            if err["type"] == "literal_error":
                # pydantic lists the allowed names as 'a', 'b' or 'c'.
                allowed = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
                msg += did_you_mean(value, allowed)
            problems.append(f"{loc or '(top level)'} = {value!r}: {msg}")
    return problems


def parse_value(text: str) -> Any:
    """Parse the value of a `--set key=value` the way TOML would, else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override to a nested dict in place (`=none` removes it).

    Raises:
        ValueError: the item has a line break, has no '=' or walks through a non-table.
    """
    if any(ch in item for ch in "\n\r\v\f\x85\u2028\u2029"):
        # TOML would read "5\nseed=3" as 5 and drop the rest without a word.
        raise ValueError(
            f"--set {item!r}: the key or value has a line break; give one key=value per --set"
        )
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected key.path=value")
    key, _, text = item.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError(f"--set {item!r}: empty key")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {item!r}: {part!r} is a value, not a table")
        node = child
    if text.strip().lower() in ("none", "null"):
        # TOML has no null: `--set key=none` removes a key, e.g. to switch from
        # dp.noise_multiplier to dp.target_epsilon.
        node.pop(parts[-1], None)
        return
    node[parts[-1]] = parse_value(text.strip())


def dumps_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of TOML-compatible values as TOML text."""
    lines: list[str] = []
    _emit_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(table: dict[str, Any], prefix: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        _emit_table(value, [*prefix, key], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
