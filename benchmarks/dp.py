"""DP-SGD cost per model, per step: plain SGD vs Opacus hooks vs ghost clipping vs fedsim.

    python -m benchmarks.dp [--model femnist_cnn|cnn|all] [--batch 64] [--steps 5] [--tiny]

For each model, on random data of the model's input shape (femnist_cnn: (1, 28, 28), 62
classes, 6.6M parameters; cnn: digits' (1, 8, 8), 10 classes, 13.7k parameters), time one
optimizer step at a fixed batch size, every variant from the same initial weights:

  non_dp         model + torch.optim.SGD: forward, backward, step.
  opacus_hooks   PrivacyEngine.make_private(grad_sample_mode="hooks"): GradSampleModule
                 (per-sample gradients by hooks, materialised: batch x params floats),
                 DPOptimizer (per-sample clipping, Gaussian noise).
  opacus_ghost   PrivacyEngine.make_private(grad_sample_mode="ghost") with its
                 DPLossFastGradientClipping criterion: per-sample norms without per-sample
                 gradients for Linear layers (two backward passes), then noise.
  fedsim_sample  fedsim's own path: clients/trainer.py LocalTrainer with dp.mode="sample"
                 (Opacus GradSampleModule + DPOptimizer, Poisson batches of expected size
                 `--batch`), one client of batch x steps examples = `--steps` steps per call;
                 includes what a client pays around its steps (loading weights, copying the
                 result).
  fedsim_nondp   the same LocalTrainer with dp.mode="off" (its overhead without DP).
  fedsim_sample_hooks / fedsim_sample_ghost
                 where fedsim has `dp.grad_sample_mode` ("auto" | "hooks" | "ghost"), its
                 two paths forced; fedsim_sample is then the default ("auto": ghost where
                 Linear/Embedding layers hold most parameters), and the JSON says which
                 path it took.

Make_private is called with poisson_sampling=False so the Opacus variants run the exact
batch size; the step time excludes data loading (batches are pre-built tensors). Reported:
samples/s from the median step time and the cost ratio (step time / non-DP step time).
Also timed: Gaussian noise generation alone for the model's parameter count (one
torch.normal over all of them; Opacus' per-parameter `_generate_noise`, as DPOptimizer does;
and with secure_mode, which draws 4 normals per coordinate).

Torch threads: `--threads` (default 1, like a fedsim worker with threads_per_worker = 1).
Each variant runs in a fresh process (spawned), unless --in-process (implied by --tiny): run
one after the other in one process, the variants after Opacus hooks on femnist_cnn (which
peaks at ~4 GB of per-sample gradients) ran up to 2x slower here.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    fmt_s,
    fmt_x,
    machine_info,
    print_note,
    print_table,
    write_json,
)

MODELS: dict[str, dict[str, Any]] = {
    "femnist_cnn": {
        "input_shape": (1, 28, 28),
        "num_classes": 62,
        "options": {},
        "step_factor": 1,
    },
    # Steps of a few ms are noisy: time 10x as many.
    "cnn": {
        "input_shape": (1, 8, 8),
        "num_classes": 10,
        "options": {"channels": [16, 32], "hidden": 64},
        "step_factor": 10,
    },
}
VARIANTS = ("non_dp", "opacus_hooks", "opacus_ghost", "fedsim_sample", "fedsim_nondp")
# Run too when fedsim has dp.grad_sample_mode: its two paths forced.
FORCED = ("fedsim_sample_hooks", "fedsim_sample_ghost")
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
LR = 0.01


def _build(name: str) -> Any:
    import torch

    from fedsim.models import build_model

    spec = MODELS[name]
    torch.manual_seed(0)
    return build_model(
        name, input_shape=spec["input_shape"], num_classes=spec["num_classes"], **spec["options"]
    )


def _data(name: str, n: int) -> tuple[Any, Any]:
    import torch

    spec = MODELS[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn((n, *spec["input_shape"]), generator=g)
    y = torch.randint(0, spec["num_classes"], (n,), generator=g)
    return x, y


def _time_steps(step: Any, batches: list[tuple[Any, Any]], warmup: int) -> list[float]:
    """Run `step(x, y)` on each batch; per-step seconds after `warmup` untimed steps."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    times = []
    for x, y in batches:
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return times


