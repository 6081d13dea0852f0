"""One registry per kind of component: models, datasets, partitions, strategies,
client objectives.

Each registry is the single source of truth for its kind: the names a scenario may
use, what each name builds (an import target, loaded only when needed) and the
facts other parts check before anything starts (a dataset's input shape and
classes, which strategies user-level DP may wrap, ...). Built-in entries and user
entries are alike; a user adds one in either of two ways:

* an import path in the scenario, ``model.name = "mypkg.nets:make_net"``;
* a decorator in their own module::

      @fedsim.register_model("tinynet")
      def make_net(input_shape, num_classes, hidden=32): ...

A registered user name resolves to the import path of the decorated object, and
that path is what the resolved scenario (scenario.toml, the Ray workers' copy)
records: a worker is a fresh process that never ran the decorator, so it imports
the module by the same path, as resume does. An object defined in the script
being run (``__main__``) is recorded under the script's module name (its file
name), which the workers import from the script's directory; as with
multiprocessing, the script must start its run under
``if __name__ == "__main__":``.

This module imports no torch, Flower or Ray: `fedsim.config` validates names with
it, and loading a target imports what that target needs.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fedsim.errors import FedsimError

T = TypeVar("T")

# "package.module:attribute.path": the module is imported, then the attributes walked.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
# Parameters that are the component's inputs, not options a scenario sets.
REQUIRED = inspect.Parameter.empty


class RegistryError(FedsimError, ValueError):
    """A name that is not registered, a target that cannot be imported, or a bad entry."""

    bad_input = True  # an unknown name or an import path that does not load


def did_you_mean(value: Any, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the allowed name closest to a mistyped one, else ''."""
    if not isinstance(value, str):
        return ""
    names = list(choices)
    same_case = [n for n in names if n.casefold() == value.casefold()]
    close = same_case or difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def quoted_list(names: Iterable[str]) -> str:
    """'a', 'b' or 'c' (how pydantic lists the values a Literal allows)."""
    items = [repr(n) for n in names]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def is_import_path(value: str) -> bool:
    """True for a value written as an import path ('module:attribute')."""
    return ":" in value


@dataclass
class Entry:
    """One component: its name, where it lives and what is known about it.

    Attributes:
        kind: "model", "dataset", "partition" or "strategy".
        name: the registered name; for an import path given in a scenario, the path.
        target: "module:attribute" to import, or None for metadata-only entries
            (partitions, dispatched by fedsim.data).
        builtin: shipped with fedsim (the scenario records its name, not its target).
        info: the kind's metadata (see the tables below for the keys of each kind).
    """

    kind: str
    name: str
    target: str | None
    builtin: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    _obj: Any = field(default=None, repr=False)

    @property
    def recorded(self) -> str:
        """What a resolved scenario records for this entry: a built-in's name, else its path."""
        return self.name if self.builtin or self.target is None else self.target

    def load(self) -> Any:
        """The builder, loader or class behind the entry (imported on first use)."""
        if self._obj is None:
            if self.target is None:
                raise RegistryError(f"{self.kind} {self.name!r} has nothing to load")
            self._obj = load_target(self.target)
        return self._obj


