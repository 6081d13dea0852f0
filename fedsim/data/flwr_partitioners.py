"""flwr-datasets' partitioners applied to fedsim's in-memory datasets.

Flower users know the partitioners of `flwr_datasets.partitioner` (IID, Dirichlet, Pathological,
Shard, NaturalId, size-skewed ...). They partition a Hugging Face `datasets.Dataset`; fedsim keeps
its data as tensors. `flwr_partition` bridges the two without copying any sample: it builds a
small `datasets.Dataset` holding only the label (and group) column plus an ``idx`` column with
each row's position in our tensors, lets the flwr-datasets partitioner split it, and reads each
partition's ``idx`` values back. Whatever the partitioner does to its dataset (ShardPartitioner
sorts it by label), ``idx`` still names the tensor row.

Rows are handed to the partitioner in a seeded random order. Several partitioners cut the data
in storage order (IID and the size-based ones take contiguous blocks; Dirichlet cuts each label
in order), so without this a dataset stored by class or by writer would give each client a
block of neighbouring samples instead of a random draw.

Methods of `flwr_partition` and their options (flwr-datasets' own names and defaults unless
noted):

- ``"iid"`` (IidPartitioner): equal contiguous blocks of the seeded order, sizes within one.
- ``"dirichlet"`` (DirichletPartitioner): per label, client shares ~ Dir(alpha).
  ``alpha=0.5`` (> 0), ``min_partition_size=10`` (redraws, at most 10 times, until every
  client has that many; use 0 for thousands of clients), ``self_balancing=False`` (stop
  giving samples to clients above the average size).
- ``"pathological"`` (PathologicalPartitioner): each client gets
  ``num_classes_per_partition`` labels (required), the label's samples split evenly among
  the clients that have it; ``class_assignment_mode="random"`` | ``"deterministic"`` |
  ``"first-deterministic"``. Labels no client drew are left out (a warning says so).
- ``"shard"`` (ShardPartitioner, McMahan et al. 2017): data sorted by label, cut into shards
  of ``shard_size`` samples, ``num_shards_per_partition`` random shards per client (give
  one or both); ``keep_incomplete_shard=False``. Leftover shards are unassigned.
- ``"natural"`` (NaturalIdPartitioner, on the group column): one client per natural id.
  With fewer clients than ids, a seeded choice of ids, the same choice (and result) as
  `partition_indices(method="natural")`.
- ``"linear"`` / ``"square"`` / ``"exponential"`` (Linear/Square/ExponentialPartitioner):
  quantity skew, client i (1-based) gets a share proportional to i, i^2 or e^i of the
  seeded order. No options. (flwr-datasets 0.6.1 has no square-root partitioner.)
- ``"size"`` (SizePartitioner): ``partition_sizes`` (required): one size per client;
  samples beyond their sum are unassigned.
- ``"inner_dirichlet"`` (InnerDirichletPartitioner): ``partition_sizes`` (required, must
  sum to the dataset size) and a label mix ~ Dir(``alpha=0.5``) per client. Slow: a
  Python step per sample (seconds for 60,000).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.data._checks import check_int, check_positive_float
from fedsim.data.base import ArrayDataset
from fedsim.data.errors import DataError

# Marks an option the caller must give.
REQUIRED = object()
_INDEX_COLUMN = "idx"
COLUMNS = ("label", "group")
_CLASS_ASSIGNMENT_MODES = ("random", "deterministic", "first-deterministic")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise DataError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _check_sizes(name: str, value: Any, num_clients: int, n: int) -> list[int]:
    """A per-client size list: `num_clients` integers >= 1 summing to at most `n`."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise DataError(f"{name} must be a list of {num_clients} integers, got {value!r}")
    sizes = [check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(value)]
    if len(sizes) != num_clients:
        raise DataError(f"{name} must have one entry per client ({num_clients}), got {len(sizes)}")
    if sum(sizes) > n:
        raise DataError(f"{name} sums to {sum(sizes)}, more than the {n} samples")
    return sizes


