"""The `fedsim` command line.

Exit codes: 0 success, 1 the run failed while running, 2 bad input (scenario,
run directory, unreachable cluster) detected before anything started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedsim.errors import is_bad_input

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Federated learning with differential privacy, simulated on Flower + Ray.",
    )
    _add_debug(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)

    check_p = sub.add_parser("check", help="validate a scenario without running it")
    check_p.add_argument("scenario", type=Path)
    check_p.add_argument("--set", dest="overrides", action="append", default=[])
    _add_debug(check_p)
    resume_p = sub.add_parser("resume", help="continue a killed or interrupted run")
    resume_p.add_argument("run_dir", type=Path)
    resume_p.add_argument("--quiet", action="store_true", help="no live progress display")
    _add_debug(resume_p)

    _add_audit_parser(sub)
    _add_report_parser(sub)

    part_p = sub.add_parser(
        "partition", help="summarise a scenario's data split and save a heat map"
    )
    part_p.add_argument("scenario", type=Path)
    part_p.add_argument("--set", dest="overrides", action="append", default=[])
    part_p.add_argument("--png", default=None, help="heat map path")
    _add_debug(part_p)

    res_p = sub.add_parser("results", help="print the results table of finished runs")
    res_p.add_argument("run_dirs", nargs="+", type=Path)
    _add_debug(res_p)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """Every command (and the top level) takes --debug."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    _add_debug(run_p)


def _add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit_p = sub.add_parser(
        "audit", help="recompute and check every epsilon of a run from its files"
    )
    audit_p.add_argument("run_dir", type=Path)
    audit_p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    audit_p.add_argument(
        "--accountants",
        default=None,
        help="comma-separated, e.g. rdp,prv,pld (default: the scenario's, rdp, prv)",
    )
    audit_p.add_argument(
        "--empirical",
        action="store_true",
        help="the canary audit's empirical epsilon beside the accountant's",
    )
    _add_debug(audit_p)


def _add_report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report_p = sub.add_parser("report", help="write report.html and PNGs for runs")
    report_p.add_argument("run_dirs", nargs="+", type=Path)
    report_p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: the run directory for one run, "
        "reports/NAME+NAME for several)",
    )
    report_p.add_argument(
        "--format",
        dest="fmt",
        choices=("png", "svg", "pdf"),
        default="png",
        help="figure files' format (the HTML page embeds PNGs)",
    )
    report_p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    _add_debug(report_p)


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
    previous = _sigterm_as_interrupt()
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt() -> Any:
    """SIGTERM outside a run's own handling is Ctrl-C: exit 130 with a message, not 15.

    Returns the handler it replaced (None outside the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _dispatch(handlers: dict[str, Any], args: argparse.Namespace) -> int:
    try:
        return int(handlers[args.command](args))
    except Exception as exc:
        # Only run/resume import the simulation (Flower, Ray); if it was never
        # imported, this exception cannot be one of its own.
        interrupted = _loaded_class("fedsim.engine.simulation", "RunInterrupted")
        if interrupted is None or not isinstance(exc, interrupted):
            raise
        Console(stderr=True).print(f"stopped: {exc}", highlight=False, markup=False)
        return 130


def _loaded_class(module: str, name: str) -> type | None:
    """`module.name` if that module is already imported, else None (never imports it)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _is_bad_input(exc: BaseException) -> bool:
    """Whether `exc` means "bad input, nothing started" (exit 2): its class says so.

    `fedsim.errors` is a leaf, so asking costs no import of the data or model code.
    """
    return is_bad_input(exc)


def _cmd_check(args: argparse.Namespace) -> int:
    from fedsim.config import Scenario
    from fedsim.engine.tracking import check_installed

    scenario = Scenario.from_toml(args.scenario, overrides=args.overrides, before_run=True)
    check_installed(scenario)
    print(scenario.to_toml(), end="")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsim.config import Scenario

    # Validate everything (this machine too) before importing Flower/Ray or starting anything.
    scenario = Scenario.from_toml(args.scenario, overrides=args.overrides, before_run=True)
    _check_tracking(scenario)
    for warning in scenario.warnings():
        Console(stderr=True).print(f"warning: {warning}", markup=False, highlight=False)
    from fedsim.launch import run

    result = run(scenario, args.out, overwrite=args.overwrite, progress=not args.quiet)
    _wide().print(results_table([(str(result.run_dir), result.summary, scenario.model_dump())]))
    Console().print(f"run directory: {result.run_dir}", markup=False, highlight=False)
    return EXIT_OK


def _check_tracking(scenario: Any) -> None:
    from fedsim.engine.tracking import check_installed

    check_installed(scenario)


