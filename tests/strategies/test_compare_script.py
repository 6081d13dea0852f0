"""scenarios/compare_strategies.py: table and plot from fake metrics (no runs)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

from rich.console import Console

from fedsim.config import Scenario

SCRIPT = Path(__file__).resolve().parents[2] / "scenarios" / "compare_strategies.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_strategies", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake(acc: list[float], worst: list[float | None]) -> list[dict]:
    return [
        {"round": r + 1, "accuracy": a, "fed_accuracy_worst10": w}
        for r, (a, w) in enumerate(zip(acc, worst, strict=True))
    ]


def test_summary_table_and_plot(tmp_path: Path) -> None:
    cs = load()
    runs = [
        cs.StrategyRun("fedavg", fake([0.3, 0.7, 0.82, 0.79], [0.0, 0.1, 0.2, 0.25]), 12.5),
        cs.StrategyRun("fedadam", fake([0.2, 0.5, 0.6], [None, 0.1, None]), 9.0),
    ]
    rows = [cs.summarize(r) for r in runs]
    assert rows[0] == {
        "strategy": "fedavg",
        "accuracy": 0.79,  # the final one, not the best
        "worst10": 0.25,
        "rounds_to_target": 3,
        "rounds": 4,
        "wall_seconds": 12.5,
    }
    assert rows[1]["rounds_to_target"] is None
    assert rows[1]["worst10"] is None  # last line had no federated evaluation
    out = io.StringIO()
    Console(file=out, width=120).print(cs.build_table(rows))
    text = out.getvalue()
    assert "fedavg" in text and "0.790" in text and "0.250" in text and "12.5" in text
    assert "fedadam" in text and "-" in text
    path = cs.plot_accuracy(runs, tmp_path / "sub" / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scenarios_validate_and_differ_only_in_strategy() -> None:
    cs = load()
    base = cs.scenario_dict("fedavg", rounds=3)
    for name in ("fedavg", "fedprox", "fedadam"):
        d = cs.scenario_dict(name, rounds=3)
        sc = Scenario.from_dict(d)
        assert sc.data.partition == "dirichlet" and sc.data.alpha == 0.1
        assert sc.evaluation.federated_fraction == 0.5 and sc.dp.mode == "off"
        assert {k: v for k, v in d.items() if k not in ("name", "strategy")} == {
            k: v for k, v in base.items() if k not in ("name", "strategy")
        }


def test_unregistered_strategy_is_skipped(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cs = load()
    assert cs.main(["--strategies", "nosuchstrategy", "--out", str(tmp_path)]) == 1
    assert "skipped nosuchstrategy" in capsys.readouterr().out
