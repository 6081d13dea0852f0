"""Reproduce a DP-FedAvg privacy-utility curve (McMahan et al., ICLR 2018 style).

The paper's finding (qualitative; its task is next-word prediction on 763,430 users):
user-level DP-FedAvg (clip each user's update, Gaussian noise on the sum, Poisson
sampling of users) trades accuracy for epsilon smoothly, and with enough users per
round the accuracy at single-digit epsilon is close to the non-private model's.

    python scenarios/reproduce_dp_fedavg.py [--rounds N] [--quick] [--noise 0.7,1.0,...]

Setting: scenarios/user_dp_1000.toml unchanged but for the noise multiplier z and the
seed: 1,000 users holding 1-2 digits each, Poisson sampling with q = 200/1000 (200
expected users per round), 25 rounds, 5 local epochs, update clip 2.0, delta 1e-4,
rdp accountant. For each z in --noise and each seed, one run; plus the same runs
without DP. Epsilon is user level (one release per round in the ledger), from the
accountant that the run itself used.

Writes scenarios/results/reproduce_dp_fedavg.json and .png (accuracy vs epsilon, one
point per run, the no-DP accuracy as a line) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_common as rc  # noqa: E402

SCENARIO = Path(__file__).resolve().parent / "user_dp_1000.toml"
NOISES = (0.7, 1.0, 1.3, 2.0)
SEEDS = (0, 1)


def scenario_for(noise: float | None, seed: int, rounds: int | None, quick: bool) -> dict[str, Any]:
    """user_dp_1000 with noise multiplier `noise` (None: DP off) and `seed`."""
    sc = tomllib.loads(SCENARIO.read_text())
    sc["seed"] = seed
    if rounds is not None:
        sc["rounds"] = rounds
    if quick:  # a smoke test: 100 users, 20 expected per round
        sc["population"] = 100
        sc["sampling"]["clients_per_round"] = 20
        sc["dp"]["delta"] = 1e-3
    if noise is None:
        sc["dp"] = {"mode": "off"}
    else:
        sc["dp"]["noise_multiplier"] = noise
    sc["name"] = f"dp-fedavg-z{'off' if noise is None else noise}-s{seed}"
    sc.setdefault("checkpoint", {})["every"] = 0
    return sc


def summarize(noise: float | None, seed: int, run: dict[str, Any]) -> dict[str, Any]:
    """One run's row: accuracy, user-level epsilon (None without DP), wall seconds."""
    eps = run["summary"].get("epsilon")
    return {
        "noise": noise,
        "seed": seed,
        "accuracy": run["summary"].get("accuracy"),
        "epsilon": eps["max"] if eps else None,
        "wall_seconds": run["wall_seconds"],
    }


def by_noise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per noise multiplier: accuracy per seed, their mean, epsilon."""
    out = []
    for noise in dict.fromkeys(r["noise"] for r in rows):
        same = [r for r in rows if r["noise"] == noise]
        out.append(
            {
                "noise": noise,
                "accuracies": [r["accuracy"] for r in same],
                "mean_accuracy": mean(r["accuracy"] for r in same),
                "epsilon": same[0]["epsilon"],  # the same for every seed (same q, z, T)
            }
        )
    return out


def print_table(lines: Sequence[dict[str, Any]], delta: float, setting: str) -> None:
    """Accuracy (each seed, mean) and epsilon per noise multiplier."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DP-FedAvg privacy-utility ({setting})")
    for col in ("noise z", "accuracy per seed", "mean", f"user-level epsilon (delta {delta:g})"):
        table.add_column(col, justify="right")
    for line in lines:
        table.add_row(
            "off" if line["noise"] is None else f"{line['noise']:g}",
            " / ".join(rc.fmt(a) for a in line["accuracies"]),
            rc.fmt(line["mean_accuracy"]),
            "no guarantee" if line["epsilon"] is None else f"{line['epsilon']:.2f}",
        )
    Console(width=120).print(table)


def plot(rows: Sequence[dict[str, Any]], results: Path = rc.RESULTS) -> Path:
    """Accuracy vs user-level epsilon (log x), each run a point, no-DP as a line."""
    fig, axes = rc.new_figure(6.0, 3.6)
    ax = axes[0][0]
    dp = [r for r in rows if r["epsilon"] is not None]
    ax.scatter([r["epsilon"] for r in dp], [r["accuracy"] for r in dp], label="DP-FedAvg runs")
    for r in dp:
        ax.annotate(f"z={r['noise']:g}", (r["epsilon"], r["accuracy"]), fontsize=7)
    off = [r["accuracy"] for r in rows if r["epsilon"] is None]
    if off:
        ax.axhline(mean(off), color="grey", ls="--", label="no DP (mean of seeds)")
    if dp:
        ax.set_xscale("log")
    ax.set_xlabel("user-level epsilon")
    ax.set_ylabel("central test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return rc.save_figure(fig, "dp_fedavg", results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (the toml's 25)")
    parser.add_argument("--quick", action="store_true", help="100 users, 2 rounds, z 1 and 2")
    parser.add_argument("--noise", default=None, help="comma-separated noise multipliers")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (0,1)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the DP-off runs")
    parser.add_argument("--out", type=Path, default=rc.RUNS / "reproduce_dp_fedavg")
    parser.add_argument("--results", type=Path, default=rc.RESULTS, help="JSON + PNG folder")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else None)
    default_noise = (1.0, 2.0) if args.quick else NOISES
    noises = [float(z) for z in args.noise.split(",")] if args.noise else list(default_noise)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS)
    if any(z <= 0 for z in noises):
        parser.error(f"--noise: every noise multiplier must be > 0, got {noises}")

    t0 = time.perf_counter()
    sc = scenario_for(noises[0], seeds[0], rounds, args.quick)
    setting = (
        f"{sc['population']} users, Poisson q = {sc['sampling']['clients_per_round']}"
        f"/{sc['population']}, {sc['rounds']} rounds"
    )
    payload: dict[str, Any] = {"quick": args.quick, "setting": setting, "scenario": sc}
    runs = [(z, s) for z in [*noises, *([] if args.no_baseline else [None])] for s in seeds]
    rows: list[dict[str, Any]] = []
    for noise, seed in runs:
        run_sc = scenario_for(noise, seed, rounds, args.quick)
        print(f"running {run_sc['name']} ...", flush=True)
        rows.append(summarize(noise, seed, rc.run_scenario(run_sc, args.out / run_sc["name"])))
        # written after every run, so an interrupted sweep keeps what it measured
        payload.update(
            rows=rows,
            by_noise=by_noise(rows),
            complete=len(rows) == len(runs),
            total_wall_seconds=time.perf_counter() - t0,
        )
        path = rc.write_json("dp_fedavg", payload, args.results)
    print_table(payload["by_noise"], sc["dp"]["delta"], setting)
    print(f"json: {path}")
    print(f"plot: {plot(rows, args.results)}")
    print(f"total wall time {payload['total_wall_seconds']:.0f} s on {rc.machine()['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