class Registry:
    """The entries of one kind, in registration order (built-ins first).

    Args:
        kind: what the entries are ("model", ...), used in messages.
        fold_case: names match whatever their case ("FedAdam" is "fedadam").
        check: validates a loaded object; returns what is wrong with it, or None.
        inputs: parameters fedsim passes itself (a model's input_shape, a loader's
            seed); the other keyword parameters are the options a scenario sets.
    """

    def __init__(
        self,
        kind: str,
        *,
        fold_case: bool = False,
        check: Callable[[Any], str | None] | None = None,
        inputs: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.fold_case = fold_case
        self._check = check
        self.inputs = inputs
        self._entries: dict[str, Entry] = {}
        self._by_target: dict[str, Entry] = {}
        self._paths: dict[str, Entry] = {}

    # ------------------------------------------------------------ contents
    def add(self, name: str, target: str | None, **info: Any) -> Entry:
        """Declare a built-in entry (fedsim's own table below)."""
        entry = Entry(self.kind, name, target, builtin=True, info=info)
        self._entries[self._key(name)] = entry
        return entry

    def register(self, name: str, obj: Any, **info: Any) -> Entry:
        """Register a user object under `name`; its import path is what workers import.

        Registering the same object (same import path) again is allowed: a worker
        re-runs the decorators when it imports the module.

        Raises:
            RegistryError: a bad or built-in name, a name already taken by another
                object, an object workers cannot import, or one of the wrong kind.
        """
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise RegistryError(
                f"register_{self.kind}({name!r}): a name is letters, digits, '_', '.' or "
                "'-' (a ':' would read as an import path)"
            )
        old = self._entries.get(self._key(name))
        if old is not None and old.builtin:
            raise RegistryError(
                f"register_{self.kind}({name!r}): {old.name!r} is a built-in {self.kind}; "
                "register yours under another name"
            )
        target = import_path_of(obj, f"register_{self.kind}({name!r})")
        if old is not None and old.target != target:
            raise RegistryError(
                f"register_{self.kind}({name!r}): already registered for {old.target}; "
                f"not also for {target}"
            )
        problem = self._check(obj) if self._check else None
        if problem:
            raise RegistryError(f"register_{self.kind}({name!r}): {problem}")
        entry = Entry(self.kind, name, target, info=info, _obj=obj)
        self._entries[self._key(name)] = entry
        self._by_target[target] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget a user entry (tests); built-ins stay."""
        entry = self._entries.get(self._key(name))
        if entry is None or entry.builtin:
            return
        del self._entries[self._key(name)]
        if entry.target is not None:
            self._by_target.pop(entry.target, None)

    def names(self) -> list[str]:
        """Registered names, built-ins first, in registration order."""
        return [e.name for e in self._entries.values()]

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.lookup(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def view(self) -> RegistryView:
        """A read-only name -> object mapping onto this registry."""
        return RegistryView(self)

    # ------------------------------------------------------------ lookup
    def _key(self, name: str) -> str:
        return name.casefold() if self.fold_case else name

    def lookup(self, value: str) -> Entry | None:
        """The entry for a registered name or import path, or None (nothing is imported)."""
        if not isinstance(value, str):
            return None
        if is_import_path(value):
            return self._by_target.get(value)
        return self._entries.get(self._key(value))

    def canonical(self, value: str) -> str:
        """What a scenario records for `value`: a built-in's name or an import path.

        Only the spelling is checked (the module is not imported), so a finished
        run's scenario stays readable where the user's code is not installed.

        Raises:
            ValueError: neither a registered name nor an import path; the message
                lists the names (as pydantic lists a Literal's values) and the closest.
        """
        if is_import_path(value):
            if not IMPORT_PATH.fullmatch(value):
                raise ValueError(
                    "not an import path; write 'package.module:attribute' (or one of "
                    f"{quoted_list(self.names())})"
                )
            return value
        entry = self.lookup(value)
        if entry is None:
            hint = ""
            if "." in value and not did_you_mean(value, self.names()):
                hint = "; an import path is written 'package.module:attribute'"
            raise ValueError(
                f"Input should be {quoted_list(self.names())}"
                f"{did_you_mean(value, self.names())}{hint}"
            )
        return entry.recorded

    def resolve(self, value: str) -> Entry:
        """The entry for a name or an import path (an unregistered path gets its own entry).

        Raises:
            RegistryError: an unknown name or a malformed path, with the allowed names.
        """
        entry = self.lookup(value) if isinstance(value, str) else None
        if entry is not None:
            return entry
        if not isinstance(value, str) or not IMPORT_PATH.fullmatch(value):
            raise RegistryError(
                f"unknown {self.kind} {value!r}; allowed: {', '.join(self.names())}, or an "
                f"import path 'package.module:attribute'{did_you_mean(value, self.names())}"
            )
        return self._paths.setdefault(value, Entry(self.kind, value, value))

    def load(self, value: str) -> Any:
        """Import and check the object behind a name or path.

        Raises:
            RegistryError: unknown name, import failure, or an object of the wrong kind.
        """
        entry = self.resolve(value)
        obj = entry.load()
        problem = self._check(obj) if self._check and not entry.builtin else None
        if problem:
            raise RegistryError(f"{self.kind} {value!r}: {problem}")
        return obj

    def options(self, value: str) -> tuple[dict[str, Any], bool]:
        """The options schema of a name or path, from its signature (see `signature_options`).

        Raises:
            RegistryError: as `load`.
        """
        return signature_options(self.load(value), skip=self.inputs)

    def info(self, value: str) -> dict[str, Any]:
        """The metadata known for a name or path without importing anything ({} if none)."""
        entry = self.lookup(value) if isinstance(value, str) else None
        return entry.info if entry is not None else {}

    def is_builtin(self, value: str) -> bool:
        entry = self.lookup(value) if isinstance(value, str) else None
        return entry is not None and entry.builtin


class RegistryView(Mapping[str, Any]):
    """name -> loaded object, read-only: ``MODELS["cnn"]`` is the cnn builder.

    Writing to it is refused with the way that works: a decorator, whose import
    path reaches the Ray workers (a dict entry set in the driver never did).
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> Any:
        entry = self._registry.lookup(name)
        if entry is None or is_import_path(name):
            raise KeyError(name)
        return entry.load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names())

    def __len__(self) -> int:
        return len(self._registry.names())

    def __setitem__(self, name: str, value: Any) -> None:
        kind = self._registry.kind
        raise TypeError(
            f"the {kind} registry is read-only; register a {kind} with "
            f"@fedsim.register_{kind}({name!r}) in a module (Ray workers import it by path)"
        )


# ---------------------------------------------------------------- import paths

# Modules being imported by `load_target`: a user module that starts a run while
# being imported (in a Ray worker, say) is refused, see `importing_user_module`.
_IMPORTING: list[str] = []


def importing_user_module() -> str | None:
    """The user module being imported to load a component, or None."""
    return _IMPORTING[-1] if _IMPORTING else None


def _ensure_cwd_on_path() -> None:
    # `fedsim run` is a console script: its sys.path[0] is the script's bin directory,
    # not the working directory `python -m` would add; import paths are relative to it.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def worker_sys_path() -> list[str]:
    """The driver's sys.path as the Ray workers need it: '' made absolute, cwd included."""
    cwd = os.getcwd()
    paths = [cwd if p == "" else p for p in sys.path]
    if cwd not in paths:
        paths.append(cwd)
    return list(dict.fromkeys(paths))


def load_target(target: str) -> Any:
    """Import 'module:attr.path' and return the attribute.

    Raises:
        RegistryError: the module cannot be imported (with why and where Python looked)
            or has no such attribute.
    """
    module_name, _, qualname = target.partition(":")
    _ensure_cwd_on_path()
    _IMPORTING.append(module_name)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any error importing user code is reported
        where = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name and module_name.startswith(exc.name):
            where = (
                f"; Python looked in the working directory {os.getcwd()} and sys.path "
                "(run from the directory holding the package, or add it to PYTHONPATH)"
            )
        raise RegistryError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}{where}"
        ) from exc
    finally:
        _IMPORTING.pop()
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"module {module_name!r} has no attribute {qualname!r}") from None
    return obj


