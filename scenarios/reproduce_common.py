"""Shared pieces of the scenarios/reproduce_*.py scripts: where results go, the machine
a result was measured on, one fedsim run, and the JSON + PNG writers.

Each reproduce script imports this module from its own directory (scenarios/), so it
also works when the script is loaded by path (the smoke tests do).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path("runs")


def machine() -> dict[str, Any]:
    """The machine a result was measured on: CPU count, load, Python and torch versions."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "load_1min": load[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": bool(torch.cuda.is_available()),
    }


def run_scenario(
    scenario: dict[str, Any], out_dir: Path, observers: Sequence[Any] = ()
) -> dict[str, Any]:
    """Run one scenario dict with fedsim; its metrics, summary and wall seconds.

    `observers` are extra round observers (`fedsim.engine.loop.RoundObserver`).
    """
    import fedsim

    sc = fedsim.Scenario.from_dict(scenario)
    t0 = time.perf_counter()
    result = fedsim.run(sc, out_dir, overwrite=True, progress=False, observers=observers)
    return {
        "metrics": result.metrics,
        "summary": result.summary,
        "wall_seconds": time.perf_counter() - t0,  # start-up included
        "run_dir": str(result.run_dir),
    }


def curve(metrics: Sequence[dict[str, Any]], key: str = "accuracy") -> list[tuple[int, float]]:
    """(round, value) of every metrics line that has `key`."""
    return [(int(m["round"]), float(m[key])) for m in metrics if m.get(key) is not None]


def write_json(name: str, payload: dict[str, Any], results: Path = RESULTS) -> Path:
    """scenarios/results/reproduce_NAME.json with the payload and the machine."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"reproduce_{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2) + "\n")
    return path


def new_figure(width: float = 6.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), squeeze=False)


def save_figure(fig: Any, name: str, results: Path = RESULTS) -> Path:
    """scenarios/results/reproduce_NAME.png."""
    import matplotlib.pyplot as plt

    results.mkdir(parents=True, exist_ok=True)
    path = results / f"reproduce_{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: the number, or '-' when there is none."""
    return "-" if value is None else f"{value:.{digits}f}"
