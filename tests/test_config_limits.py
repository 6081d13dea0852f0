"""Bad sizes and values are refused by validation, before anything starts or is written."""

from __future__ import annotations

from typing import Any

import pytest

from fedsim.config import Scenario, ScenarioError

# A DP scenario in which every float field listed below is in use.
DP_BASE: dict[str, Any] = {"dp": {"mode": "sample", "noise_multiplier": 1.0}}

FLOAT_FIELDS = [
    "dp.noise_multiplier",
    "backend.cpus_per_worker",
    "train.lr",
    "dp.max_grad_norm",
    "backend.round_timeout",
    "dp.max_epsilon",
    "faults.round_deadline",
    "faults.speed_sigma",
    "data.alpha",
]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+inf"])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_non_finite_float_is_refused(field: str, value: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(DP_BASE, overrides=[f"{field}={value}"])
    text = str(info.value)
    assert f"{field} = " in text, text
    assert "finite" in text, text


def test_non_finite_float_in_toml_file(tmp_path: Any) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[train]\nlr = inf\n[data]\nalpha = nan\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    assert len(info.value.problems) == 2
    assert "train.lr = inf" in str(info.value) and "data.alpha = nan" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "strategy.options.eta=inf",
        "model.hidden=nan",
        "data.partition_options.alpha=-inf",
    ],
)
def test_non_finite_float_in_free_form_options_is_refused(override: str) -> None:
    raw = {"strategy": {"name": "fedadam"}, "data": {"partition_backend": "flwr"}}
    if override.startswith("data."):
        raw["data"]["partition"] = "dirichlet"
    key = override.partition("=")[0]
    with pytest.raises(ScenarioError, match=rf"{key} = .*finite"):
        Scenario.from_dict(raw, overrides=[override])


@pytest.mark.parametrize("mode", ["sample", "user"])
@pytest.mark.parametrize("noise", [0.0, -0.0])
def test_zero_noise_in_a_dp_mode_points_to_mode_off(mode: str, noise: float) -> None:
    raw = {"dp": {"mode": mode, "noise_multiplier": noise}}
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw, before_run=True)
    text = str(info.value)
    assert f"dp.noise_multiplier = {noise!r}" in text and 'dp.mode = "off"' in text, text
    # A finished run with zero noise still loads, so `fedsim audit` can report it.
    assert Scenario.from_dict(raw).dp.noise_multiplier == 0.0


def test_zero_noise_without_dp_is_fine() -> None:
    sc = Scenario.from_dict({"dp": {"mode": "off", "noise_multiplier": 0.0}}, before_run=True)
    assert sc.dp.noise_multiplier == 0.0


@pytest.mark.parametrize(
    "item", ["rounds=5\nseed=3", "name=abc\r\nrounds=9", "rounds=5\n", "dp.\nmode=off"]
)
def test_override_with_a_line_break_is_refused(item: str) -> None:
    # Before: TOML parsed "5\nseed=3" as 5 and dropped the rest without a word.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({}, overrides=[item])
    text = str(info.value)
    assert "line break" in text and "one key=value per --set" in text, text


def test_override_with_a_tab_in_a_string_still_works() -> None:
    sc = Scenario.from_dict({}, overrides=['data.hub.subset="a\tb"'])
    assert sc.data.hub.subset == "a\tb"


def test_every_problem_is_reported_at_once() -> None:
    # Before: the bad strategy (a schema error) stopped validation; the model was never built.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(
            {
                "rounds": 0,
                "population": 10,
                "sampling": {"clients_per_round": 20},
                "strategy": {"name": "fedavgg"},
                "model": {"name": "cnnn"},
                "dp": {"mode": "sample", "noise_multiplier": 1.0},
            },
            overrides=["a.b.c", "train.lr=inf"],
        )
    text = str(info.value)
    for needle in (
        "--set 'a.b.c'",
        "rounds = 0",
        "train.lr = inf",
        "strategy.name = 'fedavgg'",
        "did you mean 'fedavg'?",
        "model.name = 'cnnn'",
        "did you mean 'cnn'?",
        "sampling.clients_per_round = 20: more than the population (10)",
    ):
        assert needle in text, (needle, text)
    assert len(info.value.problems) == 6, text