def _cmd_resume(args: argparse.Namespace) -> int:
    from fedsim.launch import resume

    result = resume(args.run_dir, progress=not args.quiet)
    if result.already_complete:
        Console().print(
            f"{result.run_dir} is already complete ({result.summary.get('rounds')} rounds); "
            "nothing to resume",
            markup=False,
            highlight=False,
        )
        return EXIT_OK
    _wide().print(results_table(results_rows([result.run_dir], Console(stderr=True))))
    Console().print(f"run directory: {result.run_dir}", markup=False, highlight=False)
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
    return report_command([str(d) for d in args.run_dirs], out, fmt=args.fmt, dpi=args.dpi)


def _cmd_partition(args: argparse.Namespace) -> int:
    from fedsim.cli.partition_report import partition_command

    return partition_command(str(args.scenario), args.overrides, args.png)


def _cmd_results(args: argparse.Namespace) -> int:
    rows = results_rows(args.run_dirs, Console(stderr=True))
    _wide().print(results_table(rows))
    return EXIT_OK


def results_rows(
    run_dirs: Sequence[Path], console: Console
) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(label, summary, scenario) of each finished run directory; other paths skipped.

    A path without a ``scenario.toml`` is not a run (e.g. ``runs/report`` matched by
    ``runs/*``); a run without a complete ``summary.json`` (written last) was killed or
    is still running. Both are skipped with a note. Rows are labelled by the path as
    given, so two runs of one scenario stay apart.

    Raises:
        RunDirError: no path is a finished run.
    """
    import tomllib

    from fedsim.rundir import RunDir, RunDirError

    rows = []
    for run_dir in run_dirs:
        if not (run_dir / "scenario.toml").is_file():
            console.print(
                f"skipped {escape(str(run_dir))}: not a fedsim run directory (no scenario.toml)",
                highlight=False,
            )
            continue
        summary = RunDir(run_dir).complete_summary()
        if summary is None:
            shown = escape(str(run_dir))
            console.print(
                f"skipped {shown}: not a finished run (no complete summary.json); "
                f"a killed run continues with `fedsim resume {shown}`",
                highlight=False,
            )
            continue
        try:
            scenario = tomllib.loads((run_dir / "scenario.toml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            scenario = None  # the table then shows no noise; the summary is what counts
        rows.append((str(run_dir), summary, scenario))
    if not rows:
        raise RunDirError("no finished fedsim run among " + ", ".join(str(d) for d in run_dirs))
    return rows


ResultRow = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any] | None]


def results_table(rows: Sequence[ResultRow]) -> Table:
    """A results table, one row per run: its label (the run directory), rounds, accuracy,
    loss, DP level, noise multiplier, epsilon (max and median over clients), delta,
    clients failed, wall time.

    Args:
        rows: (label, summary) or (label, summary, scenario dict); the noise multiplier
            is read from the scenario (``-`` without one).
    """
    table = Table(title="fedsim results")
    columns = (
        "run",
        "rounds",
        "accuracy",
        "loss",
        "DP level",
        "noise",
        "epsilon max (median)",
        "delta",
        "failed",
        "wall s",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in rows:
        label, s = row[0], row[1]
        scenario = row[2] if len(row) > 2 else None
        eps = s.get("epsilon")
        eps_text = f"{eps['max']:.2f} ({eps['median']:.2f})" if eps else "off"
        table.add_row(
            escape(label),  # a cell is rich markup: a name like "q[/]" must print as is
            str(s.get("rounds")),
            _fmt(s.get("accuracy")),
            _fmt(s.get("loss")),
            s.get("privacy_level") or "off",
            _noise(s, scenario),
            eps_text,
            f"{s['delta']:g}" if s.get("delta") else "-",
            str(s.get("clients_failed", "-")),
            f"{s.get('wall_seconds', 0):.1f}",
        )
    return table


def _noise(summary: dict[str, Any], scenario: dict[str, Any] | None) -> str:
    """The run's noise multiplier as the scenario set it ('-' when DP is off or unknown)."""
    dp = scenario.get("dp") if isinstance(scenario, dict) else None
    if summary.get("dp_mode", "off") == "off" or not isinstance(dp, dict):
        return "-"
    z = dp.get("noise_multiplier")
    if isinstance(z, int | float) and not isinstance(z, bool):
        return f"{z:g}"
    target = dp.get("target_epsilon")
    return f"for eps {target:g}" if isinstance(target, int | float) else "-"


def _wide() -> Console:
    # Tables stay readable when stdout is not a terminal (rich would assume 80 columns).
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
