"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(metrics: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write accuracy-vs-round and epsilon-vs-round PNGs; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    rounds = [m["round"] for m in metrics]

    fig, ax = plt.subplots(figsize=(5, 3.2))
    pts = [(m["round"], m["accuracy"]) for m in metrics if m.get("accuracy") is not None]
    if pts:
        ax.plot(*zip(*pts, strict=True), marker="o", label="central test")
    fed = [(m["round"], m["fed_accuracy"]) for m in metrics if m.get("fed_accuracy") is not None]
    if fed:
        ax.plot(*zip(*fed, strict=True), marker="s", label="federated (mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if pts or fed:
        ax.legend()
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    eps_max = [m.get("epsilon_max") for m in metrics]
    if any(e is not None for e in eps_max):
        lo = [m.get("epsilon_min") or 0.0 for m in metrics]
        hi = [m.get("epsilon_max") or 0.0 for m in metrics]
        med = [m.get("epsilon_median") or 0.0 for m in metrics]
        ax.fill_between(rounds, lo, hi, alpha=0.25, label="min-max over clients")
        ax.plot(rounds, med, marker="o", label="median client")
        ax.legend()
    else:
        ax.text(
            0.5, 0.5, "DP off: no privacy spent is accounted", ha="center", transform=ax.transAxes
        )
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon (per client)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "epsilon.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths
