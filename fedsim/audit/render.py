"""Terminal output of an audit (rich): tables, a histogram, assumptions, findings."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fedsim.audit.crosscheck import TIGHT_AGREEMENT
from fedsim.audit.findings import Finding
from fedsim.audit.report import AuditReport
from fedsim.audit.sample import SampleLevel
from fedsim.audit.stats import Histogram
from fedsim.audit.user import UserLevel

#: Findings shown per kind in the terminal; ``--json`` always has all of them.
MAX_SHOWN_PER_KIND = 10
BAR_WIDTH = 40

_TOPICS = {
    "example_sampling": "example sampling",
    "client_sampling": "client sampling",
    "neighbouring_relation": "neighbouring relation",
    "noise_rng": "noise RNG",
    "sampling_rng": "sampling RNG",
    "accountant": "accountant and delta",
    "composition": "composition",
    "trust_model": "trust model",
}


def fmt_eps(value: float | None) -> str:
    """An epsilon for humans: 4 significant digits, 'inf' without noise, '-' if absent."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def render_audit(report: AuditReport, console: Console) -> None:
    """Print the whole audit: what was read, the numbers, the assumptions, the verdict."""
    sc = report.scenario
    console.print(Text.assemble(("fedsim audit  ", "bold"), str(report.run_dir)))
    console.print(
        f"scenario {escape(repr(sc.name))} · dp.mode = {sc.dp.mode!r} · "
        f"population {sc.population} · {sc.rounds} rounds · "
        f"{sc.clients_per_round} clients/round · accountant {sc.dp.accountant}, "
        f"delta = {sc.dp.delta:g}",
        highlight=False,
    )
    led = report.ledger
    console.print(
        f"ledger: {led.lines} lines ({led.sample_lines} sample-level, {led.user_lines} "
        f"user-level, {led.failed_lines} from failed clients); every epsilon below is "
        "recomputed from them",
        highlight=False,
    )
    if led.discarded_lines:
        console.print(
            f"{led.discarded_lines} line(s) are 'discarded': releases of a killed attempt "
            "that a resume ran again with fresh noise; they were made, so they are "
            "composed like every other line",
            highlight=False,
        )
    if report.sample is not None:
        _sample(console, report.sample)
    if report.user is not None:
        _user(console, report.user)
    if report.sample is None and report.user is None:
        console.print("\n[bold]No DP release in this run[/bold] (dp.mode = 'off', no ledger lines)")
    _guarantees(console, report)
    _cross_check(console, report)
    _assumptions(console, report)
    _findings(console, report.findings)


def _sample(console: Console, s: SampleLevel) -> None:
    console.print()
    console.print(
        f"[bold]Per-client epsilon, sample level[/bold] ({s.accountant}, delta = {s.delta:g}; "
        f"over all {s.population} clients, never sampled = 0)",
        highlight=False,
    )
    table = Table()
    table.add_column("")
    for col in ("min", "median", "max"):
        table.add_column(col, justify="right")
    eps = s.epsilon
    table.add_row("epsilon", fmt_eps(eps.min), fmt_eps(eps.median), fmt_eps(eps.max))
    p = s.participations
    table.add_row("participations", f"{p.min:g}", f"{p.median:g}", f"{p.max:g}")
    console.print(table)
    console.print(
        f"clients sampled at least once: {len(s.clients)} of {s.population}; "
        f"{s.total_participations} participations. Worst client {s.worst.client} "
        f"(epsilon {fmt_eps(s.worst.epsilon)}, {s.worst.participations} participations); "
        f"median client {s.median.client} (epsilon {fmt_eps(s.median.epsilon)}).",
        highlight=False,
    )
    console.print()
    console.print("[bold]Histogram of per-client epsilon[/bold]")
    render_histogram(console, s.histogram)


def render_histogram(console: Console, hist: Histogram) -> None:
    """One row per bin: range, a bar scaled to the largest count, the count."""
    rows: list[tuple[str, int]] = []
    n_bins = len(hist.counts)
    edges = [f"{e:.4g}" for e in hist.edges]
    w = max((len(e) for e in edges), default=0)
    for i, count in enumerate(hist.counts):
        closing = "]" if i == n_bins - 1 else ")"
        if hist.edges[i + 1] > hist.edges[i]:
            label = f"[{edges[i]:>{w}}, {edges[i + 1]:>{w}}{closing}"
        else:
            label = f"= {edges[i]}"  # every finite value equal: one zero-width bin
        rows.append((label, count))
    if hist.infinite:
        rows.append(("inf (no noise)", hist.infinite))
    peak = max((c for _, c in rows), default=0)
    width = max((len(label) for label, _ in rows), default=0)
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")
    table.add_column()
    table.add_column(justify="right")
    for label, count in rows:
        bar = "█" * (round(BAR_WIDTH * count / peak) if peak else 0)
        if count and not bar:
            bar = "▏"  # a non-empty bin never looks empty
        table.add_row(label.rjust(width), Text(bar.ljust(BAR_WIDTH), style="cyan"), str(count))
    console.print(table)


