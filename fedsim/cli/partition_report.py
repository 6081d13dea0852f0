"""What a data split looks like: per-client sizes, label mix, entropy, and a heat map.

Used by ``fedsim partition SCENARIO`` (see `partition_command`) to show a researcher the split a
scenario will produce before anything trains:

    summary = partition_summary(parts, bundle.train.labels, bundle.num_classes)
    render_summary(summary, Console())
    save_heatmap(summary["label_counts"], "partition.png")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedsim.data.errors import DataError

# Rows a heat map shows before it subsamples: beyond ~100 rows the labels and cells are
# too small to read at a normal figure size.
MAX_HEATMAP_CLIENTS = 100
# Cells get their count written in them only when the grid is this small.
_ANNOTATE_MAX_ROWS, _ANNOTATE_MAX_COLS = 30, 20


def _stats(values: np.ndarray) -> dict[str, float]:
    """min / median / max / mean of a non-empty array, as Python numbers."""
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def _check_inputs(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Validate the arguments of `partition_summary`; return labels as int64."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise DataError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), found "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    if len(parts) == 0:
        raise DataError("parts is empty; need at least one client")
    for cid, part in enumerate(parts):
        arr = np.asarray(part)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"parts[{cid}] must be a 1-D integer index array, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= labels.size):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise DataError(f"parts[{cid}] has index {bad} outside 0..{labels.size - 1}")
    return labels.astype(np.int64, copy=False)


def partition_summary(
    parts: list[np.ndarray], labels: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Describe a partition: how much data each client has and how skewed its labels are.

    Args:
        parts: one index array per client (into `labels`).
        labels: the label of every sample of the partitioned split.
        num_classes: number of label values.

    Returns:
        A dict with:
        ``clients``, ``num_classes``, ``samples`` (assigned, counting repeats),
        ``dataset_samples``, ``unassigned`` (samples no client holds), ``overlapping``
        (samples held by more than one client), ``empty_clients``;
        ``sizes`` and ``classes_per_client``: {"min", "median", "max", "mean"};
        ``mean_entropy_bits``: mean over non-empty clients of the entropy (base 2) of the
        client's label distribution, and ``max_entropy_bits`` = log2(num_classes) for scale
        (0 = every client has one label; max = every client perfectly balanced);
        ``label_counts``: int64 matrix (clients x classes);
        ``per_client``: {"sizes", "classes", "entropy_bits"} arrays (entropy NaN when empty).
        The arrays are numpy; everything else is JSON-friendly.

    Raises:
        DataError: if labels are outside 0..num_classes-1 or an index is out of range.
    """
    labels = _check_inputs(parts, labels, num_classes)
    k = len(parts)
    sizes = np.array([np.asarray(p).size for p in parts], dtype=np.int64)
    flat = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts])
    owner = np.repeat(np.arange(k, dtype=np.int64), sizes)
    # One bincount over (client, label) pairs: fast for 10,000 clients x 62 classes.
    counts = np.bincount(owner * num_classes + labels[flat], minlength=k * num_classes).reshape(
        k, num_classes
    )
    classes = (counts > 0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / sizes[:, None]
        entropy = -np.where(counts > 0, p * np.log2(np.where(counts > 0, p, 1.0)), 0.0).sum(axis=1)
    entropy[sizes == 0] = np.nan
    nonempty = sizes > 0
    held = np.bincount(flat, minlength=labels.size)
    return {
        "clients": k,
        "num_classes": int(num_classes),
        "samples": int(sizes.sum()),
        "dataset_samples": int(labels.size),
        "unassigned": int((held == 0).sum()),
        "overlapping": int((held > 1).sum()),
        "empty_clients": int((~nonempty).sum()),
        "sizes": _stats(sizes),
        "classes_per_client": _stats(classes),
        "mean_entropy_bits": float(entropy[nonempty].mean()) if nonempty.any() else float("nan"),
        "max_entropy_bits": float(np.log2(num_classes)),
        "label_counts": counts,
        "per_client": {"sizes": sizes, "classes": classes, "entropy_bits": entropy},
    }


def _heatmap_rows(num_clients: int, max_clients: int) -> np.ndarray:
    """Evenly spaced client rows to draw (all of them when there are few enough).

    Subsampling (rather than summing neighbours into bins) keeps each drawn row one real
    client, so the label skew stays visible; summing would average it away.
    """
    if num_clients <= max_clients:
        return np.arange(num_clients)
    return np.unique(np.linspace(0, num_clients - 1, max_clients).round().astype(np.int64))


def save_heatmap(
    matrix: np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    max_clients: int = MAX_HEATMAP_CLIENTS,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a clients x classes heat map of sample counts as a PNG (matplotlib, Agg).

    Args:
        matrix: counts, shape (clients, classes), e.g. ``summary["label_counts"]``.
        path: output PNG file; parent directories are created.
        title: first line of the title (default "samples per client and class").
        max_clients: draw at most this many rows; with more clients, evenly spaced clients
            are drawn and the title says "showing R of K clients (evenly spaced)".
        class_names: tick label of each class (e.g. Shakespeare's characters); class
            numbers when None.

    Returns:
        The path written.

    Raises:
        DataError: if `matrix` is not 2-D with at least one row and column, or
            `max_clients` < 1.
    """
    fig = heatmap_figure(matrix, title=title, max_clients=max_clients, class_names=class_names)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def heatmap_figure(
    matrix: np.ndarray,
    *,
    title: str | None = None,
    max_clients: int = MAX_HEATMAP_CLIENTS,
    class_names: Sequence[str] | None = None,
) -> Any:
    """The matplotlib Figure :func:`save_heatmap` writes (same arguments, no path)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise DataError(f"matrix must be 2-D (clients x classes), got shape {counts.shape}")
    if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
        raise DataError(f"max_clients must be an integer >= 1, got {max_clients!r}")
    k, c = counts.shape
    rows = _heatmap_rows(k, max_clients)
    shown = counts[rows]
    heading = title or "samples per client and class"
    if rows.size < k:
        heading += f"\nshowing {rows.size} of {k} clients (evenly spaced)"

    # Size grows with the grid so cells stay legible; capped so huge grids still fit a screen.
    width = min(16.0, max(5.0, 0.28 * c + 2.5))
    row_inches = 0.16 if rows.size <= _ANNOTATE_MAX_ROWS else 0.1  # room for written counts
    height = min(14.0, max(3.0, row_inches * rows.size + 1.8))
    # A Figure with its own Agg canvas: no pyplot global state, no display needed.
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xlabel("class" if class_names is None else "next character")
    ax.set_ylabel("client")
    ax.set_title(heading, fontsize=10)
    if class_names is not None and len(class_names) != c:
        raise DataError(f"class_names has {len(class_names)} names for {c} classes")
    # Named classes (characters) are short: all fit; numbered ones thin out past 31.
    x_step = 1 if class_names is not None else max(1, int(np.ceil(c / 31)))
    ax.set_xticks(np.arange(0, c, x_step))
    if class_names is not None:
        ax.set_xticklabels([_printable(n) for n in class_names], fontsize=6, family="monospace")
    y_step = max(1, int(np.ceil(rows.size / 25)))
    ticks = np.arange(0, rows.size, y_step)
    ax.set_yticks(ticks)
    ax.set_yticklabels([str(int(rows[t])) for t in ticks], fontsize=7)
    if rows.size <= _ANNOTATE_MAX_ROWS and c <= _ANNOTATE_MAX_COLS:
        top = shown.max() if shown.size else 0
        for (i, j), v in np.ndenumerate(shown):
            # Dark text on the bright (high) end of viridis, light text elsewhere.
            color = "black" if top and v > 0.6 * top else "white"
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=6, color=color)
    fig.tight_layout()
    return fig


def _printable(name: str) -> str:
    """A class name as a tick label: whitespace characters spelled out."""
    return {" ": "␣", "\n": "\\n", "\t": "\\t"}.get(name, name)


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['min']:g} / {stats['median']:g} / {stats['max']:g}"


def render_summary(summary: dict[str, Any], console: Console, *, title: str | None = None) -> None:
    """Print a `partition_summary` as a rich table.

    Args:
        summary: the dict `partition_summary` returned.
        console: where to print.
        title: table title (default "partition").
    """
    table = Table(title=title or "partition", show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("clients", str(summary["clients"]))
    table.add_row("classes", str(summary["num_classes"]))
    table.add_row("samples assigned", f"{summary['samples']} of {summary['dataset_samples']}")
    if summary["unassigned"]:
        table.add_row("samples in no client", str(summary["unassigned"]))
    if summary["overlapping"]:
        table.add_row("samples in several clients", str(summary["overlapping"]))
    table.add_row("empty clients", str(summary["empty_clients"]))
    table.add_row("client size min / median / max", _fmt(summary["sizes"]))
    table.add_row("classes per client min / median / max", _fmt(summary["classes_per_client"]))
    table.add_row(
        "mean label entropy (bits)",
        f"{summary['mean_entropy_bits']:.3f} of max {summary['max_entropy_bits']:.3f}",
    )
    console.print(table)


def _safe_name(name: str) -> str:
    """A scenario name as a file-name part (no path separators or spaces)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "scenario"


def class_names(scenario: Any) -> list[str] | None:
    """Names of the scenario's classes where they are not just numbers (Shakespeare's
    next-character labels are its vocabulary); None otherwise."""
    if scenario.data.name == "shakespeare":
        from fedsim.data.shakespeare import VOCAB

        return list(VOCAB)
    return None


def partition_command(
    scenario_path: str,
    overrides: list[str],
    out_png: str | None,
    *,
    console: Console | None = None,
) -> int:
    """``fedsim partition SCENARIO``: show the training split a scenario produces.

    Loads the scenario (with ``--set`` overrides) and its data, partitions the training split
    exactly as a run would (`fedsim.shards.build_shards`, so with federated evaluation on the
    clients' held-out samples are not counted), prints the summary table and writes the heat map.

    Args:
        scenario_path: scenario TOML file.
        overrides: ``key.path=value`` strings, as for ``fedsim run --set``.
        out_png: heat-map path; default ``partition_<scenario name>.png`` in the working
            directory.
        console: where to print (default: a new stdout console).

    Returns:
        0.

    Raises:
        ScenarioError: for an unreadable or invalid scenario (the CLI exits 2).
        DataError: if the data cannot be loaded or partitioned as asked.
    """
    # Imported here: the client side pulls in torch and Flower, which a plain
    # `import fedsim.cli.partition_report` should not pay for.
    from fedsim.config import Scenario
    from fedsim.shards import build_shards, load_scenario_data

    console = console or Console()
    scenario = Scenario.from_toml(scenario_path, overrides)
    bundle = load_scenario_data(scenario)
    parts = build_shards(scenario, bundle).train
    summary = partition_summary(parts, bundle.train.labels, bundle.num_classes)
    data = scenario.data
    label = f"{data.name}, {data.partition}"
    if data.partition == "dirichlet":
        label += f" alpha={data.alpha:g}"
    title = f"{scenario.name}: {label}, {scenario.population} clients"
    render_summary(summary, console, title=escape(title))
    path = Path(out_png) if out_png else Path(f"partition_{_safe_name(scenario.name)}.png")
    written = save_heatmap(
        summary["label_counts"], path, title=title, class_names=class_names(scenario)
    )
    console.print(f"heat map: {written}", markup=False, highlight=False)
    return 0