def test_a_check_of_an_invalid_section_is_not_run_on_its_default() -> None:
    # population is invalid: judging clients_per_round against the default (10) would be
    # a second, wrong problem.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({"population": 0, "sampling": {"clients_per_round": 20}})
    assert len(info.value.problems) == 1 and "population = 0" in str(info.value)
    # A bad data.name must not be replaced by digits and then fail the char_lstm check.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({"data": {"name": "shakespear"}, "model": {"name": "char_lstm"}})
    assert info.value.problems == [
        "data.name = 'shakespear': Input should be 'digits', 'shakespeare', 'synthetic', "
        "'mnist1d', 'mnist', 'fashion_mnist', 'cifar10', 'femnist' or 'hub'; "
        "did you mean 'shakespeare'?"
    ]


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("strategy.name=fedavgg", "fedavg"),
        ("strategy.name=fedadm", "fedadam"),
        ("data.name=cifar", "cifar10"),
        ("data.partition=dirichelt", "dirichlet"),
        ("model.name=mpl", "mlp"),
        ("train.optimizer=adma", "adam"),
    ],
)
def test_unknown_names_suggest_the_closest(override: str, suggestion: str) -> None:
    with pytest.raises(ScenarioError, match=rf"did you mean '{suggestion}'\?"):
        Scenario.from_dict({}, overrides=[override])


def test_no_suggestion_for_a_name_like_nothing() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({}, overrides=["strategy.name=zzzzzz"])
    assert "did you mean" not in str(info.value)


def test_population_larger_than_the_data_is_refused() -> None:
    # Before: digits with 10,000,000 clients failed only after Ray had started.
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({"population": 10_000_000})
    assert info.value.problems == [
        "population = 10000000: digits has 1437 training examples (data.test_fraction = 0.2); "
        "iid partitioning with at least min_partition_size = 2 examples per client allows "
        "population <= 718"
    ]
    assert Scenario.from_dict({"population": 718}).population == 718
    with pytest.raises(ScenarioError, match="population <= 1437"):
        Scenario.from_dict({"population": 1438, "data": {"min_partition_size": 0}})
    with pytest.raises(ScenarioError, match="mnist1d has 80 training examples"):
        Scenario.from_dict(
            {"population": 81, "data": {"name": "mnist1d", "mnist1d_samples": 100}},
            overrides=["model.name=cnn1d", "data.min_partition_size=1"],
        )


@pytest.mark.parametrize("test_fraction", [0.2, 0.1, 0.37])
def test_digits_train_size_matches_the_loader(test_fraction: float) -> None:
    from fedsim.data import load_digits
    from fedsim.validate import train_size

    sc = Scenario.from_dict({"data": {"test_fraction": test_fraction}})
    assert train_size(sc) == len(load_digits(seed=0, test_fraction=test_fraction).train)


@pytest.mark.parametrize(("samples", "test_fraction"), [(100, 0.2), (1234, 0.3), (57, 0.5)])
def test_mnist1d_train_size_matches_the_loader(samples: int, test_fraction: float) -> None:
    from fedsim.data import load_mnist1d
    from fedsim.validate import train_size

    raw = {
        "data": {"name": "mnist1d", "mnist1d_samples": samples, "test_fraction": test_fraction},
        "model": {"name": "cnn1d"},
    }
    sc = Scenario.from_dict(raw)
    bundle = load_mnist1d(seed=0, num_samples=samples, test_fraction=test_fraction)
    assert train_size(sc) == len(bundle.train)


@pytest.mark.parametrize(
    ("partition", "min_size"), [("iid", 0), ("iid", 1), ("iid", 7), ("dirichlet", 3)]
)
def test_client_capacity_is_the_partitioners_limit(partition: str, min_size: int) -> None:
    import numpy as np

    from fedsim.data import ArrayDataset, DataError, partition_indices
    from fedsim.validate import client_capacity

    n = 100
    labels = np.arange(n) % 10
    dataset = ArrayDataset(np.zeros((n, 1), np.float32), labels)
    raw = {"data": {"partition": partition, "min_partition_size": min_size, "alpha": 1000.0}}
    most, _ = client_capacity(Scenario.from_dict(raw), n)
    kwargs = {"method": partition, "seed": 0, "alpha": 1000.0, "min_size": min_size}
    if partition == "iid":  # dirichlet draws may miss at the bound; the bound is exact
        assert len(partition_indices(dataset, num_clients=most, **kwargs)) == most
    with pytest.raises(DataError, match="exceeds|fewer than"):
        partition_indices(dataset, num_clients=most + 1, **kwargs)


def _synthetic(population: int, **backend: Any) -> Scenario:
    raw = {
        "population": population,
        "data": {"name": "synthetic", "partition": "natural"},
        "model": {"name": "logreg"},
        "backend": backend,
    }
    return Scenario.from_dict(raw)


def test_synthetic_memory_estimate_is_close_to_the_real_data() -> None:
    from fedsim.data import load_synthetic
    from fedsim.validate import data_bytes

    sc = _synthetic(400)
    estimate, field = data_bytes(sc)
    bundle = load_synthetic(seed=0, num_clients=400)
    held = 0
    for split in (bundle.train, bundle.test):
        x, y = split.batch(list(range(len(split))))
        held += x.numel() * x.element_size() + y.numel() * y.element_size()
    # A peak estimate: above what the data finally holds, not wildly so.
    assert field == "population" and held <= estimate <= 6 * held, (held, estimate)


