"""CLI exit codes and messages: bad input is exit 2 with no traceback, before Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedsim.cli.commands import main


def test_bad_scenario_exits_2_naming_fields(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text("rounds = -1\n[dp]\nmode = 'loud'\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "rounds = -1" in err and "dp.mode = 'loud'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_bad_override_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[1]
    code = main(
        [
            "run",
            str(root / "scenarios/quickstart.toml"),
            "--set",
            "sampling.fraction=2",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "sampling.fraction = 2" in capsys.readouterr().err


def test_existing_run_dir_refused_and_kept(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 1}\n')
    code = main(["run", str(root / "scenarios/quickstart.toml"), "--out", str(out)])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"round": 1}\n'


def test_unreachable_cluster_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[1]
    code = main(
        [
            "run",
            str(root / "scenarios/quickstart.toml"),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "backend.ray_address='127.0.0.1:1'",
            "--set",
            "backend.connect_timeout=2",
        ]
    )
    assert code == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


def test_check_prints_resolved_scenario() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedsim.cli",
            "check",
            str(root / "scenarios/quickstart.toml"),
            "--set",
            "rounds=3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rounds = 3" in proc.stdout and "[dp]" in proc.stdout
