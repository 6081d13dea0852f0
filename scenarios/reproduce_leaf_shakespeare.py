"""Reproduce LEAF's Shakespeare (Caldas et al. 2018): the data set's statistics and FedAvg.

Part 1 (the main deliverable): users and samples of fedsim's Shakespeare loader next
to LEAF's Table 1 (1,129 users, 4,226,158 samples; mean 3,743 and std 6,212 samples
per user). A user is one speaking role in one play, a sample an 80-character window
and its next character, windows at every position (LEAF's settings).

Part 2: non-DP FedAvg with LEAF's character LSTM (embedding 8, 2 x LSTM 256) on all
roles, accuracy over rounds, against LEAF's reported FedAvg baseline.

    python scenarios/reproduce_leaf_shakespeare.py [--minutes 30] [--rounds N] [--quick]
                                                   [--stats-only]

Training settings (LEAF's FedAvg on Shakespeare: 10 clients per round, 1 local epoch,
batch 10, lr 0.8): the same, but each client's round is capped at --max-steps local
steps (50) and its shard at the loader's 2,000 windows per role. LEAF ran thousands of
rounds; this runs as many as --minutes of training allow (30; a round is not started
when the last round's time would take it past the budget), at most --rounds (100).
Central accuracy on a seeded 2,000 of the test windows.

Writes scenarios/results/reproduce_leaf_shakespeare.json and .png and prints both tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_common as rc  # noqa: E402

from fedsim.engine.loop import Stop  # noqa: E402
from fedsim.engine.observers import RoundTimer  # noqa: E402

#: LEAF's Table 1 (Caldas et al. 2018), Shakespeare row
LEAF = {"users": 1129, "samples": 4226158, "mean": 3743.2, "std": 6212.26}
#: how the issue reads LEAF's FedAvg figure; a reading, not a number LEAF tabulates
LEAF_FEDAVG = "about 0.45-0.5 test accuracy (read from LEAF's FedAvg plots, thousands of rounds)"

DEFAULT_SETTING = "fedsim default (>= 100, cap 2,000 per role)"
#: the loader settings compared with LEAF's (min_samples: fewest windows a role needs)
STATS_SETTINGS = {
    "every role with >= 2 windows, uncapped": {"min_samples": 2, "max_samples_per_role": None},
    "roles with >= 100 windows, uncapped": {"min_samples": 100, "max_samples_per_role": None},
    DEFAULT_SETTING: {},
}


def statistics(options: dict[str, Any]) -> dict[str, Any]:
    """Users (roles), samples and per-user mean / std of one loader setting."""
    from fedsim.data.shakespeare import load_shakespeare

    bundle = load_shakespeare(seed=0, seq_len=80, **options)
    n = bundle.info["clients"]
    per_user = np.bincount(np.asarray(bundle.train.groups), minlength=n) + np.bincount(
        np.asarray(bundle.test.groups), minlength=n
    )
    return {
        "users": int(n),
        "plays": bundle.info["plays"],
        "samples": int(per_user.sum()),
        "mean": float(per_user.mean()),
        "std": float(per_user.std()),
    }


def print_stats(rows: dict[str, dict[str, Any]]) -> None:
    """Ours beside LEAF's Table 1."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Shakespeare statistics: fedsim's loader vs LEAF's Table 1")
    for col in ("setting", "users", "samples", "mean / user", "std / user"):
        table.add_column(col, justify="right")
    table.add_row("LEAF (paper)", *(f"{LEAF[k]:,.0f}" for k in ("users", "samples", "mean", "std")))
    for name, r in rows.items():
        table.add_row(name, *(f"{r[k]:,.0f}" for k in ("users", "samples", "mean", "std")))
    Console(width=120).print(table)


def scenario(rounds: int, quick: bool, max_steps: int, population: int) -> dict[str, Any]:
    """Non-DP FedAvg with LEAF's LSTM and LEAF's client settings."""
    return {
        "name": "reproduce-leaf-shakespeare",
        "seed": 0,
        "rounds": rounds,
        "population": population,
        "sampling": {"clients_per_round": 2 if quick else 10},
        "data": {"name": "shakespeare", "partition": "natural", "shakespeare": {"seq_len": 80}},
        "model": {"name": "char_lstm", "embed_dim": 8, "hidden": 256, "layers": 2},
        "train": {
            "epochs": 1,
            "batch_size": 10,
            "lr": 0.8,
            "optimizer": "sgd",
            "max_steps": max_steps,
        },
        "dp": {"mode": "off"},
        "backend": {"workers": 2},
        "evaluation": {"every": 1, "max_test_samples": 200 if quick else 2000},
        "checkpoint": {"every": 0},
    }


