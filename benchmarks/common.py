"""Shared pieces of the speed harness: machine info, timed fedsim runs, RSS sampling, tables.

Every benchmark reports *ratios measured within one invocation* (same machine, same load), so
a noisy or shared machine shifts the absolute seconds but much less the ratios. The JSON files
record the machine (cores, load average at start, torch threads) next to the numbers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The round timer is fedsim's own observer; imported here for the harness and its tests.
from fedsim.engine.observers import RoundTimer

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """Cores, platform, library versions and torch threads of this process."""
    import torch

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        info["mem_total_gib"] = round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        )
    except (ValueError, OSError, AttributeError):
        pass
    info.update(_git_state())
    for mod in ("flwr", "ray", "opacus", "numpy"):
        try:
            from importlib.metadata import version

            info[mod] = version(mod)
        except Exception:  # noqa: BLE001 - informational only
            pass
    return info


def _git_state() -> dict[str, Any]:
    """Commit of the checkout measured, and the engine files modified in the working tree."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "fedsim", "clients", "strategies"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": head or None, "engine_files_modified": [line[3:] for line in status]}


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal and console.width < 120:
        console = Console(width=120)
    return console


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------- numbers


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def warm_round_seconds(round_seconds: Sequence[float], warmup: int = 1) -> list[float]:
    """Per-round seconds without the first `warmup` rounds (the last one if no more).

    Round 1 carries the workers' cold start (imports, dataset, model, Opacus wrappers).
    """
    secs = list(round_seconds)
    return secs[warmup:] if len(secs) > warmup else secs[-1:]


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# --------------------------------------------------------------------------- memory


def _psutil() -> Any | None:
    """psutil from the venv, or the copy Ray vendors in ray/thirdparty_files, or None."""
    try:
        import psutil  # type: ignore[import-not-found]

        return psutil
    except ImportError:
        pass
    try:
        import ray

        vendored = Path(ray.__file__).parent / "thirdparty_files"
        if vendored.is_dir() and str(vendored) not in sys.path:
            sys.path.append(str(vendored))
        import psutil  # type: ignore[import-not-found,no-redef]

        return psutil
    except ImportError:
        return None


RAY_MARKERS = ("ray::", "raylet", "gcs_server", "ray/_private", "ray/dashboard")