def bench_non_dp(name: str, batches: list, warmup: int) -> list[float]:
    import torch
    from torch import nn

    model = _build(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return _time_steps(step, batches, warmup)


def bench_opacus(name: str, batches: list, warmup: int, mode: str) -> list[float]:
    import torch
    from opacus import PrivacyEngine
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    model = _build(name)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x_all = torch.cat([b[0] for b in batches])
    y_all = torch.cat([b[1] for b in batches])
    loader = DataLoader(TensorDataset(x_all, y_all), batch_size=len(batches[0][1]))
    engine = PrivacyEngine()
    made = engine.make_private(
        module=model,
        optimizer=opt,
        criterion=nn.CrossEntropyLoss(),
        data_loader=loader,
        noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    if mode == "ghost":
        module, dp_opt, criterion, _ = made
    else:
        module, dp_opt, _ = made
        criterion = nn.CrossEntropyLoss()

    def step(x: Any, y: Any) -> None:
        dp_opt.zero_grad(set_to_none=True)
        loss = criterion(module(x), y)
        loss.backward()
        dp_opt.step()

    return _time_steps(step, batches, warmup)


def fedsim_modes() -> tuple[str, ...]:
    """The values of fedsim's dp.grad_sample_mode, if this fedsim has the setting."""
    from typing import get_args

    from fedsim.config import DPConfig

    field = DPConfig.model_fields.get("grad_sample_mode")
    return tuple(get_args(field.annotation)) if field is not None else ()


def bench_fedsim(
    name: str, batch: int, steps: int, repeats: int, warmup: int, dp: bool, mode: str | None = None
) -> dict[str, Any]:
    """Per-step seconds of LocalTrainer.train on one client of batch x steps examples.

    `mode` sets dp.grad_sample_mode (fedsim's default when None); the path the trainer
    chose is returned with the times."""
    import numpy as np
    import torch

    from fedsim.clients.trainer import LocalTrainer
    from fedsim.config import Scenario
    from fedsim.data import ArrayDataset

    spec = MODELS[name]
    n = batch * steps
    x, y = _data(name, n)
    dataset = ArrayDataset(x, y)
    raw: dict[str, Any] = {
        "name": f"bench-dp-{name}",
        "seed": 0,
        "rounds": 1,
        "population": 1,
        "data": {"name": "digits"},  # validation only: the trainer gets `dataset` directly
        "model": {"name": name, **spec["options"]},
        "train": {"epochs": 1, "batch_size": batch, "lr": LR},
        "dp": {
            "mode": "sample",
            "noise_multiplier": NOISE_MULTIPLIER,
            "max_grad_norm": MAX_GRAD_NORM,
        }
        if dp
        else {"mode": "off"},
    }
    if dp and mode is not None:
        raw["dp"]["grad_sample_mode"] = mode
    sc = Scenario.from_dict(raw)
    trainer = LocalTrainer(sc, dataset, spec["input_shape"], spec["num_classes"])
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in _build(name).state_dict().items()}
    indices = np.arange(n, dtype=np.int64)
    per_step = []
    for r in range(warmup + repeats):
        t0 = time.perf_counter()
        res = trainer.train(client=0, round=r + 1, indices=indices, global_state=state)
        dt = time.perf_counter() - t0
        if r >= warmup:
            per_step.append(dt / res.steps)
    chosen = getattr(trainer, "grad_sample_mode", "hooks") if dp else None
    return {"times": per_step, "grad_sample_mode": chosen}


def bench_noise(num_params: int, model_name: str, repeats: int) -> dict[str, Any]:
    """Gaussian noise for `num_params` coordinates: one tensor, per parameter, secure mode."""
    import torch
    from opacus.optimizers.optimizer import _generate_noise

    g = torch.Generator().manual_seed(0)
    out = torch.empty(num_params)
    params = [p.detach() for p in _build(model_name).parameters()]

    def timed(fn: Any) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    one = timed(lambda: out.normal_(0.0, 1.0, generator=g))
    per_param = timed(lambda: [_generate_noise(1.0, p, generator=g) for p in params])
    secure = timed(lambda: [_generate_noise(1.0, p, generator=g, secure_mode=True) for p in params])
    return {
        "params": num_params,
        "one_tensor_seconds": one,
        "opacus_per_parameter_seconds": per_param,
        "opacus_secure_mode_seconds": secure,
        "normals_per_second": num_params / one,
    }


def _variant(name: str, variant: str, batch: int, steps: int, warmup: int, threads: int) -> Any:
    """Run one variant (or the noise timing) and return its per-step seconds (or dict)."""
    import torch

    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    torch.set_num_threads(threads)
    if variant == "noise":
        n_params = sum(p.numel() for p in _build(name).parameters())
        return bench_noise(n_params, name, repeats=max(3, steps))
    if variant.startswith("fedsim_"):
        forced = variant.removeprefix("fedsim_sample_") if variant in FORCED else None
        return bench_fedsim(
            name, batch, steps, repeats=2, warmup=warmup, dp=variant != "fedsim_nondp", mode=forced
        )
    x, y = _data(name, batch * steps)
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    if variant == "non_dp":
        return bench_non_dp(name, batches, warmup)
    return bench_opacus(name, batches, warmup, variant.removeprefix("opacus_"))


def _measure(name: str, variant: str, args: argparse.Namespace, *, isolate: bool) -> Any:
    """One variant, by default in a fresh process: a variant that ran before leaves a
    different allocator state (hooks on femnist_cnn peaks at ~4 GB) and, measured in the
    same process, slowed the next variants by up to 2x here."""
    steps = args.steps * MODELS[name]["step_factor"]
    call = (name, variant, args.batch, steps, args.warmup, args.threads)
    if not isolate:
        return _variant(*call)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_variant, *call).result()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dp", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="all", choices=[*MODELS, "all"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps (or calls) first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every variant in this process (faster, less isolated; --tiny does this)",
    )
    p.add_argument("--tiny", action="store_true", help="CI size: batch 8, 2 steps, in-process")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "dp.json", help="JSON path")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.steps = 8, 2
        args.in_process = True
    if args.batch < 1 or args.steps < 1:
        p.error("--batch and --steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    # Opacus' hooks fire on module outputs (inputs need no grad) and it reminds about
    # secure_mode on every make_private: expected here, noise in the table.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        machine = machine_info()
        names = list(MODELS) if args.model == "all" else [args.model]
        models: dict[str, Any] = {}
        for name in names:
            n_params = sum(p.numel() for p in _build(name).parameters())
            names_v = list(VARIANTS) + (list(FORCED) if fedsim_modes() else [])
            raw = {v: _measure(name, v, args, isolate=not args.in_process) for v in names_v}
            step_times = {v: r["times"] if isinstance(r, dict) else r for v, r in raw.items()}
            base = statistics.median(step_times["non_dp"])
            variants = {}
            for v in names_v:
                med = statistics.median(step_times[v])
                variants[v] = {
                    "step_seconds": step_times[v],
                    "median_step_seconds": med,
                    "samples_per_second": args.batch / med,
                    "ratio_to_non_dp": med / base,
                }
                if isinstance(raw[v], dict) and raw[v].get("grad_sample_mode"):
                    variants[v]["fedsim_grad_sample_mode"] = raw[v]["grad_sample_mode"]
            noise = _measure(name, "noise", args, isolate=not args.in_process)
            per_param = noise["opacus_per_parameter_seconds"]
            for v in ("fedsim_sample", "opacus_ghost", "non_dp"):
                noise[f"fraction_of_{v}_step"] = per_param / variants[v]["median_step_seconds"]
            models[name] = {
                "params": n_params,
                "input_shape": list(MODELS[name]["input_shape"]),
                "num_classes": MODELS[name]["num_classes"],
                "variants": variants,
                "noise": noise,
                "fedsim_default_grad_sample_mode": variants["fedsim_sample"].get(
                    "fedsim_grad_sample_mode", "hooks"
                ),
                "ratios": {v: variants[v]["ratio_to_non_dp"] for v in names_v},
            }
    finally:
        torch.set_num_threads(saved_threads)

    result: dict[str, Any] = {
        "benchmark": "dp",
        "tiny": args.tiny,
        "machine": {**machine, "torch_threads": args.threads},
        "setup": {
            "batch": args.batch,
            "steps": args.steps,
            "steps_per_model": {n: args.steps * MODELS[n]["step_factor"] for n in MODELS},
            "warmup": args.warmup,
            "noise_multiplier": NOISE_MULTIPLIER,
            "max_grad_norm": MAX_GRAD_NORM,
            "optimizer": f"SGD lr={LR}",
            "data": "random tensors of the model's input shape",
            "isolation": "in-process" if args.in_process else "fresh process per variant",
        },
        "models": models,
        # headline: DP cost of fedsim's path, and what ghost clipping would give, per model
        "ratios": {
            name: {
                "fedsim_sample_over_non_dp": m["ratios"]["fedsim_sample"],
                "opacus_hooks_over_non_dp": m["ratios"]["opacus_hooks"],
                "opacus_ghost_over_non_dp": m["ratios"]["opacus_ghost"],
                "fedsim_sample_over_opacus_ghost": m["ratios"]["fedsim_sample"]
                / m["ratios"]["opacus_ghost"],
                "fedsim_sample_over_opacus_hooks": m["ratios"]["fedsim_sample"]
                / m["ratios"]["opacus_hooks"],
                "fedsim_default_grad_sample_mode": m["fedsim_default_grad_sample_mode"],
                **{f"{v}_over_non_dp": m["ratios"][v] for v in FORCED if v in m["ratios"]},
            }
            for name, m in models.items()
        },
        "benchmark_wall_seconds": round(time.perf_counter() - started, 2),
    }

    labels = {
        "non_dp": "non-DP (SGD)",
        "opacus_hooks": "Opacus hooks",
        "opacus_ghost": "Opacus ghost clipping",
        "fedsim_sample": "fedsim LocalTrainer, dp=sample",
        "fedsim_sample_hooks": "fedsim, dp=sample, grad_sample_mode=hooks",
        "fedsim_sample_ghost": "fedsim, dp=sample, grad_sample_mode=ghost",
        "fedsim_nondp": "fedsim LocalTrainer, dp=off",
    }
    for name, m in models.items():
        default_mode = m["fedsim_default_grad_sample_mode"]
        labels["fedsim_sample"] = f"fedsim LocalTrainer, dp=sample (default: {default_mode})"
        rows = [
            [
                labels[v],
                fmt_s(m["variants"][v]["median_step_seconds"]),
                f"{m['variants'][v]['samples_per_second']:.0f}",
                fmt_x(m["variants"][v]["ratio_to_non_dp"]),
            ]
            for v in m["variants"]
        ]
        nz = m["noise"]
        dp_step = m["variants"]["fedsim_sample"]["median_step_seconds"]
        plain_step = m["variants"]["non_dp"]["median_step_seconds"]
        for label, key in (
            ("one torch.normal_", "one_tensor_seconds"),
            ("Opacus per parameter", "opacus_per_parameter_seconds"),
            ("Opacus secure_mode", "opacus_secure_mode_seconds"),
        ):
            rows.append(
                [
                    f"noise alone ({nz['params'] / 1e6:.2f}M): {label}",
                    fmt_s(nz[key]),
                    "-",
                    f"{nz[key] / dp_step:.0%} of fedsim DP step, "
                    f"{nz[key] / plain_step:.0%} of non-DP",
                ]
            )
        print_table(
            f"{name} ({m['params']:,} params), batch {args.batch}, {args.threads} thread(s)",
            ["variant", "step (median)", "samples/s", "cost vs non-DP"],
            rows,
        )
    print_note(
        "No numeric target in the issue for DP cost. Load avg at start "
        f"{machine.get('loadavg_at_start')} (shared machine: absolute times are noisy; ratios "
        "are within this run)."
    )
    path = write_json(args.out, result)
    print_note(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
