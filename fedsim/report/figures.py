"""The report's figures, drawn from parsed run directories (one or several, overlaid).

Every figure is a function of a sequence of :class:`RunData` returning a matplotlib
``Figure``; :func:`render_figures` turns them into PNG bytes. Figures are built with the
object-oriented API (``matplotlib.figure.Figure``), not pyplot: no global figure state,
no display, nothing to close.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedsim.privacy.records import SAMPLE_LEVEL, USER_LEVEL

__all__ = [
    "FIGURES",
    "FORMATS",
    "RunData",
    "client_epsilons",
    "differing_keys",
    "legend_labels",
    "participation_counts",
    "plot_run",
    "render_figures",
]

# Above this population a per-client participation plot is unreadable; the figure shows
# how many clients took part how often instead.
PER_CLIENT_LIMIT = 500
_SIZE = (6.4, 3.6)  # inches; 640 x 360 px at the default 100 dpi
_DPI = 100
#: Output formats of the figure files (the HTML page always embeds PNGs).
FORMATS = ("png", "svg", "pdf")
# Legends name at most this many differing scenario keys; beyond, the directory name.
_MAX_LEGEND_KEYS = 3


@dataclass(frozen=True)
class RunData:
    """What the report reads from one run directory, parsed.

    Attributes:
        path: The run directory.
        label: Name shown in legends and table headers (unique within one report).
        scenario: ``scenario.toml`` as a dict.
        metrics: ``metrics.jsonl``, one dict per round.
        summary: ``summary.json``.
        ledger: ``privacy_ledger.jsonl`` lines, or None when the file is absent (DP off).
        audit: ``empirical_audit.json``, or None when absent.
        legend: Name in figure legends (what sets this run apart from the others it is
            drawn with); the label when empty.
    """

    path: Path
    label: str
    scenario: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    ledger: list[dict[str, Any]] | None = None
    audit: dict[str, Any] | None = None
    legend: str = ""

    @property
    def name(self) -> str:
        """The legend name: :attr:`legend`, else :attr:`label` (as plain text)."""
        return plain(self.legend or self.label)

    @property
    def max_epsilon(self) -> float | None:
        """The scenario's per-client budget ``dp.max_epsilon``, or None."""
        dp = self.scenario.get("dp")
        value = dp.get("max_epsilon") if isinstance(dp, dict) else None
        return float(value) if isinstance(value, int | float) else None

    @property
    def population(self) -> int:
        """Number of clients: scenario.toml's ``population`` (the summary's as fallback)."""
        value = self.scenario.get("population", self.summary.get("population"))
        return int(value) if isinstance(value, int) and value > 0 else 0

    @property
    def epsilon_max(self) -> float | None:
        """The accountant's largest per-client eps at the end, or None (DP off)."""
        eps = self.summary.get("epsilon")
        value = eps.get("max") if isinstance(eps, dict) else None
        return float(value) if isinstance(value, int | float) else None

    @property
    def empirical(self) -> tuple[float, str] | None:
        """The empirical audit's eps and its kind ("lower bound" or "estimate"), if any."""
        if self.audit is None:
            return None
        if "epsilon_lower_bound" in self.audit:
            return float(self.audit["epsilon_lower_bound"]), "lower bound"
        return float(self.audit["epsilon_estimate"]), "estimate"


def plain(text: str) -> str:
    """`text` as matplotlib shows it literally: a "$" would start math mode."""
    return text.replace("$", r"\$")


