"""Which heavy libraries each `fedsim` command imports: only run and resume may need
Flower and Ray; reading a run's files or refusing a bad scenario needs none of them.

Each command runs in a fresh interpreter (this test process has imported them all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.test_report_html import make_run_dir

HEAVY = ("flwr", "ray", "torch", "opacus")

_PROBE = f"""
import json, sys
from fedsim.cli.commands import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help exits through argparse
    code = exc.code
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def _imports(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Exit code of `fedsim ARGS` and the heavy libraries it left in sys.modules."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    probe = json.loads(last)
    return probe["code"], probe["heavy"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    make_run_dir(root / "dp")
    make_run_dir(root / "off", noise=None)
    (root / "bad.toml").write_text("rounds = -1\n", encoding="utf-8")
    (root / "bad_toml.toml").write_text("rounds = = 3\n", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["check", "{root}/bad.toml"], 2),
        (["run", "{root}/bad.toml"], 2),
        (["run", "{root}/bad_toml.toml"], 2),
        (["check", "{root}/missing.toml"], 2),
        (["results", "{root}/dp", "{root}/off"], 0),
        (["results", "{root}/missing"], 2),
        (["report", "{root}/dp", "{root}/off", "--out", "{root}/rep"], 0),
        (["audit", "{root}/missing"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_command_imports_no_flower_ray_torch_opacus(runs: Path, args: list[str], code: int) -> None:
    argv = [a.format(root=runs) for a in args]
    got_code, heavy = _imports(argv, runs)
    assert got_code == code
    assert heavy == [], f"fedsim {' '.join(args)} imported {heavy}"


# `check` of a valid scenario of built-in components judges the model and the strategy
# from the registry's facts (fedsim.validate.model_is_known / strategy_is_known).
def test_check_of_a_valid_scenario_imports_no_flower_or_ray(runs: Path) -> None:
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.toml"
    code, heavy = _imports(["check", str(scenario)], runs)
    assert code == 0
    assert not {"flwr", "ray"} & set(heavy)


def test_check_of_a_valid_scenario_imports_no_torch_or_opacus(runs: Path) -> None:
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.toml"
    code, heavy = _imports(["check", str(scenario)], runs)
    assert code == 0
    assert not {"torch", "opacus"} & set(heavy)


def test_check_of_a_user_model_still_builds_it(runs: Path) -> None:
    # A model by import path is judged by building it: that needs torch (and Opacus, DP).
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.toml"
    model = "--set", "model.name='tests.fixtures.nets:make_net'"
    code, heavy = _imports(["check", str(scenario), *model], Path(__file__).parents[1])
    assert code == 0
    assert {"torch", "opacus"} <= set(heavy)


def test_audit_of_a_dp_off_run_imports_nothing_heavy(runs: Path) -> None:
    code, heavy = _imports(["audit", str(runs / "off")], runs)
    assert code == 0
    assert heavy == []


def test_rdp_orders_are_opacus_defaults() -> None:
    # fedsim.privacy writes opacus' default orders out instead of importing opacus for them.
    from opacus.accountants import RDPAccountant

    from fedsim.privacy.accountants import RDP_ORDERS

    assert RDP_ORDERS == tuple(float(a) for a in RDPAccountant.DEFAULT_ALPHAS)


def test_default_audit_of_a_dp_run_imports_nothing_heavy(runs: Path) -> None:
    # rdp, prv (opacus' accountants loaded without torch) and pld (dp-accounting).
    code, heavy = _imports(["audit", str(runs / "dp")], runs)
    assert code in (0, 1)  # the stand-in ledger's epsilons are not the accountant's
    assert heavy == []


def test_rdp_audit_of_a_dp_run_imports_nothing_heavy(runs: Path) -> None:
    # opacus' RDP maths is numpy and scipy: loaded without opacus' package (torch).
    code, heavy = _imports(["audit", str(runs / "dp"), "--accountants", "rdp"], runs)
    assert code in (0, 1)  # the stand-in ledger's epsilons are not the accountant's
    assert heavy == []


def test_the_cli_benchmark_reads_the_same_from_importtime() -> None:
    # benchmarks/cli.py reports heavy imports from `python -X importtime` output.
    from benchmarks import cli

    heavy, seconds = cli.imports("--help")
    assert heavy == [] and seconds > 0
    scenario = str(cli.QUICKSTART)
    heavy, _ = cli.imports("check", scenario, "--set", "model.name='tests.fixtures.nets:make_net'")
    assert {"torch", "opacus"} <= set(heavy)
