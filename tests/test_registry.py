"""One registry per kind: names, Flower's spellings, import paths and the decorators."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.serverapp.strategy import FedAdam, FedTrimmedAvg

import fedsim
from fedsim import registry
from fedsim.config import Scenario, ScenarioError
from fedsim.models import MODELS, ModelError, build_model
from fedsim.strategies import build_strategy
from tests.conftest import small_scenario
from tests.fixtures import nets
from tests.fixtures.strategies import DampedFedAvg

NETS = "tests.fixtures.nets"
BLOBS = "tests.fixtures.data:load_blobs"
DAMPED = "tests.fixtures.strategies:DampedFedAvg"


def user_scenario(**overrides: Any) -> dict[str, Any]:
    """A scenario dict whose model, data and strategy are the fixtures, by import path."""
    raw: dict[str, Any] = {
        "name": "user",
        "seed": 1,
        "rounds": 2,
        "population": 6,
        "sampling": {"clients_per_round": 4},
        "model": {"name": f"{NETS}:make_net", "hidden": 8},
        "data": {"name": BLOBS, "options": {"examples": 600}},
        "strategy": {"name": DAMPED, "options": {"damping": 0.8}},
        "train": {"lr": 0.1, "batch_size": 16},
        "backend": {"workers": 2},
    }
    for key, value in overrides.items():
        node = raw
        *path, last = key.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.fixture
def clean_registries() -> Iterator[None]:
    """User entries registered by a test are forgotten after it (other tests list names)."""
    before = {
        r.kind: set(r.names()) for r in (registry.MODELS, registry.DATASETS, registry.STRATEGIES)
    }
    yield
    for reg in (registry.MODELS, registry.DATASETS, registry.STRATEGIES):
        for name in set(reg.names()) - before[reg.kind]:
            reg.unregister(name)


# ---------------------------------------------------------------- names


def test_the_registries_hold_the_names_the_schema_listed() -> None:
    # The Literal lists config.py had, in their order (error messages list them so).
    assert registry.DATASETS.names() == [
        "digits", "shakespeare", "synthetic", "mnist1d", "mnist",
        "fashion_mnist", "cifar10", "femnist", "hub",
    ]  # fmt: skip
    assert registry.PARTITIONS.names() == [
        "iid", "dirichlet", "natural", "pathological", "shard",
        "linear", "square", "exponential", "size",
    ]  # fmt: skip
    assert set(registry.STRATEGIES.names()) == {
        "fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi", "qfedavg",
        "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "scaffold", "fednova",
        "feddyn",
    }  # fmt: skip
    assert registry.OBJECTIVES.names() == ["erm", "fedprox", "scaffold", "feddyn"]
    assert registry.DATASETS.info("cifar10")["input_shape"] == (3, 32, 32)
    assert registry.DATASETS.info("femnist")["num_classes"] == 62


@pytest.mark.parametrize(
    ("spelling", "cls"),
    [("FedAdam", FedAdam), ("FedTrimmedAvg", FedTrimmedAvg), ("fedadam", FedAdam)],
)
def test_strategy_names_as_flower_spells_them(spelling: str, cls: type) -> None:
    # Before: "FedAdam" was refused (the Literal held lower-case names only).
    sc = small_scenario(strategy__name=spelling, dp__mode="off")
    assert sc.strategy.name == cls.__name__.lower()  # recorded as fedsim's name
    assert type(build_strategy(sc)) is cls


def test_model_names_stay_case_sensitive_with_a_hint() -> None:
    with pytest.raises(ScenarioError) as info:
        small_scenario(model__name="CNN")
    assert "model.name = 'CNN'" in str(info.value) and "did you mean 'cnn'?" in str(info.value)


def test_a_dotted_name_is_told_how_an_import_path_is_written() -> None:
    with pytest.raises(ScenarioError, match="an import path is written 'package.module:attr"):
        small_scenario(model__name="mypkg.nets.make_net")
    with pytest.raises(ScenarioError, match="model.name = 'mypkg:': not an import path"):
        small_scenario(model__name="mypkg:")


def test_the_registry_views_are_read_only_and_say_what_works() -> None:
    assert MODELS["cnn"] is registry.MODELS.load("cnn")
    with pytest.raises(TypeError, match=r"fedsim.register_model\('mine'\)"):
        MODELS["mine"] = nets.make_net  # type: ignore[index]


# ---------------------------------------------------------------- import paths


def test_import_paths_validate_and_are_recorded(tmp_path: Path) -> None:
    sc = Scenario.from_dict(user_scenario(), before_run=True)
    assert (sc.model.name, sc.data.name, sc.strategy.name) == (f"{NETS}:make_net", BLOBS, DAMPED)
    path = tmp_path / "scenario.toml"
    path.write_text(sc.to_toml())
    again = Scenario.from_toml(path, before_run=True)  # what resume reads
    assert again.fingerprint() == sc.fingerprint()
    strategy = build_strategy(sc)
    assert type(strategy) is DampedFedAvg and strategy.damping == 0.8
    assert strategy.min_train_nodes == 4  # fedsim's sampling reached the subclass


def test_strategy_options_are_checked_against_the_constructor() -> None:
    raw = user_scenario(strategy__options={"damping": "strong", "dampng": 0.5})
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw)
    assert info.value.problems == [
        "strategy.options.damping = 'strong': expected a number like 1.0",
        "strategy.options.dampng: not an option of DampedFedAvg; allowed ['damping']",
    ]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("model__name", "tests.fixtures.nope:make_net", "cannot import 'tests.fixtures.nope'"),
        ("model__name", f"{NETS}:make_nett", f"module '{NETS}' has no attribute 'make_nett'"),
        ("data__name", "nopkg.data:load", "No module named 'nopkg'; Python looked in"),
        ("strategy__name", "tests.fixtures.strategies:NotAStrategy", "is not a subclass of"),
    ],
)
def test_a_user_component_that_does_not_import_is_named_before_the_run(
    field: str, value: str, expected: str
) -> None:
    raw = user_scenario(**{field: value})
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw, before_run=True)  # what fedsim check / run do
    section = field.split("__")[0]
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(f"{section}.name = {value!r}: ")
    assert expected in info.value.problems[0]
    # A finished run's scenario stays readable where the user's code is not installed.
    assert Scenario.from_dict(raw).model_dump()[section]["name"] == value


def test_a_builder_returning_no_module_or_raising_is_reported_at_check() -> None:
    with pytest.raises(ScenarioError, match="returned str, not a torch.nn.Module"):
        small_scenario(model={"name": f"{NETS}:not_a_model"})
    with pytest.raises(ModelError, match="does not take option.*width.*hidden .default 8."):
        build_model(f"{NETS}:exploding_net", input_shape=(4,), num_classes=2, width=3)


def test_model_options_are_checked_even_when_the_data_shape_is_unknown() -> None:
    # A user loader's shape is known once it has run; the option names are not.
    raw = user_scenario(model={"name": f"{NETS}:make_net", "width": 3})
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw)
    assert info.value.problems == [
        f"model: model '{NETS}:make_net' does not take option(s) width; it takes hidden "
        "(default 16)"
    ]


def test_a_user_model_by_path_builds_with_its_options() -> None:
    model = build_model(f"{NETS}:make_net", input_shape=(1, 8, 8), num_classes=10, hidden=5)
    assert [tuple(p.shape) for p in model.parameters()] == [(5, 64), (5,), (10, 5), (10,)]
    sc = small_scenario(model={"name": f"{NETS}:make_net", "hidden": 5})  # digits, DP on
    assert sc.model.options() == {"hidden": 5}


# ---------------------------------------------------------------- decorators


def test_decorators_register_under_a_name_recorded_as_the_import_path(
    clean_registries: None,
) -> None:
    assert fedsim.register_model("tinynet")(nets.make_net) is nets.make_net
    fedsim.register_strategy("damped", user_dp=True)(DampedFedAvg)
    sc = small_scenario(
        model={"name": "tinynet", "hidden": 4}, strategy__name="Damped", dp__mode="off"
    )
    # Workers never ran the decorator: they get the path.
    assert sc.model.name == f"{NETS}:make_net" and sc.strategy.name == DAMPED
    assert "tinynet" in MODELS and "damped" in fedsim.strategies.STRATEGIES
    user = small_scenario(strategy__name="damped", dp__mode="user")  # user_dp declared
    assert type(build_strategy(user).inner) is DampedFedAvg


def test_decorators_refuse_what_workers_could_not_import(clean_registries: None) -> None:
    with pytest.raises(registry.RegistryError, match="'cnn' is a built-in model"):
        fedsim.register_model("cnn")(nets.make_net)
    fedsim.register_model("tinynet")(nets.make_net)
    fedsim.register_model("tinynet")(nets.make_net)  # a worker re-running it: fine
    with pytest.raises(registry.RegistryError, match="already registered for"):
        fedsim.register_model("tinynet")(nets.exploding_net)

    def local(input_shape: Any, num_classes: int) -> Any:
        return None

    with pytest.raises(registry.RegistryError, match="defined inside a function"):
        fedsim.register_model("local")(local)
    with pytest.raises(registry.RegistryError, match="not a subclass"):
        fedsim.register_strategy("nope")(nets.Exploding)
    with pytest.raises(registry.RegistryError, match="a ':' would read as an import path"):
        fedsim.register_dataset("a:b")(nets.make_net)


def test_a_script_registers_under_its_module_name_and_is_not_run_twice(tmp_path: Path) -> None:
    script = tmp_path / "my_experiment.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import fedsim
            from fedsim import registry

            RUNS = getattr(sys.modules.get("my_experiment"), "RUNS", 0) + 1

            @fedsim.register_model("scriptnet")
            def scriptnet(input_shape, num_classes):
                return None

            if __name__ == "__main__":
                assert registry.MODELS.lookup("scriptnet").target == "my_experiment:scriptnet"
                assert registry.load_target("my_experiment:scriptnet") is scriptnet
                assert RUNS == 1
                print("ok")
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_interactive_definitions_are_refused_with_the_way_out() -> None:
    code = "import fedsim\ndef f(input_shape, num_classes): pass\nfedsim.register_model('f')(f)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "interactive session" in out.stderr and "move it into a .py module" in out.stderr


def test_a_module_starting_a_run_on_import_is_refused(tmp_path: Path) -> None:
    (tmp_path / "greedy.py").write_text("import fedsim\nfedsim.run(None)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(registry.RegistryError, match="starts a run when it is imported"):
            registry.load_target("greedy:anything")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("greedy", None)


def test_workers_get_the_working_directory_on_their_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "/opt/lib"])
    assert registry.worker_sys_path() == [str(tmp_path), "/opt/lib"]
    monkeypatch.setattr(sys, "path", ["/opt/lib"])
    assert registry.worker_sys_path() == ["/opt/lib", str(tmp_path)]


def test_user_components_by_path_train_above_chance_in_process(
    tmp_path: Path, flower_run_context: Any
) -> None:
    # The cohort handler rebuilds model and data from the scenario's import paths, as a
    # Ray worker does (tests/integration/test_user_components.py runs it on Ray).
    from fedsim.cli.progress import RunProgress
    from fedsim.engine.simulation import ServerRun, _server_loop
    from fedsim.launch import client_side
    from fedsim.rundir import RunDir
    from tests.test_grid import InProcessGrid

    sc = Scenario.from_dict(user_scenario(), before_run=True)
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    state = ServerRun(sc, rundir, RunProgress(sc, enabled=False), clients=client_side())
    try:
        _server_loop(InProcessGrid(nodes=8), sc, state)
    finally:
        state.close()
    assert [m["clients_trained"] for m in state.metrics] == [4, 4]
    assert state.metrics[-1]["accuracy"] > 0.6  # 4 classes: chance is 0.25
