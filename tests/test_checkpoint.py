"""Checkpoints: atomic, refused when corrupt or from another scenario, state round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim.cli.commands import main
from fedsim.engine.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_latest,
    save_checkpoint,
    scenario_hash,
    truncate_lines,
)
from fedsim.rundir import RunDir
from tests.conftest import small_scenario


def ckpt(h: str) -> Checkpoint:
    return Checkpoint(
        round=3,
        weights={"w": torch.arange(4.0)},
        strategy_state={"m_t": {"kind": "ndict", "value": {"w": torch.ones(4)}}},
        ledger_lines=5,
        metrics_lines=3,
        scenario_hash=h,
    )


def test_round_trip(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, ckpt("abc"))
    got = load_latest(tmp_path, expected_hash="abc")
    assert got is not None and got.round == 3 and torch.equal(got.weights["w"], torch.arange(4.0))
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed


def test_other_scenario_is_refused_with_the_difference(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, ckpt(scenario_hash("one")))
    with pytest.raises(CheckpointError, match="different scenario"):
        load_latest(tmp_path, expected_hash=scenario_hash("two"))


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, ckpt("abc"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_latest(tmp_path, expected_hash="abc")


def test_truncate_lines_keeps_prefix_and_refuses_short_files(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text("a\nb\nc\n")
    truncate_lines(f, 2)
    assert f.read_text() == "a\nb\n"
    with pytest.raises(CheckpointError, match="expects at least 5"):
        truncate_lines(f, 5)


def test_resume_of_an_edited_run_exits_2_and_keeps_files(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    sc = small_scenario()
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    rundir.write_text(rundir.scenario, sc.to_toml().replace("rounds = 2", "rounds = 7"))
    save_checkpoint(rundir.checkpoints, ckpt(scenario_hash(sc.fingerprint())))
    rundir.metrics.write_text('{"round": 1}\n{"round": 2}\n{"round": 3}\n')
    rundir.unlock()  # create() locks the directory; resume must be able to take it
    assert main(["resume", str(rundir.path)]) == 2
    assert "different scenario" in capsys.readouterr().err
    assert rundir.metrics.read_text().count("\n") == 3  # nothing lost


def test_out_path_that_is_a_file_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "afile"
    target.write_text("keep me")
    root = Path(__file__).resolve().parents[1]
    assert main(["run", str(root / "scenarios/quickstart.toml"), "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"