class ProcessTreeRSS:
    """Samples the summed RSS of this process and all its descendants in a background thread.

    Ray's processes started by a local `ray.init()` (gcs_server, raylet, and through the raylet
    every worker) are descendants of the driver, so the tree covers the whole simulation.
    Processes whose command line looks like Ray's but that are *not* in the tree (another
    user's simulation on a shared machine) are counted in `foreign_ray_processes` for
    information and never added to the total.

    RSS counts shared pages (the torch libraries, mapped once per process) in every process,
    so the sum over-estimates the memory really used; on Linux `peak_pss_bytes` (proportional
    set size, shared pages split between their users) is sampled too.
    """

    def __init__(self, interval: float = 0.2, pss: bool = True) -> None:
        self.interval = interval
        self.want_pss = pss
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.peak_ray_processes = 0
        self.foreign_ray_processes = 0
        self.samples = 0
        self.backend = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ps = _psutil()
        if self._ps is not None:
            self.backend = "psutil"
        elif Path("/proc/self/status").exists():
            self.backend = "procfs"

    # ------------------------------------------------------------------ process listing
    def _tree(self) -> list[int]:
        me = os.getpid()
        if self._ps is not None:
            try:
                root = self._ps.Process(me)
                return [me] + [c.pid for c in root.children(recursive=True)]
            except self._ps.Error:
                return [me]
        # procfs: build the parent map once per sample
        parents: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read().decode(errors="replace")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
        out, todo = [], [me]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(parents.get(pid, []))
        return out

    @staticmethod
    def _rss_pss(pid: int, want_pss: bool) -> tuple[int, int]:
        rss = pss = 0
        try:
            if want_pss:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Rss:"):
                            rss = int(line.split()[1]) * 1024
                        elif line.startswith("Pss:"):
                            pss = int(line.split()[1]) * 1024
                            break
                return rss, pss
            with open(f"/proc/{pid}/statm") as fh:
                rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
        return rss, pss

    @staticmethod
    def _cmdline(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    def sample(self) -> int:
        """One sample; returns the current summed RSS in bytes."""
        tree = self._tree()
        total_rss = total_pss = 0
        ray_count = 0
        use_proc = Path("/proc/self/smaps_rollup").exists()
        for pid in tree:
            if use_proc:
                rss, pss = self._rss_pss(pid, self.want_pss)
            elif self._ps is not None:
                try:
                    rss, pss = self._ps.Process(pid).memory_info().rss, 0
                except self._ps.Error:
                    rss, pss = 0, 0
            else:
                rss, pss = 0, 0
            total_rss += rss
            total_pss += pss
            if any(m in self._cmdline(pid) for m in RAY_MARKERS):
                ray_count += 1
        self.samples += 1
        self.peak_rss = max(self.peak_rss, total_rss)
        self.peak_pss = max(self.peak_pss, total_pss)
        self.peak_processes = max(self.peak_processes, len(tree))
        self.peak_ray_processes = max(self.peak_ray_processes, ray_count)
        return total_rss

    def _count_foreign(self) -> None:
        tree = set(self._tree())
        n = 0
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            if pid in tree:
                continue
            cmd = self._cmdline(pid)
            if any(m in cmd for m in ("ray::", "raylet", "gcs_server")):
                n += 1
        self.foreign_ray_processes = max(self.foreign_ray_processes, n)

    # ------------------------------------------------------------------ thread
    def _loop(self) -> None:
        k = 0
        while not self._stop.is_set():
            try:
                self.sample()
                if k % 25 == 0:
                    self._count_foreign()
            except Exception:  # noqa: BLE001 - never kill the benchmark for a sample
                pass
            k += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessTreeRSS:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def result(self) -> dict[str, Any]:
        return {
            "peak_rss_bytes": self.peak_rss,
            "peak_rss_gib": round(self.peak_rss / 2**30, 3),
            "peak_pss_bytes": self.peak_pss or None,
            "peak_pss_gib": round(self.peak_pss / 2**30, 3) if self.peak_pss else None,
            "peak_processes": self.peak_processes,
            "peak_ray_processes": self.peak_ray_processes,
            "foreign_ray_processes_seen": self.foreign_ray_processes,
            "samples": self.samples,
            "interval_s": self.interval,
            "backend": self.backend,
        }


# --------------------------------------------------------------------------- fedsim runs


@dataclass
class TimedRun:
    """A fedsim run with the timings the harness needs (from a `RoundTimer`)."""

    label: str
    wall_seconds: float
    round_seconds: list[float]
    round1_start_seconds: float | None  # from calling run() to the server starting round 1
    first_round_done_after: float | None  # from calling run() to round 1 done
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    state_dict: dict[str, Any] = field(repr=False)
    memory: dict[str, Any] | None = None

    @property
    def startup_seconds(self) -> float | None:
        """Start-up cost: time to the first round done minus a steady-state round.

        Covers run()'s set-up, Ray's start, and the workers' imports, data set and model:
        Flower starts the workers while the ServerApp thread already runs round 1, so
        the time to round 1's start alone misses the workers' cold start.
        """
        warm = self.warm_median()
        if self.first_round_done_after is None or warm is None:
            return None
        return max(0.0, self.first_round_done_after - warm)

    def warm_median(self, warmup: int = 1) -> float | None:
        return median(warm_round_seconds(self.round_seconds, warmup))

    def as_dict(self, warmup: int = 1) -> dict[str, Any]:
        d: dict[str, Any] = {
            "label": self.label,
            "round_seconds": self.round_seconds,
            "warm_round_seconds": warm_round_seconds(self.round_seconds, warmup),
            "median_round_seconds": self.warm_median(warmup),
            "first_round_seconds": self.round_seconds[0] if self.round_seconds else None,
            "startup_seconds": _r(self.startup_seconds),
            "run_to_round1_start_seconds": _r(self.round1_start_seconds),
            "time_to_first_metrics_seconds": _r(self.first_round_done_after),
            "wall_seconds": round(self.wall_seconds, 3),
            "clients_trained": [m.get("clients_trained") for m in self.metrics],
            "clients_failed": [m.get("clients_failed") for m in self.metrics],
        }
        if self.memory is not None:
            d["memory"] = self.memory
        return d


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def timed_run(
    scenario: Any, out: str | Path, label: str, *, measure_memory: bool = False
) -> TimedRun:
    """`fedsim.run` (no progress display) timed by a `RoundTimer`, with optional RSS."""
    from fedsim.launch import run

    timer = RoundTimer()
    monitor = ProcessTreeRSS() if measure_memory else None
    if monitor is not None:
        with monitor:
            result = run(scenario, out, overwrite=True, progress=False, observers=[timer])
    else:
        result = run(scenario, out, overwrite=True, progress=False, observers=[timer])
    return TimedRun(
        label=label,
        wall_seconds=time.perf_counter() - timer.t0,
        round_seconds=timer.round_seconds,
        round1_start_seconds=timer.first_start_after,
        first_round_done_after=timer.first_end_after,
        metrics=result.metrics,
        summary=result.summary,
        state_dict=result.state_dict,
        memory=monitor.result() if monitor is not None else None,
    )


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Largest absolute difference between two state dicts with the same keys."""
    if not a or not b or set(a) != set(b):
        return None
    import torch

    return max(
        float((torch.as_tensor(a[k]).double() - torch.as_tensor(b[k]).double()).abs().max())
        for k in a
    )


# --------------------------------------------------------------------------- output


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1000:.1f} ms"


def fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def check(value: float | None, op: str, target: float) -> bool | None:
    if value is None:
        return None
    return value >= target if op == ">=" else value <= target


def verdict(ok: bool | None) -> str:
    return {True: "[green]met[/green]", False: "[red]missed[/red]", None: "-"}[ok]


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    _console().print(table)


def print_note(text: str) -> None:
    _console().print(text)