def _user(console: Console, u: UserLevel) -> None:
    console.print()
    console.print(
        f"[bold]User level[/bold] ({u.accountant}, delta = {u.delta:g}): {u.releases} "
        f"release(s), {u.poisson_releases} Poisson-sampled, {u.fixed_releases} fixed-size; "
        f"population epsilon {fmt_eps(u.epsilon)}",
        highlight=False,
    )
    if u.epsilon_without_amplification is not None:
        console.print(
            "  without the amplification that fixed-size sampling does not give: "
            f"epsilon {fmt_eps(u.epsilon_without_amplification)}",
            highlight=False,
        )
    if u.per_client is not None:
        pc = u.per_client
        console.print(
            f"  per-client user-level epsilon: min {fmt_eps(pc.min)}, median "
            f"{fmt_eps(pc.median)}, max {fmt_eps(pc.max)}",
            highlight=False,
        )
    else:
        console.print(
            "  per-client user-level epsilon: not recomputable (fixed-sampling lines "
            "without client lists)",
            highlight=False,
        )
    if u.realised is not None:
        r = u.realised
        console.print(
            f"  clients sampled per round / population: mean {r.observed:.4g} vs accounted "
            f"{r.accounted:.4g} ({r.z_score:+.2f} sigma over {r.releases} release(s))",
            highlight=False,
        )


def _guarantees(console: Console, report: AuditReport) -> None:
    rows = report.guarantees()
    if not rows:
        return
    table = Table()
    for col in ("level", "epsilon", "delta", "accountant", "rule"):
        table.add_column(col, justify="right" if col in ("epsilon", "delta") else "left")
    for g in rows:
        table.add_row(
            g["level"], fmt_eps(g["epsilon"]), f"{g['delta']:g}", g["accountant"], g["rule"]
        )
    console.print()
    console.print("[bold]Population guarantee[/bold]")
    console.print(table)
    for g in rows:
        console.print(f" {g['level']} level: {escape(g['rule_in_words'])}", highlight=False)


def _cross_check(console: Console, report: AuditReport) -> None:
    if not report.rows:
        return
    console.print()
    console.print(
        "[bold]Accountants side by side[/bold] (same events, same delta). RDP above PRV/PLD "
        "is its expected looseness; flagged only: RDP below a tight accountant, or PRV and "
        f"PLD more than {TIGHT_AGREEMENT:.0%} apart"
    )
    table = Table()
    table.add_column("history")
    for name in report.accountants:
        table.add_column(name, justify="right")
    table.add_column("tightest bound", justify="right")
    table.add_column("looseness over it", justify="right")
    for row in report.rows:
        # Text cells: notes can hold brackets that rich would read as markup.
        cells = [
            Text(row.notes.get(name) or fmt_eps(row.epsilon.get(name)))
            for name in report.accountants
        ]
        tight = (
            Text("-")
            if row.tightest is None
            else Text(f"{fmt_eps(row.tightest_epsilon)} ({row.tightest})")
        )
        loose = ", ".join(
            f"{name} +{'inf' if math.isinf(v) else f'{v:.1%}'}"
            for name, v in row.looseness.items()
            if v > 0
        )
        gap = Text(loose or "-", style="bold yellow" if row.flagged else "")
        if row.flagged:
            gap.append(" ! " + "; ".join(row.problems))
        table.add_row(Text(row.subject), *cells, tight, gap)
    console.print(table)


def _assumptions(console: Console, report: AuditReport) -> None:
    console.print()
    console.print("[bold]Assumptions[/bold]")
    for key, text in report.assumptions.items():
        console.print(f" • [bold]{_TOPICS.get(key, key)}[/bold]: {escape(text)}", highlight=False)


def _findings(console: Console, findings: Sequence[Finding]) -> None:
    warnings = [f for f in findings if f.severity == "warning"]
    violations = [f for f in findings if f.severity == "violation"]
    if warnings:
        console.print()
        console.print(f"[bold yellow]Warnings ({len(warnings)})[/bold yellow]")
        _list(console, warnings, "yellow")
    console.print()
    if violations:
        console.print(f"[bold red]Violations ({len(violations)})[/bold red]")
        _list(console, violations, "red")
        console.print()
        console.print(f"[bold red]audit: {len(violations)} violation(s) (exit 1)[/bold red]")
    else:
        console.print("[bold green]audit: no violations (exit 0)[/bold green]")


def _list(console: Console, findings: Sequence[Finding], style: str) -> None:
    by_kind: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_kind[f.kind].append(f)
    for kind, items in by_kind.items():
        for f in items[:MAX_SHOWN_PER_KIND]:
            line = Text(" • ", style=style)
            line.append(str(f))
            console.print(line)
        hidden = len(items) - MAX_SHOWN_PER_KIND
        if hidden > 0:
            console.print(
                f"   ... and {hidden} more [{kind}] (all of them in --json)", markup=False
            )
