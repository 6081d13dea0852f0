"""Reproduce FedProx (Li et al., MLSys 2020), Synthetic(1,1) with 0 %, 50 % and 90 % stragglers.

The paper's finding (its Figure 1, Synthetic(1,1) column; no DP): with stragglers,
FedAvg that drops them trains on fewer devices and becomes unstable (at 90 % its
training loss rises and oscillates), while FedProx with mu = 1, which keeps the
stragglers' partial work, converges.

    python scenarios/reproduce_fedprox.py [--rounds N] [--quick] [--methods fedavg,fedprox,...]

Settings. Paper: 30 devices, 10 per round, 20 local epochs, batch 10, lr 0.01,
mu = 1, 200 rounds. Here the same population, clients per round, local epochs, batch,
lr and mu, on fedsim's Synthetic(1,1) generator (the FedProx repository's, devices
capped at 1,000 samples), and 40 rounds instead of 200 (2 shared cores).

How the stragglers are made with fedsim's faults (where this differs from the paper):
- Every device has a fixed, seeded speed s ~ LogNormal(0, 1) (faults.speed_sigma); a
  participation lasts steps * s simulated seconds. For x % stragglers the round
  deadline is the (1 - x) quantile of the 20-epoch duration over the 30 devices, so
  x % of the devices miss it whenever they are sampled. The paper instead picks x % of
  each round's selected devices at random, so here the same slow devices are the
  stragglers every round (their data never reaches FedAvg's model).
- FedAvg (drop): the late devices are dropped from aggregation (accept_late = false).
- FedProx (keep partial work): fedsim has no "train until the deadline, send what is
  done" option; the closest is train.min_epochs = 1, so every device (not only x % of
  them) does a seeded U{1..20} epochs per round, and nothing is dropped. At 50 % this
  is more heterogeneity than the paper's; at 0 % FedProx runs the full 20 epochs.
- "fedprox0" (mu = 0, the same partial work) is available with --methods: the
  paper's middle curve.

Writes scenarios/results/reproduce_fedprox.json and .png (test accuracy and clients'
training loss vs round, one panel per straggler level) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_common as rc  # noqa: E402

STRAGGLERS = (0.0, 0.5, 0.9)
METHODS = ("fedavg", "fedprox")
#: the paper's mu for Synthetic(1,1); fedprox0 is FedProx with mu = 0 (partial work kept)
MU = {"fedavg": None, "fedprox": 1.0, "fedprox0": 0.0}
EPOCHS = 20
SPEED_SIGMA = 1.0

#: the paper's reading of its Figure 1 (Synthetic(1,1)), for the table beside ours
PAPER = {
    0.0: "FedAvg and FedProx (mu=1) both converge",
    0.5: "FedAvg (drop) slower/unstable; FedProx mu=1 converges",
    0.9: "FedAvg (drop) diverges/oscillates; FedProx mu=1 converges",
}


def base_scenario(rounds: int, quick: bool, seed: int = 0) -> dict[str, Any]:
    """Synthetic(1,1) as in the paper: 30 devices, 10 per round, batch 10, lr 0.01."""
    return {
        "name": "reproduce-fedprox",
        "seed": seed,
        "rounds": rounds,
        "population": 30,
        "sampling": {"clients_per_round": 10},
        "data": {
            "name": "synthetic",
            "partition": "natural",
            "synthetic": {"alpha": 1.0, "beta": 1.0, "dim": 60, "num_classes": 10},
        },
        "model": {"name": "logreg"},
        "train": {
            "epochs": 2 if quick else EPOCHS,
            "batch_size": 10,
            "lr": 0.01,
            "momentum": 0.0,
        },
        "dp": {"mode": "off"},
        "backend": {"workers": 2},
        "evaluation": {"every": 1},
        "checkpoint": {"every": 0},
    }


def durations(scenario: dict[str, Any]) -> list[float]:
    """Simulated seconds of each device's full-epoch participation (steps x speed),
    with the straggler runs' speeds (faults.speed_sigma = SPEED_SIGMA)."""
    import fedsim
    from fedsim.clients.dp import local_steps
    from fedsim.clients.worker import client_speed, load_scenario_data
    from fedsim.shards import build_shards

    sc = fedsim.Scenario.from_dict({**scenario, "faults": {"speed_sigma": SPEED_SIGMA}})
    sizes = build_shards(sc, load_scenario_data(sc)).sizes()
    return [local_steps(sc, int(n)) * client_speed(sc, k) for k, n in enumerate(sizes)]


def deadline_for(stragglers: float, times: Sequence[float]) -> float | None:
    """The deadline that `stragglers` of the devices miss: the (1 - x) quantile."""
    if stragglers <= 0:
        return None
    ordered = sorted(times)
    on_time = len(ordered) - round(stragglers * len(ordered))  # devices that make it
    if on_time <= 0:
        return min(ordered) / 2
    # halfway between the last on-time device and the first late one
    hi = ordered[on_time] if on_time < len(ordered) else ordered[-1] * 2
    return (ordered[on_time - 1] + hi) / 2


