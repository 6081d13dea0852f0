"""Random command lines never escape the run directory.

Hypothesis drives `fedsim run / resume / audit / check / results` with random scenario
tables, names, `--out` paths, `--overwrite` and `--set` strings, in a sandbox that
holds things a user would hate to lose: a directory that is not a run, a finished run,
plain files beside them, and a folder outside the working directory. After every
command: the exit code is one of 0 (done), 1 (run failed, reason shown), 2 (refused)
or 130 (interrupted); nothing outside the command's own run directory was written
or deleted; nothing that is not a fedsim run was deleted.

Scenarios that pass validation name a Ray cluster on a closed loopback port, so the
command is refused (exit 2) at the cluster check instead of training: the fuzzing
covers every path and validation rule without starting Ray once per example. The
real-Ray half (random --out and --overwrite over real runs) is in
tests/integration/test_cli_fuzz_runs.py.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim.cli.commands import main
from tests.report.test_report_html import make_run_dir

ALLOWED_EXITS = {0, 1, 2, 130}

# A closed port on loopback: connecting is refused at once.
CLOSED = "127.0.0.1:9"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under root (links not followed)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st_ = path.lstat()
            out[str(path.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def base_scenario() -> dict[str, Any]:
    return {
        "name": "fuzz",
        "rounds": 1,
        "population": 4,
        "sampling": {"clients_per_round": 2},
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "logreg"},
        "dp": {"mode": "off"},
        "backend": {"workers": 1, "ray_address": CLOSED, "connect_timeout": 1},
    }


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def to_toml(raw: dict[str, Any]) -> str:
    top = [f"{k} = {toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
        for k, v in raw.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


names = st.one_of(
    st.sampled_from(["", ".", "..", "../x", "../../x", "/tmp", "/", "a/b", "ok", "ok.2", "q[/]"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-_./[]~$ ", max_size=12),
)
outs = st.one_of(
    st.none(),
    st.sampled_from(
        ["..", ".", "", "notrun", "finished", "keep.txt", "../outside", "runs", "new/deep"]
    ),
    st.text(alphabet=string.ascii_letters + "./-_", min_size=1, max_size=10),
)
set_items = st.one_of(
    st.sampled_from(
        [
            "rounds=0",
            "rounds=1",
            "train.lr=inf",
            "dp.mode=sample",
            "dp.noise_multiplier=-0.0",
            "population=10000000",
            "name=..",
            "name=/tmp",
            "strategy.name=fedavgg",
            "model.name=cnnn",
            "a.b.c",
            "rounds=2\nname=..",
            "backend.ray_address=none",
        ]
    ),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.sampled_from(["rounds", "seed", "train.lr", "name", "sampling.clients_per_round"]),
        st.text(alphabet=string.printable, max_size=6),
    ),
)
mutations = st.dictionaries(
    st.sampled_from(["rounds", "population", "seed", "name", "extra_key"]),
    st.one_of(st.integers(-3, 10**7), st.floats(allow_nan=True), st.text(max_size=5)),
    max_size=3,
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A working directory with a non-run folder, a finished run and plain files."""
    work = tmp_path / "work"
    (work / "notrun").mkdir(parents=True)
    (work / "notrun" / "thesis.tex").write_text("precious\n")
    (work / "keep.txt").write_text("keep me\n")
    make_run_dir(work / "finished")
    (work / "finished" / "notes.md").write_text("a user's file inside a run\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "data.bin").write_bytes(b"\0" * 16)
    return tmp_path


def _run_dir_of(args: list[str], work: Path) -> Path | None:
    """The directory this command may write: --out, or runs/NAME for `run`."""
    if "--out" in args:
        return (work / args[args.index("--out") + 1]).resolve()
    if args and args[0] == "run":
        return (work / "runs").resolve()
    return None


def _check_nothing_escaped(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], allowed: Path | None,
    root: Path,
) -> None:
    def inside(rel: str) -> bool:
        if allowed is None:
            return False
        return (root / rel).resolve().is_relative_to(allowed)

    removed = [p for p in before if p not in after]
    changed = [p for p in before if p in after and after[p] != before[p] and not inside(p)]
    added = [p for p in after if p not in before and not inside(p)]
    assert not changed, f"changed outside the run directory: {changed}"
    assert not added, f"written outside the run directory: {added}"
    # A run directory may lose only fedsim's own files (--overwrite of a fedsim run).
    from fedsim.rundir import OWN_FILES, OWN_FOLDERS

    def fedsim_own(rel: str) -> bool:
        parts = Path(rel).parts
        return inside(rel) and (
            parts[-1].removesuffix(".tmp") in OWN_FILES
            or any(p in OWN_FOLDERS for p in parts[:-1])
        )

    lost = [p for p in removed if not fedsim_own(p)]
    assert not lost, f"deleted: {lost}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(["run", "check", "resume", "audit", "results"]),
    name=names,
    mutation=mutations,
    out=outs,
    overwrite=st.booleans(),
    sets=st.lists(set_items, max_size=3),
)
def test_random_command_lines_stay_inside_their_run_directory(
    sandbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    name: str,
    mutation: dict[str, Any],
    out: str | None,
    overwrite: bool,
    sets: list[str],
) -> None:
    work = sandbox / "work"
    monkeypatch.chdir(work)
    raw = base_scenario() | mutation
    raw["name"] = name
    (work / "fuzz.toml").write_text(to_toml(raw), encoding="utf-8")
    if command in ("run", "check"):
        args = [command, "fuzz.toml"]
        for item in sets:
            args += ["--set", item]
        if command == "run":
            if out is not None:
                args += ["--out", out]
            if overwrite:
                args.append("--overwrite")
            args.append("--quiet")
    else:
        args = [command, out if out is not None else "finished"]
    before = tree(sandbox)
    code = main(args)
    assert code in ALLOWED_EXITS, (args, code)
    # The cluster check refuses every run that passed validation.
    if command == "run":
        assert code == 2, args
    _check_nothing_escaped(before, tree(sandbox), _run_dir_of(args, work), sandbox)
    # What a user keeps is always there, byte for byte.
    assert (work / "notrun" / "thesis.tex").read_text() == "precious\n"
    assert (work / "keep.txt").read_text() == "keep me\n"
    assert (sandbox / "outside" / "data.bin").read_bytes() == b"\0" * 16
    assert (work / "finished" / "notes.md").is_file()