def import_path_of(obj: Any, what: str) -> str:
    """'module:qualname' by which a fresh process (a Ray worker) imports `obj`.

    An object of the script being run (``__main__``) is recorded under the script's
    module name, importable from the script's directory; this process's ``sys.modules``
    gets that name as an alias of ``__main__``, so loading it here reuses the running
    script instead of executing it a second time.

    Raises:
        RegistryError: for objects no other process can import (defined in a function,
            a lambda, in an interactive session, or in a script whose name is not a
            module name).
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise RegistryError(f"{what}: {obj!r} has no module and name; register a function or class")
    if "<" in qualname:
        raise RegistryError(
            f"{what}: {qualname} is defined inside a function (or is a lambda); Ray workers "
            "can only import objects defined at the top level of a module"
        )
    if module == "__main__":
        module = _main_module_name(what)
    return f"{module}:{qualname}"


def _main_module_name(what: str) -> str:
    """The name under which other processes import the running script (see import_path_of)."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m package.script: importable as is
    file = getattr(main, "__file__", None)
    if not file:
        raise RegistryError(
            f"{what}: defined in an interactive session; Ray workers import components by "
            "module: move it into a .py module and import it from there"
        )
    path = Path(file).resolve()
    name = path.stem
    if not name.isidentifier():
        raise RegistryError(
            f"{what}: the script {path.name} is not importable under its name (a module "
            "name is letters, digits and '_'); rename it or move the component into a module"
        )
    taken = sys.modules.get(name)
    if taken is not None and taken is not main:
        raise RegistryError(
            f"{what}: the script {path.name} has the name of the module {name!r} "
            f"({getattr(taken, '__file__', 'built-in')}); rename the script"
        )
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = main
    return name


# ---------------------------------------------------------------- checks of user objects


def _check_callable(obj: Any) -> str | None:
    return None if callable(obj) else f"{obj!r} is not callable"


def _check_strategy(obj: Any) -> str | None:
    from flwr.serverapp.strategy import Strategy

    if isinstance(obj, type) and issubclass(obj, Strategy):
        return None
    return f"{obj!r} is not a subclass of flwr.serverapp.strategy.Strategy"


def _check_objective(obj: Any) -> str | None:
    from fedsim.clients.objectives import Objective

    if isinstance(obj, type) and issubclass(obj, Objective):
        return None
    return f"{obj!r} is not a subclass of fedsim.clients.objectives.Objective"