class TimeBudget(RoundTimer):
    """Round times, and a stop before a round that would end past `seconds`.

    A round is expected to take as long as the last one; the budget counts from the
    observer's creation (just before the run starts, so Ray's start-up is included).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def on_round_start(self, loop: Any, rnd: int) -> Stop | None:
        last = self.round_seconds[-1] if self.round_seconds else 0.0
        if self.rounds and time.perf_counter() - self.t0 + last > self.seconds:
            minutes = self.seconds / 60
            return Stop(f"time budget of {minutes:g} minutes reached after round {self.rounds[-1]}")
        return super().on_round_start(loop, rnd)


def plot(curve: Sequence[tuple[int, float]], results: Path = rc.RESULTS) -> Path:
    """Our accuracy over rounds, with LEAF's reported band and the space baseline."""
    fig, axes = rc.new_figure(6.0, 3.6)
    ax = axes[0][0]
    if curve:
        ax.plot(*zip(*curve, strict=True), marker=".", label="fedsim FedAvg (no DP)")
    ax.axhspan(0.45, 0.5, color="C1", alpha=0.2, label="LEAF FedAvg (reported, long runs)")
    ax.axhline(0.161, color="grey", ls=":", label="always predict a space")
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)  # rounds are whole numbers
    ax.set_ylabel("central test accuracy")
    ax.set_ylim(0, 0.6)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return rc.save_figure(fig, "leaf_shakespeare", results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="most rounds (100; quick 1)")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--quick", action="store_true", help="1 round, 2 clients, 2 steps")
    parser.add_argument("--stats-only", action="store_true", help="statistics, no training")
    parser.add_argument("--max-steps", type=int, default=None, help="local steps cap (50)")
    parser.add_argument("--out", type=Path, default=rc.RUNS / "reproduce_leaf_shakespeare")
    parser.add_argument("--results", type=Path, default=rc.RESULTS, help="JSON + PNG folder")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 100)
    max_steps = args.max_steps or (2 if args.quick else 50)

    t0 = time.perf_counter()
    stats = {name: statistics(opts) for name, opts in STATS_SETTINGS.items()}
    print_stats(stats)
    stats_seconds = time.perf_counter() - t0
    payload: dict[str, Any] = {"quick": args.quick, "leaf": LEAF, "statistics": stats}
    payload["stats_wall_seconds"] = stats_seconds
    rc.write_json("leaf_shakespeare", payload, args.results)  # kept if training is stopped
    curve: list[tuple[int, float]] = []
    if not args.stats_only:
        population = 20 if args.quick else stats[DEFAULT_SETTING]["users"]
        sc = scenario(rounds, args.quick, max_steps, population)
        print(
            f"running FedAvg (at most {rounds} rounds or {args.minutes:g} minutes, "
            f"{population} roles) ...",
            flush=True,
        )
        budget = TimeBudget(args.minutes * 60)
        run = rc.run_scenario(sc, args.out, observers=[budget])
        curve = rc.curve(run["metrics"])
        for (rnd, acc), end in zip(curve, budget.round_ends, strict=False):
            print(f"round {rnd:3d}  accuracy {acc:.3f}  at {end / 60:5.1f} min")
        print(f"LEAF's FedAvg: {LEAF_FEDAVG}")
        payload.update(
            scenario=sc,
            accuracy_curve=curve,
            leaf_fedavg=LEAF_FEDAVG,
            train_wall_seconds=run["wall_seconds"],
            budget_minutes=args.minutes,
            rounds_run=len(run["metrics"]),
            round_end_seconds=budget.round_ends,
            stopped_early=run["summary"].get("stopped_early"),
        )
    payload["total_wall_seconds"] = time.perf_counter() - t0
    print(f"json: {rc.write_json('leaf_shakespeare', payload, args.results)}")
    print(f"plot: {plot(curve, args.results)}")
    print(f"total wall time {payload['total_wall_seconds']:.0f} s on {rc.machine()['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
