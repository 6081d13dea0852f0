"""Engine overhead per round: fedsim (K=auto) vs plain Flower+Ray (K=1) vs a PyTorch loop.

    python -m benchmarks.rounds [--clients 100] [--samples 50] [--rounds 4] [--dp] [--tiny]

The same work in all three: `--clients` virtual clients, all sampled every round, the small
CNN (`cnn`, channels [16, 32], hidden 64, 13.7k parameters) on the 8x8 digits, no DP, the same
seeds (every client's batches come from `(seed, round, client)`).

Data: digits has 1,437 training images, so 100 clients hold ~14 images each (iid partition).
`--samples` is the number of *examples each client processes per round*: the client runs
`epochs = round(samples / shard size)` local epochs over its ~14 images (batch 16, so one step
per epoch), i.e. 100 clients x 50 samples costs what 100 clients holding 50 images would
cost with one epoch, without needing 5,000 images. The exact values used are in the JSON.

Measured, per round (median of the rounds after the first, which carries the workers'
cold start; the last round's final central evaluation runs on 1 test sample):
  (a) fedsim_auto   clients_per_message="auto" (one cohort per worker), `--workers` Ray workers,
                    the sequential engine (backend.engine = "sequential")
  (v) fedsim_vec    the same with the vectorised engine (backend.engine = "vectorised",
                    backend.vector_clients = `--vector-clients`); fedsim_vec_other_dp is it
                    again with DP-SGD switched the other way (for the DP / no-DP ratio)
  (b) fedsim_k1     clients_per_message=1: one Flower message (and Ray task) per client, the
                    plain Flower+Ray behaviour, with the same ClientApp. It also pays Flower's
                    per-message engine cost, which is what fedsim batches away.
  (f) plain_flower  plain Flower written the way Flower's PyTorch and Opacus examples write a
                    client (`benchmarks.flower_baseline`): Flower's FedAvg, one message per
                    client, and per call a new model, DataLoader, optimizer and, with DP-SGD,
                    `PrivacyEngine.make_private`; same data, shards, model and initial weights.
                    `--skip-flower` leaves it out.
  (c) floor         fedsim's LocalTrainer in this process, one torch thread (as a worker),
                    every client trained sequentially from the same global weights, then
                    FedAvg; its time divided by `--workers` = the compute floor of (a).
                    Measured before and after the fedsim runs (not in --tiny); median of
                    the warm rounds of both passes.
Round seconds of (a) and (b) are taken in the server by `fedsim.engine.observers.RoundTimer`, an
observer of fedsim's round loop (`fedsim.run(..., observers=...)`): from a round's start hook
to its end hook (configure, send, train, receive, aggregate, evaluate, write its lines).

Also: start-up (time from run() to the first round done, minus a steady-state round) and,
unless --no-parallel-floor (or --tiny), the floor *measured* with W processes training their
share at the same time: on a shared machine the W workers do not get W idle cores, and this
row shows how much of the gap to the floor is CPU contention rather than engine overhead.

`--dp`: DP-SGD (noise multiplier 1, clip 1, Poisson batches) in every engine and the floor.

Targets (issue "Speed and scale"): fedsim_k1 / fedsim_auto >= 8, fedsim_auto / floor <= 1.2;
(issue "Vectorised cohorts"): fedsim_auto / fedsim_vec >= 3 (>= 4 with DP-SGD),
fedsim_vec / floor <= 0.5, vectorised DP round / non-DP round <= 3, plain_flower / fedsim_vec
>= 25 (>= 8 with DP-SGD).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    check,
    fmt_s,
    fmt_x,
    machine_info,
    max_abs_diff,
    median,
    print_note,
    print_table,
    ratio,
    timed_run,
    verdict,
    write_json,
)

TARGET_K1_OVER_AUTO = 8.0
TARGET_AUTO_OVER_FLOOR = 1.2
TARGET_SEQ_OVER_VEC = {False: 3.0, True: 4.0}  # by DP-SGD on/off
TARGET_VEC_OVER_FLOOR = 0.5
TARGET_VEC_DP_OVER_NODP = 3.0
TARGET_FLOWER_OVER_VEC = {False: 25.0, True: 8.0}  # plain Flower (examples' style) / vectorised

DIGITS_TRAIN = 1437  # digits train split at test_fraction 0.2


def build_scenario(
    *,
    clients: int,
    samples: int,
    rounds: int,
    workers: int,
    k: int | str,
    batch: int = 16,
    seed: int = 0,
    dp: bool = False,
    engine: str = "sequential",
    vector_clients: int | str = "auto",
) -> Any:
    """The benchmark scenario; `k` is backend.clients_per_message."""
    from fedsim.config import Scenario

    shard = max(1, DIGITS_TRAIN // clients)
    epochs = max(1, round(samples / shard))
    raw = {
        "name": f"bench-rounds-k{k}-{engine}",
        "seed": seed,
        "rounds": rounds,
        "population": clients,
        "sampling": {"clients_per_round": clients},
        "data": {"name": "digits", "partition": "iid"},
        "model": {"name": "cnn", "channels": [16, 32], "hidden": 64},
        "train": {"epochs": epochs, "batch_size": batch, "lr": 0.1},
        "dp": {"mode": "sample", "noise_multiplier": 1.0, "max_grad_norm": 1.0}
        if dp
        else {"mode": "off"},
        "backend": {
            "workers": workers,
            "clients_per_message": k,
            "engine": engine,
            "vector_clients": vector_clients,
        },
        # No per-round central evaluation; the final one (last round) on a single sample.
        "evaluation": {"every": 0, "max_test_samples": 1},
    }
    return Scenario.from_dict(raw)


# --------------------------------------------------------------------------- floor


def floor_loop(scenario: Any, rounds: int) -> dict[str, Any]:
    """Train every client sequentially in this process with LocalTrainer, FedAvg, per round.

    Uses the worker's torch thread count, so the time is what one worker would need for the
    whole cohort; the compute floor of a run with W workers is that divided by W.
    """
    import torch

    from fedsim.clients.trainer import LocalTrainer, build_global_model
    from fedsim.clients.worker import load_scenario_data
    from fedsim.shards import build_shards

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(scenario.backend.threads_per_worker)
    try:
        bundle = load_scenario_data(scenario)
        shards = build_shards(scenario, bundle)
        trainer = LocalTrainer(scenario, bundle.train, bundle.input_shape, bundle.num_classes)
        model = build_global_model(scenario, bundle.input_shape, bundle.num_classes)
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        clients = list(range(scenario.population))  # everyone is sampled every round
        train_s: list[float] = []
        agg_s: list[float] = []
        examples: list[int] = []
        for rnd in range(1, rounds + 1):
            t0 = time.perf_counter()
            results = [
                trainer.train(
                    client=c, round=rnd, indices=shards.train[c], global_state=global_state
                )
                for c in clients
            ]
            t1 = time.perf_counter()
            total = sum(r.num_examples for r in results)
            new_state = {}
            for key, ref in global_state.items():
                acc = torch.zeros_like(ref, dtype=torch.float64)
                for r in results:
                    acc += r.state[key].double() * (r.num_examples / total)
                new_state[key] = acc.to(ref.dtype)
            global_state = new_state
            t2 = time.perf_counter()
            train_s.append(t1 - t0)
            agg_s.append(t2 - t1)
            examples.append(total)
    finally:
        torch.set_num_threads(saved_threads)
    return {
        "train_seconds": train_s,
        "aggregate_seconds": agg_s,
        "examples_per_round": examples,
        "state_dict": global_state,
    }


def _parallel_floor_worker(
    scenario_json: str, clients: list[int], rounds: int, barrier: Any, results: Any
) -> None:
    """One of W processes of the parallel floor: trains `clients` each round, timed."""
    import json

    import torch

    from fedsim.clients.trainer import LocalTrainer, build_global_model
    from fedsim.clients.worker import load_scenario_data
    from fedsim.config import Scenario
    from fedsim.shards import build_shards

    sc = Scenario.model_validate(json.loads(scenario_json))
    torch.set_num_threads(sc.backend.threads_per_worker)
    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    trainer = LocalTrainer(sc, bundle.train, bundle.input_shape, bundle.num_classes)
    model = build_global_model(sc, bundle.input_shape, bundle.num_classes)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    times = []
    for rnd in range(1, rounds + 1):
        barrier.wait()  # every process starts the round together, as a round's cohorts do
        t0 = time.perf_counter()
        for c in clients:
            trainer.train(client=c, round=rnd, indices=shards.train[c], global_state=state)
        times.append(time.perf_counter() - t0)
    results.put(times)


def parallel_floor(scenario: Any, rounds: int, timeout: float = 600.0) -> dict[str, Any]:
    """The floor measured, not divided: W processes (1 torch thread each) train their share
    of the clients at the same time, like fedsim's W workers. On an idle machine it matches
    `floor`; on a busy one it shows how much of fedsim's gap is CPU contention."""
    import multiprocessing as mp

    from fedsim.engine.grid import cohort_size

    w = scenario.backend.workers
    n = scenario.population
    k = cohort_size(n, w, "auto")
    shares = [list(range(i, min(n, i + k))) for i in range(0, n, k)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(shares))
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_parallel_floor_worker,
            args=(scenario.fingerprint(), share, rounds, barrier, results),
            daemon=True,
        )
        for share in shares
    ]
    for proc in procs:
        proc.start()
    try:
        per_proc = [results.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    per_round = [max(t[r] for t in per_proc) for r in range(rounds)]
    return {"processes": len(procs), "round_seconds": per_round, "per_process": per_proc}


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.rounds", description=__doc__.split("\n")[0]
    )
    p.add_argument("--clients", type=int, default=100, help="population = clients per round")
    p.add_argument(
        "--samples", type=int, default=50, help="examples each client processes per round"
    )
    p.add_argument("--rounds", type=int, default=4, help="rounds per run (first is warm-up)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (backend.workers)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-k1", action="store_true", help="do not run the K=1 baseline")
    p.add_argument(
        "--skip-flower", action="store_true", help="do not run the plain Flower baseline"
    )
    p.add_argument("--dp", action="store_true", help="DP-SGD in every engine")
    p.add_argument(
        "--vector-clients",
        default="auto",
        type=lambda v: v if v == "auto" else int(v),
        help="backend.vector_clients of the vectorised runs",
    )
    p.add_argument(
        "--no-parallel-floor", action="store_true", help="skip the measured W-process floor"
    )
    p.add_argument("--tiny", action="store_true", help="CI size: 10 clients, 2 rounds")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "rounds.json", help="JSON path")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep run dirs here")
    args = p.parse_args(argv)
    if args.tiny:
        args.clients, args.samples, args.rounds = 10, 16, 2
        args.no_parallel_floor = True
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (the first round is a warm-up)")
    if not 1 <= args.clients <= DIGITS_TRAIN // 2:
        p.error(f"--clients must be in 1..{DIGITS_TRAIN // 2} (digits has {DIGITS_TRAIN} images)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    machine = machine_info()
    common = dict(
        clients=args.clients,
        samples=args.samples,
        rounds=args.rounds,
        workers=args.workers,
        batch=args.batch,
        seed=args.seed,
    )
    sc_auto = build_scenario(k="auto", dp=args.dp, **common)
    sc_k1 = build_scenario(k=1, dp=args.dp, **common)
    vec = dict(k="auto", engine="vectorised", vector_clients=args.vector_clients)
    sc_vec = build_scenario(dp=args.dp, **vec, **common)
    sc_vec_other = build_scenario(dp=not args.dp, **vec, **common)
    from fedsim.clients.dp import local_steps
    from fedsim.engine.grid import cohort_size

    shard = DIGITS_TRAIN // args.clients
    workdir = (
        Path(args.keep_runs) if args.keep_runs else Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    )
    started = time.perf_counter()
    try:
        floor = floor_loop(sc_auto, args.rounds)
        pfloor = None if args.no_parallel_floor else parallel_floor(sc_auto, args.rounds)
        auto = timed_run(sc_auto, workdir / "auto", "fedsim_auto")
        vrun = timed_run(sc_vec, workdir / "vec", "fedsim_vec")
        vother = timed_run(sc_vec_other, workdir / "vec_other", "fedsim_vec_other_dp")
        k1 = None if args.skip_k1 else timed_run(sc_k1, workdir / "k1", "fedsim_k1")
        flower = None if args.skip_flower else _plain_flower(sc_k1)
        # Again after the runs: on a shared machine the load drifts; the floor's median is
        # taken over the warm rounds of both passes.
        floor_after = None if args.tiny else floor_loop(sc_auto, args.rounds)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(workdir, ignore_errors=True)

    w = args.workers
    floor_rounds = [
        (t + a) / w for t, a in zip(floor["train_seconds"], floor["aggregate_seconds"], strict=True)
    ]
    floor_warm = floor_rounds[1:]
    if floor_after is not None:
        after_rounds = [
            (t + a) / w
            for t, a in zip(
                floor_after["train_seconds"], floor_after["aggregate_seconds"], strict=True
            )
        ]
        floor_warm = floor_warm + after_rounds[1:]
    else:
        after_rounds = None
    floor_med = median(floor_warm)
    auto_med = auto.warm_median()
    k1_med = k1.warm_median() if k1 else None
    r_k1_auto = ratio(k1_med, auto_med)
    r_auto_floor = ratio(auto_med, floor_med)
    ok_k1 = check(r_k1_auto, ">=", TARGET_K1_OVER_AUTO)
    ok_floor = check(r_auto_floor, "<=", TARGET_AUTO_OVER_FLOOR)
    pfloor_med = median(pfloor["round_seconds"][1:]) if pfloor else None
    n = args.clients
    vec_part = _vectorised_part(args, auto_med, floor_med, vrun, vother, flower)
    flower_med = flower["median_round_seconds"] if flower else None

    result: dict[str, Any] = {
        "benchmark": "rounds",
        "tiny": args.tiny,
        "machine": machine,
        "setup": {
            "clients": n,
            "clients_per_round": n,
            "data": "digits (iid)",
            "train_samples_per_client": shard,
            "samples_processed_per_client_per_round": sc_auto.train.epochs * shard,
            "epochs": sc_auto.train.epochs,
            "batch_size": args.batch,
            "local_steps_per_client": local_steps(sc_auto, shard),
            "model": "cnn channels=[16,32] hidden=64",
            "dp": "DP-SGD z=1 C=1" if args.dp else "off",
            "rounds": args.rounds,
            "warmup_rounds": 1,
            "workers": w,
            "threads_per_worker": sc_auto.backend.threads_per_worker,
            "k_auto": cohort_size(n, w, "auto"),
            "seed": args.seed,
        },
        "fedsim_auto": auto.as_dict(),
        "fedsim_k1": k1.as_dict() if k1 else None,
        "fedsim_vec": vrun.as_dict(),
        "fedsim_vec_other_dp": vother.as_dict(),
        "plain_flower": None
        if flower is None
        else {k: v for k, v in flower.items() if k != "state_dict"},
        "engine_summary": {k: vrun.summary.get(k) for k in ("engine", "vector_clients")},
        "floor": {
            "train_seconds_single_thread": floor["train_seconds"],
            "aggregate_seconds": floor["aggregate_seconds"],
            "round_seconds_over_workers": floor_rounds,
            "round_seconds_over_workers_second_pass": after_rounds,
            "median_round_seconds": floor_med,
        },
        "floor_parallel": None
        if pfloor is None
        else {**pfloor, "median_round_seconds": pfloor_med},
        "per_client_ms": {
            "fedsim_auto": None if auto_med is None else 1000 * auto_med / n,
            "fedsim_k1": None if k1_med is None else 1000 * k1_med / n,
            "plain_flower": None if flower_med is None else 1000 * flower_med / n,
            "floor": None if floor_med is None else 1000 * floor_med / n,
            "floor_parallel": None if pfloor_med is None else 1000 * pfloor_med / n,
        },
        "ratios": {
            "fedsim_k1_over_fedsim_auto": r_k1_auto,
            "fedsim_auto_over_floor": r_auto_floor,
            **vec_part["ratios"],
        },
        "targets": {
            "fedsim_k1_over_fedsim_auto": f">= {TARGET_K1_OVER_AUTO}",
            "fedsim_auto_over_floor": f"<= {TARGET_AUTO_OVER_FLOOR}",
            **vec_part["targets"],
        },
        "met": {
            "fedsim_k1_over_fedsim_auto": ok_k1,
            "fedsim_auto_over_floor": ok_floor,
            **vec_part["met"],
        },
        # No target: the floor measured with W processes at once (same contention as the
        # W Ray workers); on a shared machine it separates engine overhead from CPU shortage.
        "ratios_info": {
            "fedsim_auto_over_parallel_floor": ratio(auto_med, pfloor_med),
            "parallel_floor_over_floor": ratio(pfloor_med, floor_med),
        },
        "checks": {
            # Same clients, seeds and order: K must not change the result; the floor's
            # float64 FedAvg may differ from Flower's in the last bits.
            "max_abs_diff_auto_vs_k1": max_abs_diff(auto.state_dict, k1.state_dict) if k1 else None,
            "max_abs_diff_auto_vs_floor": max_abs_diff(auto.state_dict, floor["state_dict"]),
            # Vectorised vs sequential: the same batches and noise, float rounding apart.
            "max_abs_diff_auto_vs_vec": max_abs_diff(auto.state_dict, vrun.state_dict),
        },
        "benchmark_wall_seconds": round(time.perf_counter() - started, 2),
    }

    rows = [
        [
            "fedsim K=auto",
            fmt_s(auto_med),
            f"{1000 * auto_med / n:.2f}" if auto_med else "-",
            fmt_s(auto.round_seconds[0]),
            fmt_s(auto.startup_seconds),
        ],
        [
            "plain Flower+Ray (K=1)",
            fmt_s(k1_med),
            f"{1000 * k1_med / n:.2f}" if k1_med else "-",
            fmt_s(k1.round_seconds[0]) if k1 else "-",
            fmt_s(k1.startup_seconds) if k1 else "-",
        ],
        [
            "plain Flower (examples' client" + (" + Opacus)" if args.dp else ")"),
            fmt_s(flower_med),
            f"{1000 * flower_med / n:.2f}" if flower_med else "-",
            fmt_s(flower["round_seconds"][0]) if flower else "-",
            fmt_s(flower["startup_seconds"]) if flower else "-",
        ],
        [
            f"fedsim vectorised (V={vrun.summary.get('vector_clients')})",
            fmt_s(vrun.warm_median()),
            f"{1000 * vrun.warm_median() / n:.2f}" if vrun.warm_median() else "-",
            fmt_s(vrun.round_seconds[0]),
            fmt_s(vrun.startup_seconds),
        ],
        [
            f"PyTorch loop / {w} (floor)",
            fmt_s(floor_med),
            f"{1000 * floor_med / n:.2f}" if floor_med else "-",
            fmt_s(floor_rounds[0]),
            "-",
        ],
        [
            f"PyTorch loop, {w} processes at once",
            fmt_s(pfloor_med),
            f"{1000 * pfloor_med / n:.2f}" if pfloor_med else "-",
            fmt_s(pfloor["round_seconds"][0]) if pfloor else "-",
            "-",
        ],
    ]
    print_table(
        f"Per-round time: {n} clients x {sc_auto.train.epochs * shard} samples, cnn, "
        f"{'DP-SGD' if args.dp else 'no DP'}, "
        f"{w} workers (median of rounds 2..{args.rounds})",
        ["engine", "round (median)", "ms / client", "round 1 (cold)", "start-up"],
        rows,
    )
    print_table(
        "Ratios vs targets",
        ["ratio", "measured", "target", ""],
        [
            [
                "fedsim_K1 / fedsim_auto",
                fmt_x(r_k1_auto),
                f">= {TARGET_K1_OVER_AUTO:g}x",
                verdict(ok_k1),
            ],
            [
                "fedsim_auto / floor",
                fmt_x(r_auto_floor),
                f"<= {TARGET_AUTO_OVER_FLOOR:g}x",
                verdict(ok_floor),
            ],
            *vec_part["rows"],
            [
                "(info) fedsim_auto / floor measured in parallel",
                fmt_x(ratio(auto_med, pfloor_med)),
                "-",
                "",
            ],
        ],
    )
    print_note(
        f"machine: {machine['cores_available']} cores, load avg at start "
        f"{machine.get('loadavg_at_start')}; absolute times are noisy on a shared machine, "
        "ratios are measured within this one invocation."
    )
    path = write_json(args.out, result)
    print_note(f"wrote {path}")
    return result


def _vectorised_part(
    args: argparse.Namespace,
    seq_med: float | None,
    floor_med: float | None,
    vrun: Any,
    vother: Any,
    flower: dict[str, Any] | None,
) -> dict[str, Any]:
    """Ratios, targets, verdicts and table rows of the vectorised engine."""
    vec_med, other_med = vrun.warm_median(), vother.warm_median()
    dp_med, nodp_med = (vec_med, other_med) if args.dp else (other_med, vec_med)
    target_seq = TARGET_SEQ_OVER_VEC[bool(args.dp)]
    flower_med = flower["median_round_seconds"] if flower else None
    checks = [
        (
            "plain_flower_over_fedsim_vec",
            ratio(flower_med, vec_med),
            ">=",
            TARGET_FLOWER_OVER_VEC[bool(args.dp)],
        ),
        ("fedsim_auto_over_fedsim_vec", ratio(seq_med, vec_med), ">=", target_seq),
        ("fedsim_vec_over_floor", ratio(vec_med, floor_med), "<=", TARGET_VEC_OVER_FLOOR),
        ("fedsim_vec_dp_over_nodp", ratio(dp_med, nodp_med), "<=", TARGET_VEC_DP_OVER_NODP),
    ]
    out: dict[str, Any] = {"ratios": {}, "targets": {}, "met": {}, "rows": []}
    for name, value, op, target in checks:
        ok = check(value, op, target)
        out["ratios"][name] = value
        out["targets"][name] = f"{op} {target}"
        out["met"][name] = ok
        out["rows"].append(
            [name.replace("_over_", " / "), fmt_x(value), f"{op} {target:g}x", verdict(ok)]
        )
    return out


def _plain_flower(scenario: Any) -> dict[str, Any]:
    """The plain Flower baseline (`benchmarks.flower_baseline`) on the benchmark's scenario."""
    from benchmarks.flower_baseline import run_plain_flower

    print_note("plain Flower (examples' client): running")
    out = run_plain_flower(scenario)
    out["median_round_seconds"] = median(out["round_seconds"][1:])
    return out


if __name__ == "__main__":
    main()