def signature_options(obj: Any, skip: Iterable[str] = ()) -> tuple[dict[str, Any], bool]:
    """The keyword options a builder, loader or class takes: ({name: default}, open).

    A required option has the default `REQUIRED`. A class's options are its
    ``__init__``'s; where that passes ``**kwargs`` on, the base classes' options
    are added. `open` is True when unknown keywords are accepted (a ``**kwargs``
    that goes nowhere known).
    """
    skipped = {"self", *skip}
    if isinstance(obj, type):
        inits = [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__]
        inits = [f for f in inits if f is not object.__init__]
    else:
        inits = [obj]
    options: dict[str, Any] = {}
    for init in inits:
        more = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skipped:
                options.setdefault(p.name, p.default)
        if not more:
            return options, False
    return options, True


# ---------------------------------------------------------------- the registries

MODELS = Registry("model", check=_check_callable, inputs=("input_shape", "num_classes"))
DATASETS = Registry("dataset", check=_check_callable, inputs=("seed",))
PARTITIONS = Registry("partition")
STRATEGIES = Registry("strategy", fold_case=True, check=_check_strategy)
OBJECTIVES = Registry("objective", check=_check_objective)

# Models: info "input" is "features" (float tensors) or "tokens" (int64 ids);
# "input_ndim" the dimensions of one example the builder takes (None: any, it flattens);
# "opacus": Opacus' ModuleValidator accepts the model. With these, `fedsim check` knows
# that a built-in model with its default options builds for a built-in data set without
# building it (torch and Opacus cost seconds to import); tests/test_validate.py builds
# every such pairing and runs the validator, so the facts cannot drift from the builders.
for _name, _input, _ndim in (
    ("cnn", "features", 3),
    ("cnn1d", "features", 2),
    ("femnist_cnn", "features", 3),
    ("char_lstm", "tokens", 1),
    ("logreg", "features", None),
    ("mlp", "features", None),
):
    MODELS.add(_name, f"fedsim.models.{_name}:build", input=_input, input_ndim=_ndim, opacus=True)

# Datasets: input_shape / num_classes where the format fixes them; natural: has
# natural client ids; files: read from data.root; examples / train_examples: sizes
# fixed by the format (train + test, and train alone).
DATASETS.add(
    "digits",
    "fedsim.data.digits:load_digits",
    input="features",
    input_shape=(1, 8, 8),
    num_classes=10,
    examples=1797,
)
DATASETS.add(
    "shakespeare",
    "fedsim.data.shakespeare:load_shakespeare",
    input="tokens",
    natural=True,
    num_classes=80,  # LEAF's character vocabulary (fedsim.data.shakespeare.VOCAB)
)
DATASETS.add("synthetic", "fedsim.data.synthetic:load_synthetic", input="features", natural=True)
DATASETS.add(
    "mnist1d",
    "fedsim.data.mnist1d:load_mnist1d",
    input="features",
    input_shape=(1, 40),
    num_classes=10,
)
for _name in ("mnist", "fashion_mnist"):
    DATASETS.add(
        _name,
        f"fedsim.data.idx:load_{_name}",
        input="features",
        input_shape=(1, 28, 28),
        num_classes=10,
        files=True,
        examples=70_000,
    )
DATASETS.add(
    "cifar10",
    "fedsim.data.cifar:load_cifar10",
    input="features",
    input_shape=(3, 32, 32),
    num_classes=10,
    files=True,
    examples=60_000,
    train_examples=50_000,
)
DATASETS.add(
    "femnist",
    "fedsim.data.femnist:load_femnist",
    input="features",
    input_shape=(1, 28, 28),
    num_classes=62,
    natural=True,
    files=True,
)
DATASETS.add("hub", "fedsim.data.hub:load_hub_dataset", input="features", natural=True)

# Partitions: backends that implement the method (fedsim's own numpy code runs a
# method it has unless data.partition_backend = "flwr").
for _name in ("iid", "dirichlet", "natural"):
    PARTITIONS.add(_name, None, backends=("fedsim", "flwr"))
for _name in ("pathological", "shard", "linear", "square", "exponential", "size"):
    PARTITIONS.add(_name, None, backends=("flwr",))

