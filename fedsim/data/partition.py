"""Split a dataset's sample indices among clients: iid, Dirichlet label skew, or natural groups.

Every method returns one sorted int64 index array per client and works from ``dataset.labels``
and ``dataset.groups`` only, never the samples, so partitioning a million samples among ten
thousand clients is a few vectorised numpy passes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedsim.data._checks import check_int, check_positive_float
from fedsim.data.base import ArrayDataset
from fedsim.data.errors import DataError

# How many fresh Dirichlet draws to try before declaring min_size unreachable. Each try is a
# few milliseconds even for 10,000 clients, so this bounds the worst case well under a second.
MAX_DIRICHLET_TRIES = 100


def _split_by_owner(owner: np.ndarray, num_parts: int) -> list[np.ndarray]:
    """Group sample positions by owner id (0..num_parts-1); each group comes out sorted.

    A stable argsort of the owner ids lists positions in increasing order within each owner, so
    no per-client sort is needed.
    """
    order = np.argsort(owner, kind="stable").astype(np.int64)
    counts = np.bincount(owner, minlength=num_parts)
    return np.split(order, np.cumsum(counts)[:-1])[:num_parts]


def _iid(
    dataset: ArrayDataset, num_clients: int, rng: np.random.Generator, alpha: float, min_size: int
) -> list[np.ndarray]:
    n = len(dataset)
    if n // num_clients < min_size:
        raise DataError(
            f"iid: {n} samples over num_clients={num_clients} gives {n // num_clients} per "
            f"client, fewer than min_size={min_size}"
        )
    owner = np.empty(n, dtype=np.int64)
    # Near-equal parts (sizes differ by at most one), filled in a random order.
    sizes = np.full(num_clients, n // num_clients, dtype=np.int64)
    sizes[: n % num_clients] += 1
    owner[rng.permutation(n)] = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
    return _split_by_owner(owner, num_clients)


def _dirichlet_owner(
    by_class: list[np.ndarray], n: int, num_clients: int, rng: np.random.Generator, alpha: float
) -> np.ndarray | None:
    """One draw of the Hsu et al. (2019) scheme: each class split by proportions ~ Dir(alpha)."""
    owner = np.empty(n, dtype=np.int64)
    clients = np.arange(num_clients, dtype=np.int64)
    concentration = np.full(num_clients, alpha)
    for members in by_class:
        proportions = rng.dirichlet(concentration)
        if not np.all(np.isfinite(proportions)):
            return None  # numerical underflow at tiny alpha: count it as a failed try
        # Cut the shuffled class at the cumulative proportions (as flwr-datasets does).
        cuts = (np.cumsum(proportions) * members.size).astype(np.int64)
        cuts = np.clip(cuts, 0, members.size)
        counts = np.diff(np.concatenate([[0], cuts[:-1], [members.size]]))
        owner[rng.permutation(members)] = np.repeat(clients, counts)
    return owner


def _dirichlet(
    dataset: ArrayDataset, num_clients: int, rng: np.random.Generator, alpha: float, min_size: int
) -> list[np.ndarray]:
    n = len(dataset)
    if num_clients * min_size > n:
        raise DataError(
            f"dirichlet: num_clients={num_clients} x min_size={min_size} exceeds the "
            f"{n} samples available"
        )
    labels = dataset.labels
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    by_class = np.split(order.astype(np.int64), starts[1:])
    smallest = 0
    for _ in range(MAX_DIRICHLET_TRIES):
        owner = _dirichlet_owner(by_class, n, num_clients, rng, alpha)
        if owner is None:
            continue
        sizes = np.bincount(owner, minlength=num_clients)
        smallest = int(sizes.min())
        if smallest >= min_size:
            return _split_by_owner(owner, num_clients)
    raise DataError(
        f"dirichlet: could not give every client >= min_size={min_size} samples with "
        f"alpha={alpha} and num_clients={num_clients} in {MAX_DIRICHLET_TRIES} draws (the last "
        f"draw's smallest client had {smallest}); use a larger alpha, fewer clients or a smaller "
        f"min_size"
    )


def _natural(
    dataset: ArrayDataset, num_clients: int, rng: np.random.Generator, alpha: float, min_size: int
) -> list[np.ndarray]:
    groups = dataset.groups
    if groups is None:
        raise DataError(
            "natural partitioning needs a dataset with natural client ids (groups), such as "
            "shakespeare (speaking roles) or synthetic (devices); this dataset has none, use "
            "'iid' or 'dirichlet'"
        )
    ids = np.unique(groups)
    if num_clients > ids.size:
        raise DataError(
            f"natural: num_clients={num_clients} but the dataset has only {ids.size} natural "
            f"groups; use num_clients <= {ids.size}"
        )
    chosen = ids if num_clients == ids.size else np.sort(rng.choice(ids, num_clients, False))
    pos = np.searchsorted(chosen, groups)
    hit = chosen[np.minimum(pos, num_clients - 1)] == groups
    owner = np.where(hit, pos, num_clients)  # unchosen groups go to a discarded extra part
    parts = _split_by_owner(owner, num_clients + 1)[:num_clients]
    sizes = np.array([p.size for p in parts])
    if sizes.min() < min_size:
        worst = int(np.argmin(sizes))
        raise DataError(
            f"natural: group {int(chosen[worst])} has {int(sizes[worst])} samples, fewer than "
            f"min_size={min_size}"
        )
    return parts


_Method = Callable[[ArrayDataset, int, np.random.Generator, float, int], list[np.ndarray]]
PARTITION_METHODS: dict[str, _Method] = {
    "iid": _iid,
    "dirichlet": _dirichlet,
    "natural": _natural,
}


def partition_indices(
    dataset: ArrayDataset,
    *,
    method: str,
    num_clients: int,
    seed: int,
    alpha: float = 0.5,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Assign the dataset's sample indices to clients.

    Methods:
        - ``"iid"``: a seeded permutation cut into `num_clients` parts whose sizes differ by at
          most one.
        - ``"dirichlet"``: label skew as in Hsu et al. 2019 / flwr-datasets'
          DirichletPartitioner: for each label, proportions over clients are drawn from
          Dir(alpha) and that label's shuffled samples are cut at the cumulative proportions.
          Small alpha (0.1) gives clients few labels each; large alpha (100) is close to iid.
          The whole draw is repeated (up to `MAX_DIRICHLET_TRIES` times, same seeded stream)
          until every client has at least `min_size` samples.
        - ``"natural"``: one client per natural group (``dataset.groups``: speaking role,
          synthetic device). With as many clients as groups, client i gets the i-th smallest
          group id; with fewer, a seeded choice of `num_clients` groups (in increasing id order)
          is used and the other groups' samples belong to no client. The choice depends only on
          the set of group ids, `num_clients` and `seed`, so partitioning the train and the test
          split with the same arguments gives matching clients.

    iid and dirichlet are complete (every index in exactly one client); all methods are disjoint,
    return sorted arrays, and give the same result for the same arguments.

    Args:
        dataset: the split to partition (only ``labels`` and ``groups`` are read).
        method: one of "iid", "dirichlet", "natural".
        num_clients: number of clients, 1 <= num_clients <= len(dataset).
        seed: seed for numpy's `default_rng`, >= 0.
        alpha: Dirichlet concentration, > 0 (used by "dirichlet" only).
        min_size: fewest samples any client may get, >= 0.

    Returns:
        `num_clients` int64 arrays of sample indices, each sorted ascending.

    Raises:
        DataError: on an unknown method or out-of-range argument; when min_size cannot be met;
            for "natural" on a dataset without groups or with fewer groups than `num_clients`.
    """
    if method not in PARTITION_METHODS:
        raise DataError(
            f"unknown partition method {method!r}; allowed: {', '.join(sorted(PARTITION_METHODS))}"
        )
    n = len(dataset)
    num_clients = check_int("num_clients", num_clients, minimum=1)
    if num_clients > n:
        raise DataError(f"num_clients={num_clients} exceeds the {n} samples in the dataset")
    seed = check_int("seed", seed, minimum=0)
    alpha = check_positive_float("alpha", alpha)
    min_size = check_int("min_size", min_size, minimum=0)
    rng = np.random.default_rng(seed)
    return PARTITION_METHODS[method](dataset, num_clients, rng, alpha, min_size)
