"""How long the `fedsim` commands take to answer (wall seconds, a fresh process each).

    python -m benchmarks.cli [--run RUN_DIR] [--repeat 3] [--out benchmarks/results/cli.json]

Timed, each `--repeat` times (the median is reported, with the targets of the
architecture issue):

  help          fedsim --help
  config_error  fedsim check on a scenario with a schema error (exit 2)     target < 2 s
  check         fedsim check scenarios/quickstart.toml                       target < 2 s
  audit         fedsim audit RUN_DIR                                         target < 3 s
  results       fedsim results RUN_DIR

Start-up dominates all of them: the interpreter, then whatever the command imports
(Flower, Ray, torch and Opacus cost seconds). So each command also runs once under
``python -X importtime``, which names the heavy libraries it imported (``heavy_imports``,
the same on a loaded machine as on a quiet one) and sums its import time (``import_s``);
``python`` times the bare interpreter for scale. Without `--run`, one real run of the
quickstart scenario cut to one round is made first (not timed) and audited.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import check, machine_info, print_table, verdict, write_json

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"
TARGETS = {"config_error": 2.0, "check": 2.0, "audit": 3.0}
#: Libraries that cost seconds to import; only `fedsim run` and `resume` need them.
HEAVY = ("torch", "opacus", "flwr", "ray")


def fedsim(*args: str) -> tuple[float, int]:
    """Wall seconds and exit code of `fedsim ARGS` in a fresh interpreter."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        check=False,
    )
    return time.perf_counter() - start, proc.returncode


def imports(*args: str) -> tuple[list[str], float]:
    """The heavy libraries `fedsim ARGS` imports, and its total import seconds.

    From ``python -X importtime``: a line per module, ``self | cumulative | name``,
    indented by nesting; the top-level lines' cumulative microseconds add up to all of it.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fedsim.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        check=False,
    )
    heavy: set[str] = set()
    total_us = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue  # the header line
        module = name.strip()
        if module.split(".")[0] in HEAVY:
            heavy.add(module.split(".")[0])
        if name == f" {module}":  # not indented: a top-level import
            total_us += int(cumulative)
    return sorted(heavy), total_us / 1e6


def make_run(tmp: Path) -> Path:
    """One real run of the quickstart scenario, one round (the audit needs a run)."""
    run_dir = tmp / "quickstart"
    seconds, code = fedsim(
        "run", str(QUICKSTART), "--set", "rounds=1", "--out", str(run_dir), "--quiet"
    )
    if code != 0:
        raise SystemExit(f"the quickstart run failed (exit {code}); pass --run RUN_DIR")
    print(f"made {run_dir} in {seconds:.1f} s (not timed)")
    return run_dir


def commands(run_dir: Path, bad: Path) -> dict[str, tuple[list[str], int]]:
    """Each timed command and the exit code it must give."""
    return {
        "help": (["--help"], 0),
        "config_error": (["check", str(bad)], 2),
        "check": (["check", str(QUICKSTART)], 0),
        "audit": (["audit", str(run_dir)], 0),
        "results": (["results", str(run_dir)], 0),
    }


def time_commands(run_dir: Path, tmp: Path, repeat: int) -> dict[str, Any]:
    bad = tmp / "bad.toml"
    bad.write_text("rounds = -1\n", encoding="utf-8")
    timings: dict[str, Any] = {}
    for name, (args, expected) in commands(run_dir, bad).items():
        runs = [fedsim(*args) for _ in range(repeat)]
        codes = sorted({code for _, code in runs})
        heavy, import_s = imports(*args)
        timings[name] = {
            "command": "fedsim " + " ".join(args),
            "seconds": [round(s, 3) for s, _ in runs],
            "median_s": round(statistics.median(s for s, _ in runs), 3),
            "exit_codes": codes,
            "exit_ok": codes == [expected],
            "target_s": TARGETS.get(name),
            "heavy_imports": heavy,
            "import_s": round(import_s, 3),
        }
    return timings


def python_start(repeat: int) -> dict[str, Any]:
    """Median wall seconds of a bare interpreter (`python -c pass`): the floor of all."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        runs.append(time.perf_counter() - start)
    return {"seconds": [round(s, 3) for s in runs], "median_s": round(statistics.median(runs), 3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cli", description=__doc__)
    p.add_argument("--run", type=Path, default=None, help="run directory to audit")
    p.add_argument("--repeat", type=int, default=3, help="times each command runs")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fedsim-cli-bench-") as tmp_name:
        tmp = Path(tmp_name)
        run_dir = args.run if args.run is not None else make_run(tmp)
        timings = time_commands(run_dir, tmp, max(1, args.repeat))
    python = python_start(max(1, args.repeat))
    rows = [["python", f"{python['median_s']:.2f}", "-", "-", "-", ""]]
    for name, t in timings.items():
        ok = check(t["median_s"], "<=", t["target_s"]) if t["target_s"] else None
        exit_note = "" if t["exit_ok"] else f" (exit {t['exit_codes']})"
        heavy = ", ".join(t["heavy_imports"]) or "none"
        row = [name, f"{t['median_s']:.2f}{exit_note}", f"{t['import_s']:.2f}", heavy]
        rows.append([*row, t["target_s"] or "-", verdict(ok)])
    columns = ["command", "s", "import s", "heavy imports", "target s", ""]
    print_table("fedsim CLI wall seconds (median)", columns, rows)
    result = {
        "machine": machine_info(),
        "repeat": args.repeat,
        "python_start": python,
        "timings": timings,
    }
    print(f"wrote {write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