@dataclass(frozen=True)
class _Method:
    """How to build one flwr-datasets partitioner from `flwr_partition`'s arguments.

    Attributes:
        partitioner: class name in `flwr_datasets.partitioner`.
        options: allowed option -> default (`REQUIRED` if it has none).
        column: the column partitioned by default ("label" or "group").
        complete: whether every sample is always assigned to some client.
    """

    partitioner: str
    options: dict[str, Any]
    column: str
    complete: bool
    build: Callable[[Any, int, str, int, dict[str, Any]], Any]


def _build_count(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(num_partitions=k)


def _build_dirichlet(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(
        num_partitions=k,
        partition_by=column,
        alpha=o["alpha"],
        min_partition_size=o["min_partition_size"],
        self_balancing=o["self_balancing"],
        shuffle=True,
        seed=seed,
    )


def _build_pathological(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(
        num_partitions=k,
        partition_by=column,
        num_classes_per_partition=o["num_classes_per_partition"],
        class_assignment_mode=o["class_assignment_mode"],
        shuffle=True,
        seed=seed,
    )


def _build_shard(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(
        num_partitions=k,
        partition_by=column,
        num_shards_per_partition=o["num_shards_per_partition"],
        shard_size=o["shard_size"],
        keep_incomplete_shard=o["keep_incomplete_shard"],
        shuffle=True,
        seed=seed,
    )


def _build_natural(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(partition_by=column)


def _build_size(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(partition_sizes=o["partition_sizes"])


def _build_inner_dirichlet(cls: Any, k: int, column: str, seed: int, o: dict[str, Any]) -> Any:
    return cls(
        partition_sizes=o["partition_sizes"],
        partition_by=column,
        alpha=o["alpha"],
        shuffle=True,
        seed=seed,
    )


FLWR_METHODS: dict[str, _Method] = {
    "iid": _Method("IidPartitioner", {}, "label", True, _build_count),
    "dirichlet": _Method(
        "DirichletPartitioner",
        {"alpha": 0.5, "min_partition_size": 10, "self_balancing": False},
        "label",
        True,
        _build_dirichlet,
    ),
    "pathological": _Method(
        "PathologicalPartitioner",
        {"num_classes_per_partition": REQUIRED, "class_assignment_mode": "random"},
        "label",
        False,
        _build_pathological,
    ),
    "shard": _Method(
        "ShardPartitioner",
        {"num_shards_per_partition": None, "shard_size": None, "keep_incomplete_shard": False},
        "label",
        False,
        _build_shard,
    ),
    "natural": _Method("NaturalIdPartitioner", {}, "group", False, _build_natural),
    "linear": _Method("LinearPartitioner", {}, "label", True, _build_count),
    "square": _Method("SquarePartitioner", {}, "label", True, _build_count),
    "exponential": _Method("ExponentialPartitioner", {}, "label", True, _build_count),
    "size": _Method("SizePartitioner", {"partition_sizes": REQUIRED}, "label", False, _build_size),
    "inner_dirichlet": _Method(
        "InnerDirichletPartitioner",
        {"partition_sizes": REQUIRED, "alpha": 0.5},
        "label",
        True,
        _build_inner_dirichlet,
    ),
}


# Log of the weight of client i (1-based) for the quantity-skew partitioners (flwr-datasets'
# Linear: i, Square: i^2, Exponential: e^i), in log form so 10,000 clients do not overflow.
_SIZE_WEIGHTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": np.log,
    "square": lambda i: 2.0 * np.log(i),
    "exponential": lambda i: i,
}


def _smallest_share(method: str, k: int, n: int) -> int:
    """Samples the first (smallest) client gets, as flwr-datasets rounds it (truncation)."""
    logw = _SIZE_WEIGHTS[method](np.arange(1, k + 1, dtype=np.float64))
    top = logw.max()
    return int(n * np.exp(logw[0] - top) / np.exp(logw - top).sum())


def _check_quantity_skew(method: str, k: int, n: int) -> None:
    """Fail early, with the limit, where the smallest client would get no sample.

    flwr-datasets raises a terse error there (after overflow warnings for "exponential" beyond
    ~700 clients); the largest usable client count is found by bisection (shares fall with k).
    """
    if _smallest_share(method, k, n) >= 1:
        return
    lo, hi = 1, k  # _smallest_share(lo) >= 1 (one client gets all n), _smallest_share(hi) < 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _smallest_share(method, mid, n) >= 1 else (lo, mid)
    raise DataError(
        f"{method}: with num_clients={k} and {n} samples the smallest client would get no "
        f"sample; {method} size skew on {n} samples allows at most {lo} clients"
    )


def _resolve_options(
    method: str, spec: _Method, options: dict[str, Any], num_clients: int, n: int
) -> dict[str, Any]:
    """Fill defaults, reject unknown or missing options, and check each value's range."""
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(sorted(spec.options)) or "none"
        raise DataError(
            f"partition method {method!r} has no option(s) {', '.join(unknown)}; allowed: {allowed}"
        )
    out = {**spec.options, **options}
    missing = sorted(k for k, v in out.items() if v is REQUIRED)
    if missing:
        raise DataError(f"partition method {method!r} needs option(s) {', '.join(missing)}")
    if "alpha" in out:
        out["alpha"] = check_positive_float("alpha", out["alpha"])
    if "min_partition_size" in out:
        out["min_partition_size"] = check_int(
            "min_partition_size", out["min_partition_size"], minimum=0
        )
    for name in ("self_balancing", "keep_incomplete_shard"):
        if name in out:
            out[name] = _check_bool(name, out[name])
    if "num_classes_per_partition" in out:
        out["num_classes_per_partition"] = check_int(
            "num_classes_per_partition", out["num_classes_per_partition"], minimum=1
        )
    if out.get("class_assignment_mode", "random") not in _CLASS_ASSIGNMENT_MODES:
        raise DataError(
            f"class_assignment_mode must be one of {', '.join(_CLASS_ASSIGNMENT_MODES)}, got "
            f"{out['class_assignment_mode']!r}"
        )
    if method == "shard":
        for name in ("num_shards_per_partition", "shard_size"):
            if out[name] is not None:
                out[name] = check_int(name, out[name], minimum=1)
        if out["num_shards_per_partition"] is None and out["shard_size"] is None:
            raise DataError("shard needs num_shards_per_partition, shard_size, or both")
    if method == "dirichlet" and num_clients * out["min_partition_size"] > n:
        # flwr-datasets would redraw 10 times (seconds at 10,000 clients) before failing.
        raise DataError(
            f"dirichlet: num_clients={num_clients} x min_partition_size="
            f"{out['min_partition_size']} exceeds the {n} samples; lower min_partition_size "
            f"(0 allows empty clients)"
        )
    if method in _SIZE_WEIGHTS:
        _check_quantity_skew(method, num_clients, n)
    if "partition_sizes" in out:
        out["partition_sizes"] = _check_sizes(
            "partition_sizes", out["partition_sizes"], num_clients, n
        )
        if method == "inner_dirichlet" and sum(out["partition_sizes"]) != n:
            raise DataError(
                f"inner_dirichlet: partition_sizes must sum to the {n} samples, got "
                f"{sum(out['partition_sizes'])}"
            )
    return out


@contextlib.contextmanager
def _quiet(method: str) -> Iterator[None]:
    """Silence library noise that says nothing to a fedsim user.

    NaturalIdPartitioner draws a tqdm bar on stderr; pyarrow warns about a deprecated sort
    option that `datasets.Dataset.sort` (used by ShardPartitioner) passes. flwr-datasets' own
    warnings (Dirichlet redraws, unused classes) are kept.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*null_placement.*", category=FutureWarning)
        if method == "natural":
            with contextlib.redirect_stderr(io.StringIO()):
                yield
        else:
            yield


def _column_values(ds: Any, column: str) -> np.ndarray:
    """One integer column of a (possibly sorted / selected) `datasets.Dataset` as numpy."""
    return np.asarray(ds.with_format("numpy", columns=[column])[:][column], dtype=np.int64)


def _public_partition(partitioner: Any, pid: int) -> np.ndarray:
    """Tensor indices of one partition through the documented `load_partition` API (slow)."""
    return np.sort(_column_values(partitioner.load_partition(pid), _INDEX_COLUMN))


def _fast_partitions(partitioner: Any, k: int, n: int) -> list[np.ndarray] | None:
    """All partitions at once from the partitioner's row assignment, or None if unavailable.

    `load_partition` costs ~0.5-1 ms per call (a `datasets.select`), i.e. 5-10 s for 10,000
    clients. flwr-datasets 0.6 partitioners keep their row assignment in
    ``_partition_id_to_indices`` (rows of ``partitioner.dataset``, which may be re-sorted), and
    IidPartitioner takes `datasets.Dataset.shard`'s contiguous blocks; mapping those rows
    through the ``idx`` column of ``partitioner.dataset`` gives the same answer in one pass.
    The caller checks the result against `load_partition` on a few partitions.
    """
    rows = getattr(partitioner, "_partition_id_to_indices", None)
    if isinstance(rows, dict) and len(rows) == k and all(i in rows for i in range(k)):
        positions = [np.asarray(rows[i], dtype=np.int64) for i in range(k)]
    elif type(partitioner).__name__ == "IidPartitioner":
        div, mod = divmod(n, k)
        ids = np.arange(k)
        starts = div * ids + np.minimum(ids, mod)
        positions = [np.arange(s, s + div + (i < mod)) for i, s in zip(ids, starts, strict=True)]
    else:
        return None
    idx = _column_values(partitioner.dataset, _INDEX_COLUMN)
    return [np.sort(idx[p]) for p in positions]


def _run_partitioner(partitioner: Any, n: int) -> list[np.ndarray]:
    """Every partition's tensor indices (sorted), fast path checked against the public API."""
    first = _public_partition(partitioner, 0)  # also makes the partitioner assign all rows
    k = int(partitioner.num_partitions)
    fast = _fast_partitions(partitioner, k, n)
    if fast is not None:
        probes = sorted({0, k // 2, k - 1})
        if all(
            np.array_equal(fast[p], first if p == 0 else _public_partition(partitioner, p))
            for p in probes
        ):
            return fast
    # Unknown partitioner internals (a newer flwr-datasets): take the documented route.
    return [first, *(_public_partition(partitioner, p) for p in range(1, k))]


def _hf_dataset(dataset: ArrayDataset, column: str, seed: int) -> Any:
    """The partitioner's view of `dataset`: label/group column + tensor index, in seeded order."""
    import datasets

    n = len(dataset)
    order = np.random.default_rng([seed, 0x5EED]).permutation(n).astype(np.int64)
    columns: dict[str, np.ndarray] = {"label": dataset.labels[order], _INDEX_COLUMN: order}
    if dataset.groups is not None:
        columns["group"] = dataset.groups[order]
    elif column == "group":
        raise DataError(
            "column='group' needs a dataset with natural client ids (groups), such as femnist, "
            "shakespeare or synthetic; this dataset has none, use column='label'"
        )
    return datasets.Dataset.from_dict(columns)


def _check_request(
    dataset: ArrayDataset, method: str, num_clients: int, seed: int, column: str | None
) -> tuple[_Method, int, int, str]:
    """The method's spec and the checked num_clients, seed and column (default filled)."""
    if method not in FLWR_METHODS:
        raise DataError(
            f"unknown partition method {method!r}; allowed: {', '.join(sorted(FLWR_METHODS))}"
        )
    spec = FLWR_METHODS[method]
    n = len(dataset)
    num_clients = check_int("num_clients", num_clients, minimum=1)
    if num_clients > n:
        raise DataError(f"num_clients={num_clients} exceeds the {n} samples in the dataset")
    seed = check_int("seed", seed, minimum=0)
    column = spec.column if column is None else column
    if column not in COLUMNS:
        raise DataError(f"column must be one of {', '.join(COLUMNS)}, got {column!r}")
    return spec, num_clients, seed, column


def _natural_ids(hf: Any, column: str, num_clients: int) -> np.ndarray:
    """The distinct ids of `column`, sorted; at least `num_clients` of them."""
    ids = np.unique(hf.with_format("numpy", columns=[column])[:][column])
    if num_clients > ids.size:
        raise DataError(
            f"natural: num_clients={num_clients} but the dataset has only {ids.size} "
            f"distinct {column} ids; use num_clients <= {ids.size}"
        )
    return ids


def flwr_partition(
    dataset: ArrayDataset,
    *,
    method: str,
    num_clients: int,
    seed: int,
    column: str | None = None,
    **options: Any,
) -> list[np.ndarray]:
    """Split a dataset's indices among clients with a flwr-datasets partitioner.

    The methods, their options and defaults are the table in this module's docstring
    (`help(fedsim.data.flwr_partitioners)`).

    All methods are disjoint; "iid", "dirichlet", the three quantity-skew methods and
    "inner_dirichlet" are complete (every index assigned). Same arguments, same result.

    Args:
        dataset: the split to partition; only ``labels`` and ``groups`` are read.
        method: a key of `FLWR_METHODS`.
        num_clients: number of clients, 1 <= num_clients <= len(dataset) (for "natural", at
            most the number of distinct group ids).
        seed: seeds the row order and the partitioner, >= 0.
        column: "label" or "group": the column label-based partitioners split by (default
            "label"; "natural" defaults to "group"). "group" with "dirichlet" gives clients
            a skewed mix of natural groups instead of labels.
        **options: the method's options (the module docstring's table).

    Returns:
        `num_clients` sorted int64 arrays of indices into `dataset`.

    Raises:
        DataError: for an unknown method, column or option, a missing required option, an
            out-of-range value, or a request the partitioner cannot meet (its message is kept).
    """
    spec, num_clients, seed, column = _check_request(dataset, method, num_clients, seed, column)
    n = len(dataset)
    resolved = _resolve_options(method, spec, options, num_clients, n)
    hf = _hf_dataset(dataset, column, seed)

    import flwr_datasets.partitioner as flwr_partitioner

    cls = getattr(flwr_partitioner, spec.partitioner)
    k = num_clients
    if method == "natural":
        ids = _natural_ids(hf, column, num_clients)
    try:
        partitioner = spec.build(cls, k, column, seed, resolved)
        partitioner.dataset = hf
        with _quiet(method):
            parts = _run_partitioner(partitioner, n)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{method} ({spec.partitioner}): {exc}") from exc
    if method == "natural" and num_clients < len(parts):
        # Partition p holds the p-th smallest id; draw the subset exactly as partition_indices.
        chosen = np.random.default_rng(seed).choice(ids, num_clients, replace=False)
        parts = [parts[int(p)] for p in np.searchsorted(ids, np.sort(chosen))]
    return parts


def is_complete(method: str) -> bool:
    """Whether `method` always assigns every sample to some client.

    Raises:
        DataError: for an unknown method.
    """
    if method not in FLWR_METHODS:
        raise DataError(
            f"unknown partition method {method!r}; allowed: {', '.join(sorted(FLWR_METHODS))}"
        )
    return FLWR_METHODS[method].complete


__all__ = ["COLUMNS", "FLWR_METHODS", "flwr_partition", "is_complete"]
