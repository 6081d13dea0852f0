"""Privacy-utility sweep on digits: noise multipliers x seeds, with one-run audits.

Each run trains with DP-SGD at one noise multiplier (and one without DP), inserts
canaries, and reports three numbers: central test accuracy, the accountant's
epsilon (max over clients) and the empirical epsilon lower bound from the canaries
(Steinke et al. 2023, 95 % confidence). The lower bound must stay below the
accountant's epsilon; without DP it measures how much the model leaks.

    python scenarios/privacy_utility_sweep.py            # 4 noise levels x 2 seeds, ~6 min
    python scenarios/privacy_utility_sweep.py --quick    # 2 levels x 1 seed, ~1 min

Writes runs/privacy_utility_sweep/<run>/ and an overlay report (report.html, PNGs)
in runs/privacy_utility_sweep/report/.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import fedsim
from fedsim.config import Scenario

NOISES = (None, 0.7, 1.0, 2.0)  # None = DP off


def scenario(noise: float | None, seed: int, rounds: int) -> Scenario:
    """Few clients and many local epochs: memorisation is easy to see without DP."""
    dp: dict[str, Any] = {"mode": "off"}
    if noise is not None:
        dp = {"mode": "sample", "noise_multiplier": noise, "max_grad_norm": 1.0, "delta": 1e-5}
    name = f"noise_{noise}_seed_{seed}" if noise is not None else f"nodp_seed_{seed}"
    return Scenario.from_dict(
        {
            "name": name,
            "seed": seed,
            "rounds": rounds,
            "population": 4,
            "sampling": {"clients_per_round": 4},
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "cnn", "channels": [16, 32], "hidden": 64},
            "train": {"epochs": 5, "batch_size": 32, "lr": 0.3, "momentum": 0.5},
            "dp": dp,
            "audit": {"canaries": 500},
            "backend": {"workers": 2},
        }
    )


def sweep(
    noises: Sequence[float | None], seeds: Sequence[int], rounds: int, out: Path
) -> list[dict[str, Any]]:
    """Run every (noise, seed) and return one row per run."""
    rows = []
    for noise in noises:
        for seed in seeds:
            sc = scenario(noise, seed, rounds)
            result = fedsim.run(sc, out / sc.name, overwrite=True, progress=False)
            audit = json.loads((result.run_dir / "empirical_audit.json").read_text())
            eps = result.summary["epsilon"]
            rows.append(
                {
                    "run": sc.name,
                    "noise": noise,
                    "seed": seed,
                    "accuracy": result.summary["accuracy"],
                    "epsilon": eps["max"] if eps else None,
                    "epsilon_lower_bound": audit["epsilon_lower_bound"],
                    "correct": f"{audit['correct']}/{audit['guesses']}",
                    "run_dir": str(result.run_dir),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> Table:
    """One row per run: noise, seed, accuracy, accountant epsilon, empirical bound."""
    t = Table(title="privacy-utility sweep (digits, example-level DP, delta 1e-5)")
    for col in (
        "noise",
        "seed",
        "accuracy",
        "epsilon (accountant)",
        "eps lower bound (95%)",
        "canary guesses",
    ):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            "off" if r["noise"] is None else f"{r['noise']:g}",
            str(r["seed"]),
            f"{r['accuracy']:.3f}",
            "inf (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.2f}",
            f"{r['epsilon_lower_bound']:.2f}",
            r["correct"],
        )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 noise levels, 1 seed")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/privacy_utility_sweep"))
    args = parser.parse_args(argv)
    noises = (None, 1.0) if args.quick else NOISES
    seeds = (0,) if args.quick else (0, 1)
    rows = sweep(noises, seeds, args.rounds, args.out)
    Console().print(table(rows))
    from fedsim.report import write_report

    page = write_report([Path(r["run_dir"]) for r in rows], args.out / "report")
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    Console().print(f"report: {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