# Strategies: user_dp: user-level DP-FedAvg may wrap it (it replaces the aggregation,
# so only plain averaging is allowed); local_sgd: its update rule assumes local SGD;
# defaults: constructor options fedsim fills from scenario fields unless set.
_FLWR = "flwr.serverapp.strategy"
for _cls in (
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedAdagrad",
    "FedAdam",
    "FedYogi",
    "QFedAvg",
    "FedMedian",
    "FedTrimmedAvg",
    "Krum",
    "MultiKrum",
    "Bulyan",
):
    STRATEGIES.add(
        _cls.lower(),
        f"{_FLWR}:{_cls}",
        user_dp=_cls in ("FedAvg", "FedProx"),
        defaults={"client_learning_rate": "train.lr"} if _cls == "QFedAvg" else {},
    )
STRATEGIES.add(
    "scaffold",
    "fedsim.strategies.scaffold:Scaffold",
    local_sgd=True,
    defaults={"local_lr": "train.lr", "population": "population"},
)
STRATEGIES.add(
    "fednova",
    "fedsim.strategies.fednova:FedNova",
    local_sgd=True,
    defaults={"momentum": "train.momentum"},
)
STRATEGIES.add(
    "feddyn",
    "fedsim.strategies.feddyn:FedDyn",
    defaults={"population": "population"},
)

# Client objectives (fedsim.clients.objectives); train.objective = "auto" picks the
# built-in whose inputs the strategy sends (fedsim.clients.objectives.auto_objective).
OBJECTIVES.add("erm", "fedsim.clients.objectives:Objective")
OBJECTIVES.add("fedprox", "fedsim.clients.objectives:FedProx")
OBJECTIVES.add("scaffold", "fedsim.clients.objectives:Scaffold")
OBJECTIVES.add("feddyn", "fedsim.clients.objectives:FedDyn")


# ---------------------------------------------------------------- decorators


def _decorator(registry: Registry, name: str, info: dict[str, Any]) -> Callable[[T], T]:
    def register(obj: T) -> T:
        registry.register(name, obj, **info)
        return obj

    return register


def register_model(name: str) -> Callable[[T], T]:
    """Register a model builder ``build(input_shape, num_classes, **options) -> nn.Module``.

    Its keyword parameters (other than input_shape and num_classes) are the options
    a scenario's ``[model]`` table may set::

        @fedsim.register_model("tinynet")
        def tinynet(input_shape, num_classes, hidden=32):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), ...)
    """
    return _decorator(MODELS, name, {})


def register_dataset(
    name: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> Callable[[T], T]:
    """Register a data loader ``load(seed, **options)``.

    It returns a mapping of numpy arrays ``x_train, y_train, x_test, y_test``, with
    optional ``groups_train`` (natural client id per training example) and
    ``num_classes`` (else max label + 1), or a `fedsim.data.DatasetBundle`. The
    scenario's ``data.options`` are its keyword options. Giving `input_shape` and
    `num_classes` lets `fedsim check` build the model without loading the data.
    """
    info: dict[str, Any] = {}
    if input_shape is not None:
        info["input_shape"] = tuple(int(s) for s in input_shape)
    if num_classes is not None:
        info["num_classes"] = int(num_classes)
    return _decorator(DATASETS, name, info)


def register_strategy(name: str, *, user_dp: bool = False) -> Callable[[T], T]:
    """Register a subclass of Flower's ``flwr.serverapp.strategy.Strategy``.

    Its constructor's keyword arguments are the scenario's ``strategy.options``
    (fedsim sets Flower's sampling arguments, fraction_train and so on, where the
    constructor takes them). `user_dp`: it aggregates by plain averaging, so
    user-level DP-FedAvg (``dp.mode = "user"``) may replace its aggregation.
    """
    return _decorator(STRATEGIES, name, {"user_dp": bool(user_dp)})


def register_objective(name: str) -> Callable[[T], T]:
    """Register a client objective: a subclass of ``fedsim.clients.objectives.Objective``.

    Override ``objective`` (the data term, clipped under DP-SGD), ``regulariser``
    (data-free, added after the noise) and ``after_round`` as the algorithm needs;
    a scenario selects it with ``train.objective = name``::

        @fedsim.register_objective("l2")
        class L2(Objective):
            def regulariser(self, params, ctx):
                return 1e-3 * sum((p**2).sum() for p in params.values())
    """
    return _decorator(OBJECTIVES, name, {})


__all__ = [
    "DATASETS",
    "Entry",
    "MODELS",
    "OBJECTIVES",
    "PARTITIONS",
    "REQUIRED",
    "Registry",
    "RegistryError",
    "RegistryView",
    "STRATEGIES",
    "did_you_mean",
    "import_path_of",
    "importing_user_module",
    "load_target",
    "register_dataset",
    "register_model",
    "register_objective",
    "register_strategy",
    "signature_options",
    "worker_sys_path",
]
