"""A user's own model, data and strategy on real Ray workers; clients that all fail.

The runs go through the commands a user types (`fedsim run`, `python script.py`),
from the repository root: the Ray workers find `tests.fixtures` through the
working directory, and the script's components through the script's directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsim.config import Scenario
from fedsim.rundir import read_jsonl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEDSIM = str(Path(sys.executable).with_name("fedsim"))

SCENARIO = """
name = "user_components"
seed = 1
rounds = 2
population = 6

[sampling]
clients_per_round = 4

[data]
name = "tests.fixtures.data:load_blobs"
options = {{ examples = 600 }}

[model]
name = "{model}"
hidden = 8

[strategy]
name = "tests.fixtures.strategies:DampedFedAvg"
options = {{ damping = 0.8 }}

[train]
lr = 0.1
objective = "tests.fixtures.objectives:WeightDecay"

[dp]
mode = "sample"
noise_multiplier = 0.5

[backend]
workers = 2

[faults]
fail_probability = {fail}
"""


def fedsim_run(tmp_path: Path, name: str, model: str, fail: float = 0.0) -> tuple[int, str, Path]:
    toml = tmp_path / f"{name}.toml"
    toml.write_text(SCENARIO.format(model=model, fail=fail))
    out = tmp_path / name
    proc = subprocess.run(
        [FEDSIM, "run", str(toml), "--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    return proc.returncode, proc.stderr, out


def resume_after_a_kill(done: Path, killed: Path) -> None:
    """`fedsim resume` of the state a kill after round 1's checkpoint leaves ends with
    the uninterrupted run's weights: the workers rebuild the user's components."""
    shutil.copytree(done, killed)
    for name in ("summary.json", "model.pt", "checkpoints/round_00002.pt"):
        (killed / name).unlink()
    pointer = {"round": 1, "file": "round_00001.pt"}
    (killed / "checkpoints" / "latest.json").write_text(json.dumps(pointer) + "\n")
    proc = subprocess.run(
        [FEDSIM, "resume", str(killed), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["resumed_from_round"] == 1
    assert summary["accuracy"] > 0.5
    want = torch.load(done / "model.pt", weights_only=True)
    got = torch.load(killed / "model.pt", weights_only=True)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_user_components_by_import_path_and_by_decorator(tmp_path: Path) -> None:
    code, err, out = fedsim_run(tmp_path, "by_path", "tests.fixtures.nets:make_net")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["clients_trained"] == 8
    assert summary["accuracy"] > 0.5  # 4 classes: chance is 0.25
    # The run records the paths: resume (and the workers) rebuild the same components.
    again = Scenario.from_toml(out / "scenario.toml", before_run=True)
    assert again.strategy.name == "tests.fixtures.strategies:DampedFedAvg"
    assert again.train.objective == "tests.fixtures.objectives:WeightDecay"
    resume_after_a_kill(out, tmp_path / "killed")

    script = subprocess.run(
        [sys.executable, "scenarios/custom_components.py", "--rounds", "2", "--quiet"]
        + ["--out", str(tmp_path / "by_decorator")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert script.returncode == 0, script.stderr
    summary = json.loads((tmp_path / "by_decorator" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["clients_failed"] == 0
    assert summary["accuracy"] > 0.5
    recorded = (tmp_path / "by_decorator" / "scenario.toml").read_text()
    assert 'name = "custom_components:tinynet"' in recorded
    assert 'objective = "custom_components:SmallWeights"' in recorded


def test_clients_that_all_raise_fail_the_run_and_injected_failures_do_not(
    tmp_path: Path,
) -> None:
    code, err, out = fedsim_run(tmp_path, "exploding", "tests.fixtures.nets:exploding_net")
    assert code == 1, err
    reason = [line for line in err.splitlines() if line.startswith("run failed:")]
    assert len(reason) == 1, err
    assert "round 1: every client that trained failed with an error (4 of 4)" in reason[0]
    assert "RuntimeError: exploding net: forward refuses to run" in reason[0]
    assert "Traceback" not in err and "\x1b" not in err  # shown once, in one line
    assert "in forward" in (out / "errors.log").read_text()
    assert all("\n" not in x["error"] for x in read_jsonl(out / "privacy_ledger.jsonl"))

    code, err, out = fedsim_run(tmp_path, "injected", "tests.fixtures.nets:make_net", fail=1.0)
    assert code == 0, err
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["clients_failed"] for m in metrics] == [4, 4]
    assert json.loads((out / "summary.json").read_text())["clients_failed"] == 8