def test_memory_beyond_the_machine_is_refused_naming_the_field() -> None:
    from fedsim.validate import GIB, check_memory

    # Before: population = 10,000,000 of synthetic data went to every process.
    (problem,) = check_memory(_synthetic(10_000_000), available=16 * GIB)
    assert problem.startswith("population = 10000000: synthetic data takes about ")
    assert "3 processes (the server and 2 backend.workers" in problem
    assert "16.0 GiB available" in problem
    allowed = int(problem.rsplit("allowed population <= ", 1)[1].split()[0])
    assert 1_000 < allowed < 10_000_000
    assert check_memory(_synthetic(allowed), available=16 * GIB) == []
    assert check_memory(_synthetic(allowed * 2), available=16 * GIB) != []


def test_workers_that_do_not_fit_are_refused() -> None:
    from fedsim.validate import GIB, check_memory

    sc = Scenario.from_dict({"backend": {"workers": 64}})  # digits: ~0.4 GiB a process
    (problem,) = check_memory(sc, available=8 * GIB)
    assert problem.startswith("backend.workers = 64: digits data takes about 0.00 GiB")
    assert "65 processes" in problem and "allowed backend.workers <= 19" in problem
    assert check_memory(sc, available=64 * GIB) == []
    # With a Ray cluster the workers run elsewhere: only the server is counted here.
    remote = Scenario.from_dict({"backend": {"workers": 64, "ray_address": "10.0.0.1:6379"}})
    assert check_memory(remote, available=1 * GIB) == []


def _mnist_files(root: Any) -> None:
    import struct

    root.mkdir(parents=True, exist_ok=True)
    for stem, shape in [
        ("train-images-idx3-ubyte", (2, 28, 28)),
        ("train-labels-idx1-ubyte", (2,)),
        ("t10k-images-idx3-ubyte", (1, 28, 28)),
        ("t10k-labels-idx1-ubyte", (1,)),
    ]:
        header = struct.pack(">HBB", 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
        size = 1
        for d in shape:
            size *= d
        (root / stem).write_bytes(header + bytes(size))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "is not a directory"),
        ("fashion_mnist", "is not a directory"),
        ("cifar10", "is not a directory"),
        ("femnist", "missing directory"),
        ("hub", "does not exist"),
    ],
)
def test_missing_data_root_is_found_by_validation(tmp_path: Any, name: str, expected: str) -> None:
    # Before: found only by the loader, after Ray had started.
    missing = tmp_path / "nowhere"
    raw = {"data": {"name": name, "root": str(missing)}}
    if name == "femnist":
        raw["data"]["partition"] = "natural"
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict(raw, before_run=True)
    assert f"data.root = {str(missing)!r}" in str(info.value) and expected in str(info.value)
    # Validation without the machine checks (auditing a run elsewhere) accepts it.
    Scenario.from_dict(raw)


def test_data_root_missing_a_file_names_it(tmp_path: Any) -> None:
    _mnist_files(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    raw = {"data": {"name": "mnist", "root": str(tmp_path / "mnist")}}
    with pytest.raises(ScenarioError, match="missing IDX file for the test labels"):
        Scenario.from_dict(raw, before_run=True)
    _mnist_files(tmp_path / "mnist")
    assert Scenario.from_dict(raw, before_run=True).data.root == str(tmp_path / "mnist")


def test_cifar_root_missing_a_batch_names_it(tmp_path: Any) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"")
    raw = {"data": {"name": "cifar10", "root": str(tmp_path)}}
    with pytest.raises(ScenarioError, match="missing batch file .*data_batch_2"):
        Scenario.from_dict(raw, before_run=True)


def test_run_refuses_before_creating_anything(tmp_path: Any, capsys: Any) -> None:
    from fedsim.cli.commands import main

    path = tmp_path / "big.toml"
    path.write_text(
        'population = 10000000\n[data]\nname = "synthetic"\npartition = "natural"\n'
        '[model]\nname = "logreg"\n[backend]\nworkers = 1\n'
    )
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert not out.exists()
    assert "population = 10000000" in " ".join(capsys.readouterr().err.split())
    missing = tmp_path / "nothing"
    assert main(["check", str(path), "--set", "population=5", "--set", "data.name=mnist",
                 "--set", f"data.root={missing}", "--set", "data.partition=iid",
                 "--set", "model.name=cnn"]) == 2  # fmt: skip
    assert "is not a directory" in " ".join(capsys.readouterr().err.split())


def test_fedsim_check_refuses_negative_zero_noise(tmp_path: Any, capsys: Any) -> None:
    from fedsim.cli.commands import main

    path = tmp_path / "dp.toml"
    path.write_text('[dp]\nmode = "sample"\nnoise_multiplier = -0.0\n')
    assert main(["check", str(path)]) == 2
    assert 'set dp.mode = "off"' in " ".join(capsys.readouterr().err.split())
