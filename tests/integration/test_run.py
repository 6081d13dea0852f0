"""Real runs: Flower's simulation engine starts Ray workers that train DP clients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fedsim.launch import run
from fedsim.privacy import epsilon_of_history
from fedsim.rundir import read_jsonl
from tests.conftest import small_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for k, workers in (("auto", 2), (1, 2), ("auto", 1)):
        sc = small_scenario(
            backend__clients_per_message=k,
            backend__workers=workers,
            faults__fail_probability=0.2,
            evaluation__federated_fraction=0.5,
        )
        out[f"{k}" if workers == 2 else f"{k}-w{workers}"] = run(
            sc, base / f"k{k}-w{workers}", progress=False
        )
    return out


def test_run_directory_has_every_file(runs: dict) -> None:
    d: Path = runs["auto"].run_dir
    for name in (
        "scenario.toml",
        "metrics.jsonl",
        "privacy_ledger.jsonl",
        "summary.json",
        "model.pt",
        "plots/accuracy.png",
        "plots/epsilon.png",
    ):
        assert (d / name).is_file(), name
    assert (d / "checkpoints").is_dir()
    state = torch.load(d / "model.pt", weights_only=True)
    assert set(state) == set(runs["auto"].state_dict)
    metrics = read_jsonl(d / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        assert 0.0 <= m["accuracy"] <= 1.0 and m["loss"] > 0
        assert m["clients_trained"] + m["clients_failed"] == 4
        assert m["fed_accuracy"] is not None
    summary = json.loads((d / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["dp_mode"] == "sample"
    assert set(summary["versions"]) >= {"fedsim", "flwr", "torch", "opacus", "ray"}


def test_ledger_composes_like_the_accountant(runs: dict) -> None:
    d: Path = runs["auto"].run_dir
    lines = read_jsonl(d / "privacy_ledger.jsonl")
    assert len(lines) == 8  # 4 clients x 2 rounds, failed clients included
    history: dict[int, list[tuple[float, float, int]]] = {}
    for line in lines:
        history.setdefault(line["client"], []).append(
            (line["noise_multiplier"], line["sample_rate"], line["steps"])
        )
        want = epsilon_of_history(history[line["client"]], delta=1e-5, accountant="rdp")
        assert math.isfinite(line["epsilon"]) and line["epsilon"] > 0
        assert line["epsilon"] == pytest.approx(want, rel=1e-9)
        assert "mismatch" not in line
    summary = runs["auto"].summary
    population_eps = [0.0] * 6
    for line in lines:
        population_eps[line["client"]] = line["epsilon"]
    assert summary["epsilon"]["max"] == pytest.approx(max(population_eps))
    assert summary["epsilon"]["min"] == pytest.approx(min(population_eps))


def test_failed_clients_recorded_with_their_error(runs: dict) -> None:
    d: Path = runs["auto"].run_dir
    metrics = read_jsonl(d / "metrics.jsonl")
    failures = [f for m in metrics for f in m["failures"]]
    ledger_failed = [x for x in read_jsonl(d / "privacy_ledger.jsonl") if x["status"] == "failed"]
    assert len(failures) == sum(m["clients_failed"] for m in metrics) == len(ledger_failed) > 0
    assert all("injected failure" in f["error"] for f in failures)


def test_k1_and_auto_runs_end_with_identical_weights(runs: dict) -> None:
    a = runs["auto"].state_dict
    for other in ("1", "auto-w1"):  # K = 1, and one worker instead of two
        b = runs[other].state_dict
        for key in a:
            assert torch.equal(a[key], b[key]), (other, key)
    la = (runs["auto"].run_dir / "privacy_ledger.jsonl").read_text()
    lb = (runs["1"].run_dir / "privacy_ledger.jsonl").read_text()
    assert la == lb
