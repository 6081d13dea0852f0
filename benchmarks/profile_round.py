"""Where a fedsim round's time goes: server-side breakdown, server cProfile, worker cProfile.

    python -m benchmarks.profile_round [--clients 100] [--samples 50] [--rounds 4] [--k auto]
                                       [--tiny] [--out benchmarks/results/profile]

`python -m cProfile -m benchmarks.rounds` only sees the main thread, which in Flower's
simulation runs the engine loop and mostly waits: the ServerApp (fedsim's round loop) runs in
its own thread and the ClientApp in Ray worker processes. So this tool, in this process only
and without touching the engine's files:

1. wraps `fedsim.engine.simulation._server_loop` so a cProfile.Profile runs *inside the ServerApp
   thread* (written to OUT/server.prof), and times, per round, the steps of the loop:
   configure_train, packing cohorts (`pack_request`), pushing them to Flower, waiting for the
   replies (`_collect`, with the worker-side seconds each cohort reports), unpacking them into
   per-client replies (`_unpack`) and `aggregate_train`;
   The profiles count the thread's CPU time (time.thread_time), not wall time: on a busy
   machine a wall-clock profile charges the time a thread waits for a core to whatever
   line it was on (and the polling sleeps dominate it); the step timings are wall time.
2. runs the worker's side of one cohort in this process (unpack_request -> WorkerState
   .run_cohort -> pack_reply, what the ClientApp does on a Ray worker) under cProfile
   (OUT/worker.prof) and with a plain-timer split: training vs the rest.

Same scenario as benchmarks.rounds (digits, small CNN, no DP).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    fmt_s,
    machine_info,
    median,
    print_note,
    print_table,
    timed_run,
    write_json,
)
from benchmarks.rounds import build_scenario

STEPS = ("configure_train", "pack", "push", "wait", "unpack", "aggregate_train")


class _Recorder:
    def __init__(self) -> None:
        self.round = 0
        self.times: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.worker_seconds: dict[int, list[float]] = defaultdict(list)
        self.lock = threading.Lock()

    def add(self, step: str, seconds: float) -> None:
        with self.lock:
            self.times[self.round][step] += seconds


def _timed(rec: _Recorder, step: str, fn: Any) -> Any:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            rec.add(step, time.perf_counter() - t0)

    return wrapper


def profile_server(sc: Any, out: Path, workdir: Path, cprofile: bool = True) -> dict[str, Any]:
    """Run the scenario with the server thread profiled and its round steps timed."""
    import fedsim.engine.grid as grid_mod
    import fedsim.engine.simulation as sim

    rec = _Recorder()
    prof = cProfile.Profile(time.thread_time)
    saved = {
        "loop": sim._server_loop,
        "build_strategy": sim.build_strategy,
        "pack": grid_mod.pack_request,
        "unpack_reply": grid_mod.unpack_reply,
        "collect": grid_mod.VirtualClientGrid._collect,
        "unpack": grid_mod.VirtualClientGrid._unpack,
        "exchange": grid_mod.VirtualClientGrid._exchange,
    }

    def loop(*a: Any, **kw: Any) -> Any:
        if cprofile:
            prof.enable()
        try:
            return saved["loop"](*a, **kw)
        finally:
            if cprofile:
                prof.disable()

    def build_strategy(scenario: Any, *args: Any) -> Any:
        strategy = saved["build_strategy"](scenario, *args)
        configure, aggregate = strategy.configure_train, strategy.aggregate_train

        def configure_train(server_round: int, *a: Any, **kw: Any) -> Any:
            rec.round = server_round
            t0 = time.perf_counter()
            try:
                return configure(server_round, *a, **kw)
            finally:
                rec.add("configure_train", time.perf_counter() - t0)

        strategy.configure_train = configure_train  # type: ignore[method-assign]
        strategy.aggregate_train = _timed(rec, "aggregate_train", aggregate)  # type: ignore[method-assign]
        return strategy

    def unpack_reply(rd: Any) -> Any:
        outcomes, meta = saved["unpack_reply"](rd)
        rec.worker_seconds[rec.round].append(float(meta["seconds"]))
        return outcomes, meta

    def exchange(self: Any, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        before = dict(rec.times[rec.round])
        try:
            return saved["exchange"](self, *a, **kw)
        finally:
            total = time.perf_counter() - t0
            now = rec.times[rec.round]
            inner = sum(now.get(k, 0.0) - before.get(k, 0.0) for k in ("pack", "wait", "unpack"))
            rec.add("push", total - inner)

    sim._server_loop = loop
    sim.build_strategy = build_strategy
    grid_mod.pack_request = _timed(rec, "pack", saved["pack"])
    grid_mod.unpack_reply = unpack_reply
    grid_mod.VirtualClientGrid._collect = _timed(rec, "wait", saved["collect"])
    grid_mod.VirtualClientGrid._unpack = _timed(rec, "unpack", saved["unpack"])
    grid_mod.VirtualClientGrid._exchange = exchange
    try:
        tr = timed_run(sc, workdir / "run", "fedsim")
    finally:
        sim._server_loop = saved["loop"]
        sim.build_strategy = saved["build_strategy"]
        grid_mod.pack_request = saved["pack"]
        grid_mod.unpack_reply = saved["unpack_reply"]
        grid_mod.VirtualClientGrid._collect = saved["collect"]
        grid_mod.VirtualClientGrid._unpack = saved["unpack"]
        grid_mod.VirtualClientGrid._exchange = saved["exchange"]
    if cprofile:
        prof.dump_stats(str(out / "server.prof"))

    per_round = []
    for m in tr.metrics:
        r = m["round"]
        steps = {k: rec.times[r].get(k, 0.0) for k in STEPS}
        ws = rec.worker_seconds.get(r, [])
        row = {
            "round": r,
            "seconds": m["seconds"],
            **steps,
            "other": m["seconds"] - sum(steps.values()),
            "worker_seconds_max": max(ws) if ws else None,
            "worker_seconds_sum": sum(ws) if ws else None,
            "cohorts": len(ws),
        }
        # What the wait costs beyond the workers' own time: the slowest cohort, or the
        # busiest worker when cohorts outnumber workers (K=1), bounds the compute.
        busy = None if not ws else max(max(ws), sum(ws) / sc.backend.workers)
        row["wait_minus_worker_max"] = None if not ws else row["wait"] - row["worker_seconds_max"]
        row["engine_overhead"] = None if busy is None else row["wait"] - busy
        per_round.append(row)
    warm = per_round[1:] or per_round
    keys = [
        *STEPS,
        "other",
        "worker_seconds_max",
        "worker_seconds_sum",
        "wait_minus_worker_max",
        "engine_overhead",
        "seconds",
    ]
    med = {k: median([r[k] for r in warm if r[k] is not None]) for k in keys}
    return {
        "per_round": per_round,
        "median_warm": med,
        "top_cumulative": _top(prof, "cumulative", 25) if cprofile else [],
        "top_tottime": _top(prof, "tottime", 25) if cprofile else [],
    }


def profile_worker(
    sc: Any, out: Path, k: int, repeats: int = 2, cprofile: bool = True
) -> dict[str, Any]:
    """The ClientApp's work for one cohort of k clients, in this process."""
    import torch
    from flwr.app import ArrayRecord, RecordDict

    from fedsim.clients import worker as worker_mod
    from fedsim.clients.trainer import build_global_model
    from fedsim.protocol import pack_reply, pack_request, unpack_request

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(sc.backend.threads_per_worker)
    try:
        ws = worker_mod.WorkerState(sc)
        model = build_global_model(sc, ws.bundle.input_shape, ws.bundle.num_classes)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict())})
        clients = list(range(min(k, sc.population)))
        train_time = [0.0]
        real_train = ws.trainer.train

        def timed_train(**kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real_train(**kw)
            finally:
                train_time[0] += time.perf_counter() - t0

        ws.trainer.train = timed_train  # type: ignore[method-assign]
        prof = cProfile.Profile(time.thread_time)
        splits = []
        for rep in range(repeats + 1):
            rd = pack_request(
                round=rep + 1,
                kind="train",
                scenario_json=sc.fingerprint(),
                clients=clients,
                contents=[content] * len(clients),
            )
            train_time[0] = 0.0
            if rep > 0 and cprofile:
                prof.enable()
            t0 = time.perf_counter()
            req = unpack_request(rd)
            t1 = time.perf_counter()
            outcomes = ws.run_cohort(req)
            t2 = time.perf_counter()
            pack_reply(outcomes, worker=0, seconds=t2 - t0)
            t3 = time.perf_counter()
            if rep > 0 and cprofile:
                prof.disable()
            if rep > 0:
                splits.append(
                    {
                        "unpack_request": t1 - t0,
                        "run_cohort": t2 - t1,
                        "of_which_trainer_train": train_time[0],
                        "pack_reply": t3 - t2,
                        "total": t3 - t0,
                    }
                )
        if cprofile:
            prof.dump_stats(str(out / "worker.prof"))
    finally:
        torch.set_num_threads(saved_threads)
    last = splits[-1]
    return {
        "clients_in_cohort": len(clients),
        "splits": splits,
        "non_training_fraction": 1 - last["of_which_trainer_train"] / last["total"],
        "top_cumulative": _top(prof, "cumulative", 25) if cprofile else [],
        "top_tottime": _top(prof, "tottime", 20) if cprofile else [],
    }


def _top(prof: cProfile.Profile, key: str, n: int) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof, stream=io.StringIO())
    stats.sort_stats(key)
    rows = []
    for func in stats.fcn_list[:n]:  # type: ignore[attr-defined]
        cc, nc, tt, ct, _ = stats.stats[func]  # type: ignore[attr-defined]
        filename, line, name = func
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": nc,
                "tottime": round(tt, 4),
                "cumtime": round(ct, 4),
            }
        )
    return rows


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_round", description=__doc__.split("\n")[0]
    )
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--k", default="auto", help="clients_per_message: 'auto' or an integer")
    p.add_argument(
        "--scale-population",
        type=int,
        default=None,
        help="profile benchmarks.scale's scenario (synthetic + logreg, 10%% per round) "
        "at this population instead",
    )
    p.add_argument(
        "--no-cprofile",
        action="store_true",
        help="only the step timings (cProfile slows the profiled thread and inflates them)",
    )
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "profile")
    args = p.parse_args(argv)
    if args.tiny:
        args.clients, args.samples, args.rounds = 10, 16, 2
    k: int | str = args.k if args.k == "auto" else int(args.k)
    if args.scale_population:
        from benchmarks import scale

        sc = scale.build_scenario(
            population=args.scale_population, per_round=0.1, rounds=args.rounds,
            workers=args.workers, batch=32, max_steps=5, dim=60,
        )  # fmt: skip
        sc = sc.model_copy(
            update={"backend": sc.backend.model_copy(update={"clients_per_message": k})}
        )
        args.clients = sc.clients_per_round
    else:
        sc = build_scenario(
            clients=args.clients, samples=args.samples, rounds=args.rounds, workers=args.workers,
            k=k,
        )  # fmt: skip
    from fedsim.engine.grid import cohort_size

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        server = profile_server(sc, out, workdir, cprofile=not args.no_cprofile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    worker = profile_worker(
        sc, out, cohort_size(args.clients, args.workers, k), cprofile=not args.no_cprofile
    )
    result = {
        "benchmark": "profile_round",
        "machine": machine_info(),
        "setup": {
            "scenario": sc.name,
            "population": sc.population,
            "clients": args.clients,
            "samples": args.samples,
            "rounds": args.rounds,
            "workers": args.workers,
            "clients_per_message": k,
            "epochs": sc.train.epochs,
        },
        "profile_timer": None
        if args.no_cprofile
        else "thread CPU time (time.thread_time); step timings are wall time",
        "server": server,
        "worker": worker,
    }
    med = server["median_warm"]
    print_table(
        f"Server-side round breakdown (median of warm rounds), {args.clients} clients, K={k}",
        ["step", "seconds", "share of round"],
        [
            [s, fmt_s(med[s]), f"{med[s] / med['seconds']:.0%}" if med[s] is not None else "-"]
            for s in [*STEPS, "other", "seconds"]
        ]
        + [
            ["(worker-reported seconds: slowest cohort)", fmt_s(med["worker_seconds_max"]), "-"],
            ["(worker-reported seconds: sum of cohorts)", fmt_s(med["worker_seconds_sum"]), "-"],
            [
                "(wait - max(slowest cohort, sum / workers): engine + transport)",
                fmt_s(med["engine_overhead"]),
                "-",
            ],
        ],
    )
    last = worker["splits"][-1]
    print_table(
        f"Worker side of one cohort ({worker['clients_in_cohort']} clients), in-process",
        ["step", "seconds"],
        [[k2, fmt_s(v)] for k2, v in last.items()],
    )
    if not args.no_cprofile:
        print_table(
            "Server thread, top functions by own time",
            ["function", "calls", "tottime", "cumtime"],
            [
                [r["function"][-70:], r["calls"], f"{r['tottime']:.3f}", f"{r['cumtime']:.3f}"]
                for r in server["top_tottime"][:15]
            ],
        )
        print_table(
            "Worker cohort, top functions by own time",
            ["function", "calls", "tottime", "cumtime"],
            [
                [r["function"][-70:], r["calls"], f"{r['tottime']:.3f}", f"{r['cumtime']:.3f}"]
                for r in worker["top_tottime"][:15]
            ],
        )
    path = write_json(out / "profile.json", result)
    print_note(f"wrote {path}" + ("" if args.no_cprofile else f" and {out}/*.prof"))
    return result


if __name__ == "__main__":
    main()
