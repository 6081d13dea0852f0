"""The vectorised engine on a GPU: clients per second vs V and model size, GPU memory.

    python -m benchmarks.gpu [--steps 4] [--dp] [--out benchmarks/results/gpu.json]

Trains chunks of V clients (digits, iid, batch 16, `--steps` local steps each) with
:class:`~fedsim.clients.vectorised.VectorisedTrainer` on ``cuda`` for V in
``--vectors`` and the digits CNN at three widths, and reports clients trained per
second (median of `--repeats` timed chunks after one warm-up) and the peak GPU
memory of a chunk. Without CUDA it prints "no GPU" and exits 0: the GPU path is
then exercised on CPU only (tests/clients/test_vectorised.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, machine_info, median, print_note, print_table, write_json

#: (label, cnn channels, hidden): about 14k, 110k and 900k parameters on 8x8 digits
MODELS = (("cnn-s", [16, 32], 64), ("cnn-m", [64, 128], 256), ("cnn-l", [128, 256], 1024))


def scenario(channels: list[int], hidden: int, steps: int, dp: bool, clients: int) -> Any:
    """A digits scenario on the GPU with `clients` clients of `steps` local steps."""
    from fedsim.config import Scenario

    return Scenario.from_dict(
        {
            "name": "bench-gpu",
            "seed": 0,
            "rounds": 1,
            "population": clients,
            "sampling": {"clients_per_round": clients},
            "data": {"name": "digits", "partition": "iid"},
            "model": {"name": "cnn", "channels": channels, "hidden": hidden},
            "train": {"epochs": 100, "max_steps": steps, "batch_size": 16, "lr": 0.1},
            "dp": {"mode": "sample", "noise_multiplier": 1.0, "max_grad_norm": 1.0}
            if dp
            else {"mode": "off"},
            "backend": {"workers": 1, "gpus_per_worker": 1, "engine": "vectorised"},
        }
    )


def chunk_rate(sc: Any, v: int, repeats: int, device: str) -> dict[str, Any]:
    """Clients per second and peak memory of chunks of `v` clients on `device`."""
    import torch

    from fedsim.clients.cohort import ClientJob
    from fedsim.clients.trainer import build_global_model
    from fedsim.clients.vectorised import VectorisedTrainer
    from fedsim.clients.worker import load_scenario_data
    from fedsim.shards import build_shards

    bundle = load_scenario_data(sc)
    shards = build_shards(sc, bundle)
    init = build_global_model(sc, bundle.input_shape, bundle.num_classes).state_dict()
    trainer = VectorisedTrainer(
        sc, bundle.train, bundle.input_shape, bundle.num_classes, torch.device(device), v
    )
    jobs = [ClientJob(c, 1, shards.train[c], init, {}) for c in range(v)]
    cuda = device.startswith("cuda")
    times = []
    for i in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.train_chunk(jobs)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first chunk warms up kernels and allocator
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in trainer.model.parameters())
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return {
        "V": v,
        "params": params,
        "chunk_seconds": median(times),
        "clients_per_second": v / median(times),  # type: ignore[operator]
        "peak_gpu_mib": None if peak is None else peak / 2**20,
    }


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--dp", action="store_true", help="DP-SGD (z=1, C=1)")
    p.add_argument("--vectors", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "gpu.json")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no GPU: torch.cuda.is_available() is False; the GPU path is tested on CPU only")
        return None
    rows, results = [], []
    for label, channels, hidden in MODELS:
        for v in args.vectors:
            sc = scenario(channels, hidden, args.steps, args.dp, max(args.vectors))
            r = {"model": label, **chunk_rate(sc, v, args.repeats, "cuda")}
            results.append(r)
            rows.append(
                [
                    label,
                    r["params"],
                    v,
                    f"{r['clients_per_second']:.0f}",
                    f"{r['peak_gpu_mib']:.0f}",
                ]
            )
    print_table(
        f"Vectorised engine on {torch.cuda.get_device_name()}: {args.steps} steps of batch 16, "
        f"{'DP-SGD' if args.dp else 'no DP'}",
        ["model", "params", "V", "clients / s", "peak GPU MiB"],
        rows,
    )
    out = {"benchmark": "gpu", "machine": machine_info(), "dp": args.dp, "results": results}
    print_note(f"wrote {write_json(args.out, out)}")
    return out


if __name__ == "__main__":
    main()
