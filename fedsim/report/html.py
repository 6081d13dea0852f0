"""Read run directories and write a self-contained HTML report with its figures.

``report.html`` embeds every figure as a base64 PNG data URI and carries its CSS inline:
it needs no network, no JavaScript and no other file, so it can be mailed or archived
alone. The PNGs are also written beside it for slides and papers.

Only the run directory's files are read (never the live objects of a run):
``scenario.toml``, ``metrics.jsonl``, ``summary.json`` (required),
``privacy_ledger.jsonl`` (absent when DP is off) and ``empirical_audit.json``
(optional: ``{"method": ..., "epsilon_lower_bound": x}`` for a one-run audit or
``{"method": ..., "epsilon_estimate": x}`` for a one-shot estimate, see
:mod:`fedsim.empirical`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedsim.errors import FedsimError
from fedsim.report.figures import FIGURES, FORMATS, RunData, legend_labels, render_figures

__all__ = [
    "ReportError",
    "default_report_dir",
    "load_run",
    "render_html",
    "report_command",
    "write_report",
]

# The CLI's exit codes (fedsim.cli): not imported, so the CLI can import this module.
_EXIT_OK, _EXIT_BAD_INPUT = 0, 2


class ReportError(FedsimError, ValueError):
    """A run directory, or one of its files, cannot be read; the message names it."""


# --------------------------------------------------------------------------- reading


def load_run(path: Path | str, label: str | None = None) -> RunData:
    """Read one run directory.

    Args:
        path: The run directory (as written by ``fedsim run``).
        label: Name for legends and tables; defaults to the directory name.

    Returns:
        The parsed run.

    Raises:
        ReportError: the directory is missing, a required file is missing, or a file
            cannot be parsed; the message names the directory or file (and line).
    """
    path = Path(path)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ReportError(f"run directory {path} {what}")
    scenario = _read(path / "scenario.toml", _parse_toml)
    metrics = _read(path / "metrics.jsonl", _parse_metrics)
    summary = _read(path / "summary.json", _parse_summary)
    ledger_file = path / "privacy_ledger.jsonl"
    ledger = _read(ledger_file, _parse_ledger) if ledger_file.exists() else None
    audit_file = path / "empirical_audit.json"
    audit = _read(audit_file, _parse_audit) if audit_file.exists() else None
    return RunData(
        path=path,
        label=label or path.resolve().name,
        scenario=scenario,
        metrics=metrics,
        summary=summary,
        ledger=ledger,
        audit=audit,
    )


def _read(file: Path, parse: Callable[[Path], Any]) -> Any:
    """Run `parse` on `file`, turning every failure into a ReportError that names it."""
    if not file.is_file():
        raise ReportError(f"{file} is missing: is {file.parent} a fedsim run directory?")
    try:
        return parse(file)
    except ReportError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{file} cannot be read: {exc}") from exc
    except ValueError as exc:  # JSON, TOML and ledger errors are all ValueErrors
        text = str(exc)
        # Ledger and JSON-lines readers already name the file; do not say it twice.
        raise ReportError(text if str(file) in text else f"{file}: {text}") from exc


def _parse_toml(file: Path) -> dict[str, Any]:
    with open(file, "rb") as fh:
        return tomllib.load(fh)


def _parse_metrics(file: Path) -> list[dict[str, Any]]:
    from fedsim.rundir import read_jsonl

    rows = read_jsonl(file)
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            raise ReportError(f"{file}: record {n} has no integer 'round'")
    return rows


def _parse_summary(file: Path) -> dict[str, Any]:
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ReportError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _parse_ledger(file: Path) -> list[dict[str, Any]]:
    from fedsim.privacy.records import read_records

    return read_records(file)


def _parse_audit(file: Path) -> dict[str, Any]:
    data = json.loads(file.read_text(encoding="utf-8"))
    keys = ("epsilon_lower_bound", "epsilon_estimate")
    if not isinstance(data, dict) or not any(k in data for k in keys):
        raise ReportError(f"{file}: expected a JSON object with one of {list(keys)}")
    value = data.get(keys[0], data.get(keys[1]))
    if _number(value) is None or value < 0:
        raise ReportError(
            f"{file}: the audit's epsilon must be a finite number >= 0, got {value!r}"
        )
    return data


# --------------------------------------------------------------------------- writing


def write_report(
    run_dirs: Sequence[Path | str], out_dir: Path | str, *, fmt: str = "png", dpi: int = 100
) -> Path:
    """Write ``report.html`` and the figure files for one run or several overlaid.

    Args:
        run_dirs: Run directories; several are overlaid (e.g. a noise sweep): tables
            name each by its directory, legends by the scenario keys that differ.
        out_dir: Where to write; created if missing.
        fmt: Format of the figure files, one of ``png``, ``svg``, ``pdf`` (the page
            embeds PNGs either way).
        dpi: Resolution of the PNGs (the page's and the files').

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: no run directory given, one cannot be read (named), or a bad
            format or dpi.
        OSError: out_dir cannot be written.
    """
    if not run_dirs:
        raise ReportError("no run directory given")
    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt!r}: allowed {', '.join(FORMATS)}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 20 <= dpi <= 1200:
        raise ReportError(f"--dpi {dpi!r}: allowed an integer in 20..1200")
    runs = [load_run(p) for p in run_dirs]
    runs = [
        replace(run, label=label) for run, label in zip(runs, _unique_labels(runs), strict=True)
    ]
    runs = [replace(run, legend=name) for run, name in zip(runs, legend_labels(runs), strict=True)]
    pngs = render_figures(runs, dpi=dpi)
    files = pngs if fmt == "png" else render_figures(runs, fmt=fmt, dpi=dpi)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    page = out / "report.html"
    page.write_text(render_html(runs, pngs), encoding="utf-8")
    return page


def default_report_dir(run_dirs: Sequence[Path | str]) -> Path:
    """Where ``fedsim report`` writes without ``--out``.

    One run: its own directory. Several: ``reports/<their names joined by +>`` in the
    working directory, so a report is never mistaken for a run by ``fedsim results
    runs/*``.
    """
    if len(run_dirs) == 1:
        return Path(run_dirs[0])
    names = "+".join(Path(d).resolve().name for d in run_dirs)
    safe = re.sub(r"[^\w.+-]+", "_", names).strip("._") or "report"
    if len(safe) > 80:  # keep the name short and still distinct per set of runs
        digest = hashlib.sha1(names.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe[:60]}-{digest}"
    return Path("reports") / safe


def _unique_labels(runs: Sequence[RunData]) -> list[str]:
    """Directory names, prefixed by their parent's where two runs share a name."""
    labels = [run.label for run in runs]
    if len(set(labels)) == len(labels):
        return labels
    labels = [f"{run.path.resolve().parent.name}/{run.label}" for run in runs]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{label} [{i + 1}]" for i, label in enumerate(labels)]


def report_command(
    run_dirs: list[str], out: str | None, *, fmt: str = "png", dpi: int = 100
) -> int:
    """``fedsim report DIR [DIR ...] [--out OUT]``: write the report, return an exit code.

    Args:
        run_dirs: Run directories as given on the command line.
        out: Output directory; default :func:`default_report_dir`.
        fmt: Format of the figure files (``png``, ``svg``, ``pdf``).
        dpi: Resolution of the PNGs.

    Returns:
        0 on success (the page's path is printed); 2 when a directory is missing, a file
        is unreadable or the output cannot be written (a message naming it goes to
        stderr).
    """
    if not run_dirs:
        print("error: give at least one run directory", file=sys.stderr)
        return _EXIT_BAD_INPUT
    out_dir = Path(out) if out is not None else default_report_dir(run_dirs)
    try:
        page = write_report([Path(d) for d in run_dirs], out_dir, fmt=fmt, dpi=dpi)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: cannot write the report to {out_dir}: {exc}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    print(f"report: {page}")
    return _EXIT_OK


# --------------------------------------------------------------------------- the page

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
       background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 10px; padding-bottom: 4px;
     border-bottom: 2px solid #e3e6ea; }
h3 { font-size: 1.05em; margin: 18px 0 6px; }
.sub { color: #5b6570; margin: 0 0 8px; }
table { border-collapse: collapse; font-size: 0.92em; margin: 6px 0; }
th, td { border: 1px solid #d9dde2; padding: 4px 10px; text-align: left; }
thead th { background: #eef1f5; }
tbody th { background: #f8f9fb; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid #e3e6ea; border-radius: 6px; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 0.88em; color: #4a535c; margin-top: 4px; }
.alert { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 10px; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 6px 10px; }
.ok { background: #e8f5e9; border-left: 4px solid #2e7d32; padding: 6px 10px; }
footer { margin-top: 36px; font-size: 0.82em; color: #6b747d; }
"""


def render_html(runs: Sequence[RunData], pngs: dict[str, bytes]) -> str:
    """The whole page as one string (CSS inline, figures as data URIs, no scripts).

    Args:
        runs: The runs, labelled.
        pngs: File name -> PNG bytes, as from :func:`render_figures`.

    Returns:
        HTML text.
    """
    names = ", ".join(run.label for run in runs)
    title = f"fedsim report: {names}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{len(runs)} run{"s" if len(runs) > 1 else ""}: '
        + ", ".join(f"<code>{_e(str(run.path))}</code>" for run in runs)
        + "</p>",
        "<h2>Scenario</h2>",
        _table(runs, _SCENARIO_ROWS),
        "<h2>Results</h2>",
        _table(runs, _RESULT_ROWS),
        "<h2>Figures</h2>",
        '<div class="figs">',
        *(_figure(name, pngs[name]) for name in FIGURES if name in pngs),
        "</div>",
        "<h2>Privacy</h2>",
        *(_privacy_statement(run, heading=len(runs) > 1) for run in runs),
        _footer(runs),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: Any, spec: str = ".4g") -> str:
    """Numbers formatted for a table; booleans and text as they are; missing as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"  # as in scenario.toml
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return format(value, spec) if math.isfinite(value) else str(value)


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _dp_on(run: RunData) -> bool:
    return _get(run.scenario, "dp.mode") not in (None, "off")


def _dp(key: str) -> Callable[[RunData], Any]:
    """A DP setting, shown only when DP is on (the scenario keeps defaults when off)."""
    return lambda run: _get(run.scenario, f"dp.{key}") if _dp_on(run) else None


def _cohort(run: RunData) -> str | None:
    per_round = _get(run.scenario, "sampling.clients_per_round")
    if per_round is not None:
        return _fmt(per_round)
    fraction = _get(run.scenario, "sampling.fraction")
    return f"{_fmt(fraction)} of the population" if fraction is not None else None


def _data(run: RunData) -> str | None:
    name, partition = _get(run.scenario, "data.name"), _get(run.scenario, "data.partition")
    if name is None:
        return None
    text = f"{name}, {partition}" if partition else str(name)
    if partition == "dirichlet":
        text += f" (α = {_fmt(_get(run.scenario, 'data.alpha'))})"
    return text


def _training(run: RunData) -> str | None:
    t = run.scenario.get("train")
    if not isinstance(t, dict):
        return None
    return (
        f"{t.get('epochs')} epoch(s), batch {t.get('batch_size')}, lr {t.get('lr')}, "
        f"{t.get('optimizer', 'sgd')}"
    )


def _empirical(run: RunData) -> str | None:
    if run.empirical is None:
        return None
    value, kind = run.empirical
    return f"{value:.3g} ({kind})"


Row = tuple[str, Callable[[RunData], Any]]

_SCENARIO_ROWS: list[Row] = [
    ("scenario", lambda r: r.scenario.get("name")),
    ("seed", lambda r: r.scenario.get("seed")),
    ("rounds", lambda r: r.scenario.get("rounds")),
    ("population", lambda r: r.scenario.get("population")),
    ("clients per round", _cohort),
    ("data, partition", _data),
    ("model", lambda r: _get(r.scenario, "model.name")),
    ("strategy", lambda r: _get(r.scenario, "strategy.name")),
    ("local training", _training),
    ("DP mode", lambda r: _get(r.scenario, "dp.mode")),
    ("noise multiplier", _dp("noise_multiplier")),
    ("clipping norm", _dp("max_grad_norm")),
    ("δ", _dp("delta")),
    ("accountant", _dp("accountant")),
    ("secure RNG", _dp("secure_rng")),
]

_RESULT_ROWS: list[Row] = [
    ("rounds run", lambda r: r.summary.get("rounds")),
    ("final accuracy", lambda r: r.summary.get("accuracy")),
    ("final loss", lambda r: r.summary.get("loss")),
    ("ε min over clients", lambda r: _get(r.summary, "epsilon.min")),
    ("ε median", lambda r: _get(r.summary, "epsilon.median")),
    ("ε max (accountant)", lambda r: r.epsilon_max),
    ("empirical ε", _empirical),
    ("δ", lambda r: r.summary.get("delta")),
    ("client trainings", lambda r: r.summary.get("clients_trained")),
    ("client failures", lambda r: r.summary.get("clients_failed")),
    ("ledger mismatches", lambda r: r.summary.get("ledger_mismatches")),
    ("wall time (s)", lambda r: r.summary.get("wall_seconds")),
]


def _table(runs: Sequence[RunData], rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{_e(run.label)}</th>" for run in runs)
    body = []
    for name, get in rows:
        values = [get(run) for run in runs]
        if all(v is None for v in values):
            continue  # a setting no run has (e.g. DP rows when every run has DP off)
        cells = "".join(
            f'<td class="num">{_e(_fmt(v))}</td>'
            if _number(v) is not None
            else f"<td>{_e(_fmt(v))}</td>"
            for v in values
        )
        body.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _privacy_statement(run: RunData, *, heading: bool) -> str:
    s = run.summary
    mode = s.get("dp_mode", _get(run.scenario, "dp.mode"))
    out = [f"<h3>{_e(run.label)}</h3>"] if heading else []
    if mode in (None, "off"):
        out.append(
            '<p class="alert">Differential privacy is <b>off</b>: no privacy guarantee is '
            "claimed, and the model may reveal its clients' training data.</p>"
        )
        return "\n".join(out + _audit_paragraphs(run))
    eps = _fmt(run.epsilon_max, ".3g")
    delta = _fmt(s.get("delta"), ".3g")
    accountant = _e(s.get("accountant") or _get(run.scenario, "dp.accountant"))
    if mode == "sample":
        out.append(
            "<p><b>Level: example (sample) level.</b> Each client runs DP-SGD (Opacus) with "
            "Poisson sampling on its own shard; neighbouring datasets differ in one example "
            "of one client. A client's ε composes only the rounds it took part in; the "
            f"population's guarantee is the largest: <b>ε = {eps} at δ = {delta}</b> "
            f"({accountant} accountant).</p>"
        )
    else:
        sampling = _e(_get(run.scenario, "dp.client_sampling") or "poisson")
        out.append(
            "<p><b>Level: user level.</b> DP-FedAvg: each client's whole update is clipped "
            "and Gaussian noise is added to the sum; neighbouring datasets differ in all "
            f"the data of one client ({sampling} client sampling). "
            f"<b>ε = {eps} at δ = {delta}</b> ({accountant} accountant).</p>"
        )
    rng = s.get("noise_rng")
    if rng == "seeded":
        out.append(
            '<p class="note">Noise RNG: <b>seeded</b>. The run is reproducible, but seeded '
            "noise is for experiments: the ε above describes the mechanism, and is not a "
            "guarantee claimed for this run (set <code>dp.secure_rng = true</code> for "
            "that).</p>"
        )
    elif rng is not None:
        out.append(f"<p>Noise RNG: <b>{_e(rng)}</b> (secure).</p>")
    mismatches = s.get("ledger_mismatches")
    if isinstance(mismatches, int) and mismatches > 0:
        out.append(
            f'<p class="alert">{mismatches} ledger line(s) did not match what the scenario '
            "asked for: see <code>fedsim audit</code>.</p>"
        )
    return "\n".join(out + _audit_paragraphs(run))


def _audit_paragraphs(run: RunData) -> list[str]:
    if run.audit is None or run.empirical is None:
        return []
    value, kind = run.empirical
    a = run.audit
    accountant = run.epsilon_max
    if kind == "lower bound":
        conf = _number(a.get("confidence"))
        detail = []
        if conf is not None:
            detail.append(f"{conf:.0%} confidence")
        if a.get("guesses") is not None and a.get("correct") is not None:
            detail.append(f"{_fmt(a['correct'])} of {_fmt(a['guesses'])} guesses right")
        if a.get("canaries") is not None:
            detail.append(f"{_fmt(a['canaries'])} canaries")
        text = (
            "<b>Empirical audit</b> (one run, Steinke, Nasr &amp; Jagielski 2023): the run "
            f"is not (ε, δ)-DP for any ε below <b>{value:.3g}</b>"
            + (f" ({_e(', '.join(detail))})" if detail else "")
            + ". This is a statistical lower bound on the true ε."
        )
        if accountant is not None and value > accountant * (1 + 1e-9):
            return [
                f'<p class="alert">{text} It <b>exceeds</b> the accountant\'s ε = '
                f"{accountant:.3g}: the implementation or the accounting is wrong.</p>"
            ]
        if accountant is not None:
            return [f'<p class="ok">{text} Accountant\'s ε = {accountant:.3g}.</p>']
        return [f"<p>{text}</p>"]
    delta = _number(a.get("delta"))
    at = f" at δ = {delta:.3g}" if delta is not None else ""
    return [
        "<p><b>Empirical estimate</b> (one shot, Andrew et al. 2023): ε ≈ "
        f"<b>{value:.3g}</b>{at}, from canary clients' cosines with the final model. "
        "An estimate under a Gaussian fit, not a bound"
        + (f"; accountant's ε = {accountant:.3g}." if accountant is not None else ".")
        + "</p>"
    ]


def _figure(name: str, png: bytes) -> str:
    caption = FIGURES[name][1]
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption><code>{_e(name)}</code>: {_e(caption)}</figcaption></figure>"
    )


def _footer(runs: Sequence[RunData]) -> str:
    lines = []
    for run in runs:
        versions = run.summary.get("versions")
        if isinstance(versions, dict):
            text = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
            lines.append(f"{_e(run.label)}: {_e(text)}")
    return "<footer>" + ("<br>".join(lines) or "") + "</footer>"
