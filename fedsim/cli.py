"""The `fedsim` command line.

Exit codes: 0 success, 1 the run failed while running, 2 bad input (scenario,
run directory, unreachable cluster) detected before anything started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Federated learning with differential privacy, simulated on Flower + Ray.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser("run", help="run a scenario and write its run directory")
    run_p.add_argument("scenario", type=Path, help="scenario TOML file")
    run_p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set dp.noise_multiplier=1.2 (repeatable)",
    )
    run_p.add_argument("--out", type=Path, default=None, help="run directory (default runs/NAME)")
    run_p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    run_p.add_argument("--quiet", action="store_true", help="no live progress display")
    run_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    check_p = sub.add_parser("check", help="validate a scenario without running it")
    check_p.add_argument("scenario", type=Path)
    check_p.add_argument("--set", dest="overrides", action="append", default=[])
    check_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    resume_p = sub.add_parser("resume", help="continue a killed or interrupted run")
    resume_p.add_argument("run_dir", type=Path)
    resume_p.add_argument("--quiet", action="store_true", help="no live progress display")
    resume_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    audit_p = sub.add_parser(
        "audit", help="recompute and check every epsilon of a run from its files"
    )
    audit_p.add_argument("run_dir", type=Path)
    audit_p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    audit_p.add_argument(
        "--accountants", default=None, help="comma-separated, e.g. rdp,prv,pld (default: all)"
    )
    audit_p.add_argument(
        "--empirical",
        action="store_true",
        help="the canary audit's empirical epsilon beside the accountant's",
    )
    audit_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    report_p = sub.add_parser("report", help="write report.html and PNGs for runs")
    report_p.add_argument("run_dirs", nargs="+", type=Path)
    report_p.add_argument("--out", type=Path, default=None, help="output directory")
    report_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    part_p = sub.add_parser(
        "partition", help="summarise a scenario's data split and save a heat map"
    )
    part_p.add_argument("scenario", type=Path)
    part_p.add_argument("--set", dest="overrides", action="append", default=[])
    part_p.add_argument("--png", default=None, help="heat map path")
    part_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    res_p = sub.add_parser("results", help="print the results table of finished runs")
    res_p.add_argument("run_dirs", nargs="+", type=Path)
    res_p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fedsim` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    handlers = {
        "run": _cmd_run,
        "resume": _cmd_resume,
        "check": _cmd_check,
        "audit": _cmd_audit,
        "report": _cmd_report,
        "partition": _cmd_partition,
        "results": _cmd_results,
    }
    try:
        return _dispatch(handlers, args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception as exc:  # noqa: BLE001 - turned into a message and an exit code
        if args.debug:
            raise
        code = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILED
        label = "error" if code == EXIT_BAD_INPUT else "run failed"
        # soft_wrap: a one-line reason stays one line (rich would wrap it at 80 columns).
        console.print(f"{label}: {exc}", highlight=False, markup=False, style="red", soft_wrap=True)
        if code == EXIT_FAILED:
            console.print("(run again with --debug for the traceback)")
        return code


def _dispatch(handlers: dict[str, Any], args: argparse.Namespace) -> int:
    from fedsim.simulation import RunInterrupted

    try:
        return int(handlers[args.command](args))
    except RunInterrupted as exc:
        Console(stderr=True).print(f"stopped: {exc}", highlight=False, markup=False)
        return 130


def _is_bad_input(exc: BaseException) -> bool:
    from fedsim.checkpoint import CheckpointError
    from fedsim.config import ScenarioError
    from fedsim.data import DataError
    from fedsim.models import ModelError
    from fedsim.rundir import RunDirError

    if isinstance(exc, ScenarioError | RunDirError | CheckpointError | DataError | ModelError):
        return True
    from fedsim.simulation import SimulationError

    return isinstance(exc, SimulationError) and "cannot reach" in str(exc)


def _cmd_check(args: argparse.Namespace) -> int:
    from fedsim.config import Scenario

    scenario = Scenario.from_toml(args.scenario, overrides=args.overrides, before_run=True)
    print(scenario.to_toml(), end="")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsim.config import Scenario

    # Validate everything (this machine too) before importing Flower/Ray or starting anything.
    scenario = Scenario.from_toml(args.scenario, overrides=args.overrides, before_run=True)
    for warning in scenario.warnings():
        Console(stderr=True).print(f"warning: {warning}", markup=False, highlight=False)
    from fedsim.simulation import run

    result = run(scenario, args.out, overwrite=args.overwrite, progress=not args.quiet)
    _wide().print(results_table([(scenario.name, result.summary)]))
    Console().print(f"run directory: {result.run_dir}")
    return EXIT_OK


def _cmd_resume(args: argparse.Namespace) -> int:
    from fedsim.simulation import resume

    result = resume(args.run_dir, progress=not args.quiet)
    _wide().print(results_table([(result.summary["scenario"], result.summary)]))
    Console().print(f"run directory: {result.run_dir}")
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    if args.empirical:
        from fedsim.empirical.verdict import empirical_command

        return empirical_command(str(args.run_dir), as_json=args.json)
    from fedsim.audit import audit_command

    return audit_command(str(args.run_dir), as_json=args.json, accountants=args.accountants)


def _cmd_report(args: argparse.Namespace) -> int:
    from fedsim.report import report_command

    out = str(args.out) if args.out is not None else None
    return report_command([str(d) for d in args.run_dirs], out)


def _cmd_partition(args: argparse.Namespace) -> int:
    from fedsim.partition_report import partition_command

    return partition_command(str(args.scenario), args.overrides, args.png)


def _cmd_results(args: argparse.Namespace) -> int:
    import json

    from fedsim.rundir import RunDirError

    rows = []
    for run_dir in args.run_dirs:
        path = run_dir / "summary.json"
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunDirError(f"{path}: cannot read a run summary ({exc})") from exc
        rows.append((summary.get("scenario", run_dir.name), summary))
    _wide().print(results_table(rows))
    return EXIT_OK


def results_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    """A results table: scenario, accuracy, loss, epsilon (max over clients), wall time."""
    table = Table(title="fedsim results")
    for col in (
        "scenario",
        "rounds",
        "accuracy",
        "loss",
        "DP level",
        "epsilon max (median)",
        "delta",
        "wall s",
    ):
        table.add_column(col, justify="right" if col != "scenario" else "left")
    for name, s in rows:
        eps = s.get("epsilon")
        eps_text = f"{eps['max']:.2f} ({eps['median']:.2f})" if eps else "off"
        table.add_row(
            name,
            str(s.get("rounds")),
            _fmt(s.get("accuracy")),
            _fmt(s.get("loss")),
            s.get("privacy_level") or "off",
            eps_text,
            f"{s['delta']:g}" if s.get("delta") else "-",
            f"{s.get('wall_seconds', 0):.1f}",
        )
    return table


def _wide() -> Console:
    # Tables stay readable when stdout is not a terminal (rich would assume 80 columns).
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