def _sample_lines(ledger: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [r for r in ledger or [] if r.get("level") == SAMPLE_LEVEL and "client" in r]


def client_epsilons(ledger: Sequence[dict[str, Any]] | None, population: int) -> np.ndarray:
    """Each client's final sample-level eps; 0.0 for clients that never took part.

    Ledger lines carry the cumulative eps after each participation, so a client's final
    eps is the largest of its lines.

    Args:
        ledger: Ledger lines (user-level lines are ignored), or None.
        population: Number of clients; ids run 0..population-1 (the array grows if the
            ledger names a larger id, so no participation is dropped).

    Returns:
        (clients,) float array.
    """
    lines = _sample_lines(ledger)
    size = max([population] + [int(r["client"]) + 1 for r in lines])
    eps = np.zeros(size)
    for r in lines:
        eps[int(r["client"])] = max(eps[int(r["client"])], float(r["epsilon"]))
    return eps


def participation_counts(ledger: Sequence[dict[str, Any]] | None, population: int) -> np.ndarray:
    """How many rounds each client took part in, from the ledger.

    A sample-level line is one participation of its ``client``; a user-level line is one
    participation of every id in its ``clients`` list.

    Args:
        ledger: Ledger lines, or None (all zeros).
        population: Number of clients (ids 0..population-1; grows for larger ids).

    Returns:
        (clients,) int array.
    """
    ids: list[int] = [int(r["client"]) for r in _sample_lines(ledger)]
    for r in ledger or []:
        if r.get("level") == USER_LEVEL:
            # The ledger reader keeps user-level lines unvalidated: skip anything odd.
            clients = r.get("clients")
            if isinstance(clients, list):
                ids.extend(c for c in clients if isinstance(c, int) and c >= 0)
    size = max([population] + [i + 1 for i in ids])
    return np.bincount(np.asarray(ids, dtype=int), minlength=size)


def _new_axes(title: str, *, integer_x: bool = True) -> tuple[Figure, Any]:
    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if integer_x:  # rounds, client ids, counts: no "round 1.25" ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35")


def _series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(rounds, values) of a metric, skipping rounds where it is null (not evaluated)."""
    pts = [(m["round"], m[key]) for m in metrics if isinstance(m.get(key), int | float)]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def _colour(i: int) -> str:
    return f"C{i % 10}"  # one colour per run, the same in every figure


def accuracy_figure(runs: Sequence[RunData], title: str = "Test accuracy") -> Figure:
    """Central test accuracy vs round, one line per run (dashed: federated evaluation)."""
    fig, ax = _new_axes(title)
    drawn = False
    for i, run in enumerate(runs):
        for key, style, what in (("accuracy", "-", ""), ("fed_accuracy", "--", " (federated)")):
            x, y = _series(run.metrics, key)
            if x:
                ax.plot(x, y, style, marker="o", ms=3, color=_colour(i), label=run.name + what)
                drawn = True
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    if drawn:
        ax.legend(fontsize=8)
    else:
        _note(ax, "no round was evaluated")
    return fig


def loss_figure(runs: Sequence[RunData]) -> Figure:
    """Test loss (solid) and training loss (dashed) vs round."""
    fig, ax = _new_axes("Loss")
    drawn = False
    for i, run in enumerate(runs):
        for key, style, what in (("loss", "-", "test"), ("train_loss", "--", "train")):
            x, y = _series(run.metrics, key)
            if x:
                ax.plot(x, y, style, color=_colour(i), label=f"{run.name} ({what})")
                drawn = True
    ax.set_xlabel("round")
    ax.set_ylabel("loss")
    if drawn:
        ax.legend(fontsize=8)
    else:
        _note(ax, "no loss was recorded")
    return fig


def epsilon_figure(
    runs: Sequence[RunData], title: str = "Privacy spent per client (accountant)"
) -> Figure:
    """Per-client eps vs round: median line, min-max band, and the budget if one is set."""
    fig, ax = _new_axes(title)
    drawn = False
    for i, run in enumerate(runs):
        x, med = _series(run.metrics, "epsilon_median")
        _, lo = _series(run.metrics, "epsilon_min")
        _, hi = _series(run.metrics, "epsilon_max")
        if not x or not (len(x) == len(lo) == len(hi)):
            continue
        ax.fill_between(x, lo, hi, color=_colour(i), alpha=0.2, lw=0)
        ax.plot(x, med, marker="o", ms=3, color=_colour(i), label=f"{run.name}: median")
        ax.plot(x, hi, ":", color=_colour(i), lw=1, label=f"{run.name}: max")
        budget = run.max_epsilon
        if budget is not None:
            # Clients that reach it are left out of later rounds (dp.max_epsilon).
            ax.axhline(budget, ls="--", color=_colour(i), lw=1.2, label=f"{run.name}: budget")
        drawn = True
    ax.set_xlabel("round")
    ax.set_ylabel("ε per client")
    if drawn:
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    else:
        _note(ax, "DP off: no privacy spending is accounted")
    return fig


def epsilon_hist_figure(runs: Sequence[RunData]) -> Figure:
    """Histogram over the population of each client's final eps (0 = never took part)."""
    fig, ax = _new_axes("Final ε per client, over the whole population", integer_x=False)
    per_run = [(i, run, client_epsilons(run.ledger, run.population)) for i, run in enumerate(runs)]
    per_run = [(i, run, eps) for i, run, eps in per_run if _sample_lines(run.ledger)]
    if not per_run:
        _note(ax, "no sample-level ledger: no per-client ε\n(DP off, or user-level DP)")
        return fig
    # Shared bins, so overlaid runs compare bar for bar.
    everything = np.concatenate([eps for _, _, eps in per_run])
    edges = np.histogram_bin_edges(everything, bins=min(30, max(5, len(everything) // 4)))
    for i, run, eps in per_run:
        never = int(np.count_nonzero(eps == 0))
        label = f"{run.name} ({never} of {eps.size} clients never took part)"
        ax.hist(eps, bins=edges, color=_colour(i), alpha=0.35, label=label)
        ax.hist(eps, bins=edges, color=_colour(i), histtype="step")
    ax.set_xlabel("final ε")
    ax.set_ylabel("clients")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def participation_figure(runs: Sequence[RunData]) -> Figure:
    """Rounds each client took part in (per client; a distribution for large populations)."""
    counts = [
        (i, run, participation_counts(run.ledger, run.population)) for i, run in enumerate(runs)
    ]
    counts = [(i, run, c) for i, run, c in counts if run.ledger is not None]
    if not counts:
        fig, ax = _new_axes("Participation per client")
        _note(ax, "no privacy ledger: participation is not recorded")
        return fig
    if max(c.size for _, _, c in counts) <= PER_CLIENT_LIMIT:
        fig, ax = _new_axes("Participation per client")
        for i, run, c in counts:
            edges = np.arange(c.size + 1) - 0.5
            ax.stairs(c, edges, fill=len(counts) == 1, color=_colour(i), alpha=0.8, label=run.name)
            expected = _expected_participation(run)
            if expected is not None:
                ax.axhline(expected, ls=":", color=_colour(i), lw=1)
        ax.set_xlabel("client id")
        ax.set_ylabel("rounds taken part in")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, title="dotted: expected", title_fontsize=8)
    else:
        fig, ax = _new_axes("Participation: clients by number of rounds taken part in")
        width = 0.8 / len(counts)
        for j, (i, run, c) in enumerate(counts):
            hist = np.bincount(c)
            ax.bar(np.arange(hist.size) + j * width, hist, width, color=_colour(i), label=run.name)
        ax.set_xlabel("rounds taken part in")
        ax.set_ylabel("clients")
        ax.legend(fontsize=8)
    return fig


def _expected_participation(run: RunData) -> float | None:
    """rounds * cohort / population: the mean count if every client is equally likely."""
    rounds = run.summary.get("rounds")
    cohort = run.summary.get("clients_per_round")
    pop = run.population
    if isinstance(rounds, int) and isinstance(cohort, int) and pop > 0:
        return rounds * cohort / pop
    return None


def privacy_utility_figure(runs: Sequence[RunData]) -> Figure:
    """Final accuracy vs the accountant's max eps, one point per run (+ audit eps)."""
    fig, ax = _new_axes("Privacy vs utility (final accuracy)", integer_x=False)
    drawn = False
    audit_labels: set[str] = set()
    for i, run in enumerate(runs):
        acc = run.summary.get("accuracy")
        if not isinstance(acc, int | float):
            continue
        eps = run.epsilon_max
        if eps is None:
            # DP off: no eps to place it at; its accuracy is the reference line.
            ax.axhline(acc, ls="--", color=_colour(i), lw=1, label=f"{run.name} (DP off)")
            drawn = True
            continue
        ax.plot([eps], [acc], "o", ms=8, color=_colour(i), label=f"{run.name} (accountant ε)")
        ax.annotate(run.name, (eps, acc), textcoords="offset points", xytext=(6, 6), fontsize=8)
        empirical = run.empirical
        if empirical is not None:
            value, kind = empirical
            marker = "^" if kind == "lower bound" else "D"
            label = f"empirical {kind}"
            ax.plot(
                [value],
                [acc],
                marker,
                ms=8,
                mfc="none",
                color=_colour(i),
                label=label if label not in audit_labels else None,
            )
            ax.plot([value, eps], [acc, acc], ":", color=_colour(i), lw=1)
            audit_labels.add(label)
        drawn = True
    ax.set_xlabel("ε (largest over clients)")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    if drawn:
        ax.legend(fontsize=8)
    else:
        _note(ax, "no run has a final accuracy")
    return fig


#: File name -> (figure function, caption), in page order.
FIGURES: dict[str, tuple[Callable[[Sequence[RunData]], Figure], str]] = {
    "accuracy.png": (accuracy_figure, "Central test accuracy after each evaluated round."),
    "loss.png": (loss_figure, "Test loss (solid) and mean training loss (dashed)."),
    "epsilon.png": (
        epsilon_figure,
        "Each client's cumulative ε as the accountant composes it: median client (line), "
        "largest (dotted) and the min-max band over the whole population.",
    ),
    "epsilon_hist.png": (
        epsilon_hist_figure,
        "Final ε of every client in the population; clients that never took part spent "
        "nothing (ε = 0).",
    ),
    "participation.png": (
        participation_figure,
        "Rounds each client took part in, from the privacy ledger (dotted: the mean if "
        "every client were equally likely to be sampled).",
    ),
    "privacy_utility.png": (
        privacy_utility_figure,
        "Final accuracy against the largest per-client ε, one point per run; hollow "
        "markers: the empirical audit's ε, where the run has one.",
    ),
}


def render_figures(
    runs: Sequence[RunData], *, fmt: str = "png", dpi: int = _DPI
) -> dict[str, bytes]:
    """Draw every figure of :data:`FIGURES` and encode it.

    Args:
        runs: The runs to draw (overlaid, one colour each).
        fmt: One of :data:`FORMATS`; the file names get its extension.
        dpi: Resolution of raster output (PNG; ignored by the vector formats' geometry).

    Returns:
        File name -> encoded bytes, in page order.
    """
    out = {}
    for name, (draw, _) in FIGURES.items():
        out[_with_format(name, fmt)] = _encode(draw(runs), fmt, dpi)
    return out


def _with_format(name: str, fmt: str) -> str:
    return str(Path(name).with_suffix(f".{fmt}"))


def _encode(fig: Figure, fmt: str, dpi: int) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"figure format {fmt!r}: allowed {', '.join(FORMATS)}")
    buf = io.BytesIO()
    # A fixed date keeps PDF/SVG output byte-stable between renders of the same run.
    metadata = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


# --------------------------------------------------------------------------- legends


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def differing_keys(scenarios: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted scenario keys whose value is not the same in every scenario (sorted).

    ``name`` is left out: it names the run, it does not describe a setting. A key that
    one scenario lacks counts as differing.
    """
    flats = [_flatten(s) for s in scenarios]
    keys = sorted(set().union(*flats)) if flats else []
    missing = object()
    return [k for k in keys if k != "name" and len({repr(f.get(k, missing)) for f in flats}) > 1]


def legend_labels(runs: Sequence[RunData]) -> list[str]:
    """Legend names saying what differs between the runs, e.g. ``dp.noise_multiplier=0.5``.

    The run labels (directory names) where there is one run, where no setting differs
    (repeats of one scenario) or more than a few do (the legend would be unreadable).
    """
    keys = differing_keys([run.scenario for run in runs])
    if len(runs) < 2 or not keys or len(keys) > _MAX_LEGEND_KEYS:
        return [run.label for run in runs]
    names = []
    for run in runs:
        flat = _flatten(run.scenario)
        names.append(", ".join(f"{k}={_legend_value(flat.get(k))}" for k in keys))
    if len(set(names)) < len(names):  # e.g. a key one run lacks: keep them apart
        return [run.label for run in runs]
    return names


def _legend_value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- one run


def plot_run(
    metrics: Sequence[dict[str, Any]],
    out_dir: Path,
    scenario: dict[str, Any],
    *,
    fmt: str = "png",
    dpi: int = _DPI,
) -> list[Path]:
    """Write a run's own accuracy and epsilon figures (``plots/`` of the run directory).

    Args:
        metrics: The run's metric rows.
        out_dir: Where to write (created).
        scenario: The resolved scenario as a dict (its name titles the figures; its
            ``dp.max_epsilon``, when set, is drawn as the budget line).
        fmt: One of :data:`FORMATS`.
        dpi: Resolution of raster output.

    Returns:
        The paths written: accuracy then epsilon.
    """
    name = str(scenario.get("name", "run"))
    run = RunData(path=out_dir, label=name, scenario=scenario, metrics=list(metrics), summary={})
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, fig in (
        ("accuracy", accuracy_figure([run], title=f"{plain(name)}: test accuracy")),
        ("epsilon", epsilon_figure([run], title=f"{plain(name)}: privacy spent per client")),
    ):
        path = out_dir / f"{file}.{fmt}"
        path.write_bytes(_encode(fig, fmt, dpi))
        paths.append(path)
    return paths