def scenario_for(
    method: str, stragglers: float, rounds: int, quick: bool, times: Sequence[float]
) -> dict[str, Any]:
    """The run of one method at one straggler level."""
    sc = base_scenario(rounds, quick)
    sc["name"] = f"fedprox-{method}-{int(stragglers * 100)}"
    deadline = deadline_for(stragglers, times)
    if deadline is not None:
        keep = method != "fedavg"
        sc["faults"] = {
            "speed_sigma": SPEED_SIGMA,
            "round_deadline": deadline,
            "accept_late": keep,
        }
        if keep:
            sc["train"]["min_epochs"] = 1  # partial work: U{1..E} epochs per round
    if MU[method] is not None:
        sc["strategy"] = {"name": "fedprox", "options": {"proximal_mu": MU[method]}}
    return sc


def summarize(method: str, stragglers: float, run: dict[str, Any]) -> dict[str, Any]:
    """One table row: final and best accuracy, final training loss, wall seconds."""
    acc = rc.curve(run["metrics"])
    loss = rc.curve(run["metrics"], "train_loss")
    late = [int(m.get("clients_late") or 0) for m in run["metrics"]]
    return {
        "method": method,
        "stragglers": stragglers,
        "final_accuracy": acc[-1][1] if acc else None,
        "best_accuracy": max(a for _, a in acc) if acc else None,
        "final_train_loss": loss[-1][1] if loss else None,
        "accuracy_curve": acc,
        "train_loss_curve": loss,
        "dropped_late_per_round": sum(late) / len(late) if late else 0.0,
        "wall_seconds": run["wall_seconds"],
    }


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The table, with the paper's reading of the same straggler level beside it."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="FedProx, Synthetic(1,1): ours vs the paper's Figure 1")
    cols = ("stragglers", "method", "final acc.", "best acc.", "train loss", "late dropped/round")
    for col in (*cols, "wall s"):
        table.add_column(col, justify="right")
    table.add_column("paper (Fig. 1)")
    for r in rows:
        table.add_row(
            f"{r['stragglers']:.0%}",
            r["method"],
            rc.fmt(r["final_accuracy"]),
            rc.fmt(r["best_accuracy"]),
            rc.fmt(r["final_train_loss"]),
            f"{r['dropped_late_per_round']:.1f}",
            f"{r['wall_seconds']:.0f}",
            PAPER.get(r["stragglers"], ""),
        )
    Console(width=140).print(table)


def plot(
    rows: Sequence[dict[str, Any]], levels: Sequence[float], results: Path = rc.RESULTS
) -> Path:
    """Accuracy (solid) and training loss (dashed, right axis) per straggler level."""
    fig, axes = rc.new_figure(4.0 * len(levels), 3.4, ncols=len(levels))
    for ax, level in zip(axes[0], levels, strict=True):
        twin = ax.twinx()
        for i, r in enumerate(x for x in rows if x["stragglers"] == level):
            color = f"C{i}"
            if r["accuracy_curve"]:
                ax.plot(*zip(*r["accuracy_curve"], strict=True), color=color, label=r["method"])
            if r["train_loss_curve"]:
                twin.plot(*zip(*r["train_loss_curve"], strict=True), color=color, ls="--")
        ax.set_title(f"{level:.0%} stragglers")
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        twin.set_ylabel("clients' train loss (dashed)")
    axes[0][0].set_ylabel("test accuracy (solid)")
    axes[0][0].legend(loc="lower right")
    return rc.save_figure(fig, "fedprox", results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (40; quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 epochs, 0/90 %%")
    parser.add_argument("--methods", default=",".join(METHODS), help="fedavg,fedprox,fedprox0")
    parser.add_argument("--out", type=Path, default=rc.RUNS / "reproduce_fedprox")
    parser.add_argument("--results", type=Path, default=rc.RESULTS, help="JSON + PNG folder")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 40)
    levels = (0.0, 0.9) if args.quick else STRAGGLERS
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in MU]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; allowed: {sorted(MU)}")

    t0 = time.perf_counter()
    times = durations(base_scenario(rounds, args.quick))
    rows = []
    for level in levels:
        for method in methods:
            if level == 0 and method == "fedprox0":
                continue  # identical to FedAvg without stragglers
            sc = scenario_for(method, level, rounds, args.quick, times)
            print(f"running {sc['name']} ({rounds} rounds) ...", flush=True)
            rows.append(summarize(method, level, rc.run_scenario(sc, args.out / sc["name"])))
    total = time.perf_counter() - t0
    print_table(rows)
    settings = base_scenario(rounds, args.quick)
    payload = {
        "quick": args.quick,
        "rounds": rounds,
        "settings": {k: settings[k] for k in ("population", "sampling", "train", "data")},
        "speed_sigma": SPEED_SIGMA,
        "deadlines": {str(lv): deadline_for(lv, times) for lv in levels},
        "rows": rows,
        "total_wall_seconds": total,
    }
    print(f"json: {rc.write_json('fedprox', payload, args.results)}")
    print(f"plot: {plot(rows, levels, args.results)}")
    print(f"total wall time {total:.0f} s on {rc.machine()['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
