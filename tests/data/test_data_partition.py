"""partition_indices: iid, Dirichlet label skew and natural groups."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.data import ArrayDataset, DataError, partition_indices
from fedsim.data.partition import MAX_DIRICHLET_TRIES


def _dataset(n: int = 2000, num_classes: int = 10, num_groups: int | None = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    groups = None
    if num_groups is not None:
        # Unequal group sizes, every group present.
        groups = np.sort(
            np.concatenate([np.arange(num_groups), rng.integers(0, num_groups, n - num_groups)])
        )
        groups = rng.permutation(groups)
    return ArrayDataset(np.zeros((n, 1), dtype=np.float32), labels, groups)


@pytest.fixture(scope="module")
def ds() -> ArrayDataset:
    return _dataset()


def _mean_label_entropy(ds: ArrayDataset, parts: list[np.ndarray], num_classes: int = 10) -> float:
    entropies = []
    for part in parts:
        p = np.bincount(ds.labels[part], minlength=num_classes) / part.size
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_disjoint_complete_sorted(ds, method) -> None:
    parts = partition_indices(ds, method=method, num_clients=20, seed=3)
    assert len(parts) == 20
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted and no duplicates within a client
    joined = np.concatenate(parts)
    assert joined.size == len(ds)  # no index twice across clients ...
    assert np.array_equal(np.sort(joined), np.arange(len(ds)))  # ... and none missing


@pytest.mark.parametrize("method", ["iid", "dirichlet", "natural"])
def test_seeded_reproducible_and_seed_sensitive(ds, method) -> None:
    a = partition_indices(ds, method=method, num_clients=10, seed=7)
    b = partition_indices(ds, method=method, num_clients=10, seed=7)
    c = partition_indices(ds, method=method, num_clients=10, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_near_equal(ds) -> None:
    sizes = [p.size for p in partition_indices(ds, method="iid", num_clients=30, seed=0)]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 2000


def test_dirichlet_small_alpha_skews_labels(ds) -> None:
    iid = partition_indices(ds, method="iid", num_clients=10, seed=0)
    skewed = partition_indices(ds, method="dirichlet", num_clients=10, seed=0, alpha=0.1)
    near_iid = partition_indices(ds, method="dirichlet", num_clients=10, seed=0, alpha=100.0)
    h_iid = _mean_label_entropy(ds, iid)
    assert h_iid > 0.98 * np.log(10)  # iid clients see all ten labels about equally
    assert _mean_label_entropy(ds, skewed) < 0.6 * h_iid
    assert _mean_label_entropy(ds, near_iid) > 0.95 * h_iid


def test_dirichlet_min_size_honoured(ds) -> None:
    args = {"method": "dirichlet", "num_clients": 10, "seed": 0, "alpha": 0.3}
    first_draw = partition_indices(ds, **args, min_size=0)
    assert min(p.size for p in first_draw) < 100  # so min_size=100 forces a redraw
    parts = partition_indices(ds, **args, min_size=100)
    assert min(p.size for p in parts) >= 100
    assert sum(p.size for p in parts) == len(ds)


def test_dirichlet_impossible_min_size_names_settings(ds) -> None:
    with pytest.raises(DataError) as err:
        partition_indices(ds, method="dirichlet", num_clients=200, seed=0, alpha=0.01, min_size=5)
    msg = str(err.value)
    assert "alpha=0.01" in msg and "num_clients=200" in msg and "min_size=5" in msg
    assert str(MAX_DIRICHLET_TRIES) in msg


def test_min_size_beyond_samples_fails_fast(ds) -> None:
    with pytest.raises(DataError, match="num_clients=100 x min_size=21 exceeds the 2000"):
        partition_indices(ds, method="dirichlet", num_clients=100, seed=0, min_size=21)
    with pytest.raises(DataError, match="min_size=21"):
        partition_indices(ds, method="iid", num_clients=100, seed=0, min_size=21)


def test_natural_all_groups_maps_client_i_to_group_i(ds) -> None:
    parts = partition_indices(ds, method="natural", num_clients=50, seed=0)
    for g, part in enumerate(parts):
        assert np.array_equal(part, np.flatnonzero(ds.groups == g))
    assert sum(p.size for p in parts) == len(ds)


def test_natural_fewer_clients_takes_whole_groups(ds) -> None:
    parts = partition_indices(ds, method="natural", num_clients=12, seed=1)
    chosen = []
    for part in parts:
        ids = np.unique(ds.groups[part])
        assert ids.size == 1  # one natural group per client ...
        assert part.size == np.sum(ds.groups == ids[0])  # ... and all of it
        chosen.append(int(ids[0]))
    assert chosen == sorted(set(chosen)) and len(chosen) == 12


def test_natural_choice_matches_across_splits(ds) -> None:
    # A "test split" with the same group ids but different sizes picks the same groups.
    rng = np.random.default_rng(5)
    groups = np.concatenate([np.arange(50), rng.integers(0, 50, 300)])
    test = ArrayDataset(
        np.zeros((groups.size, 1), np.float32), np.zeros(groups.size, np.int64), groups
    )
    train_parts = partition_indices(ds, method="natural", num_clients=7, seed=9)
    test_parts = partition_indices(test, method="natural", num_clients=7, seed=9)
    for a, b in zip(train_parts, test_parts, strict=True):
        assert np.unique(ds.groups[a]).tolist() == np.unique(test.groups[b]).tolist()


def test_natural_too_many_clients(ds) -> None:
    with pytest.raises(DataError, match="num_clients=51 but the dataset has only 50 natural"):
        partition_indices(ds, method="natural", num_clients=51, seed=0)


def test_natural_without_groups() -> None:
    plain = _dataset(num_groups=None)
    with pytest.raises(DataError, match="natural client ids") as err:
        partition_indices(plain, method="natural", num_clients=5, seed=0)
    assert "shakespeare" in str(err.value) and "synthetic" in str(err.value)


def test_unknown_method_lists_allowed(ds) -> None:
    with pytest.raises(DataError) as err:
        partition_indices(ds, method="shards", num_clients=5, seed=0)
    msg = str(err.value)
    assert "'shards'" in msg and "dirichlet" in msg and "iid" in msg and "natural" in msg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_clients": 0}, "num_clients must be >= 1, got 0"),
        ({"num_clients": 2001}, "num_clients=2001 exceeds the 2000 samples"),
        ({"num_clients": 2.5}, "num_clients must be an integer, got 2.5"),
        ({"num_clients": 5, "alpha": 0.0}, "alpha must be a finite number > 0, got 0.0"),
        ({"num_clients": 5, "alpha": -1}, "alpha must be a finite number > 0, got -1"),
        ({"num_clients": 5, "min_size": -1}, "min_size must be >= 0, got -1"),
        ({"num_clients": 5, "seed": -3}, "seed must be >= 0, got -3"),
    ],
)
def test_bad_arguments_named(ds, kwargs, needle) -> None:
    args = {"method": "dirichlet", "seed": 0, **kwargs}
    with pytest.raises(DataError) as err:
        partition_indices(ds, **args)
    assert needle in str(err.value)


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_ten_thousand_clients_partition_every_example_once() -> None:
    # Its speed is measured by benchmarks/scale.py (10,000 clients), not asserted here:
    # a wall-clock bound in a unit test fails on a shared machine.
    big = _dataset(n=60_000, num_groups=None)
    iid = partition_indices(big, method="iid", num_clients=10_000, seed=0)
    # min_size=0: with 6 samples per client on average some clients draw none (at any alpha).
    dirichlet = partition_indices(big, method="dirichlet", num_clients=10_000, seed=0, min_size=0)
    assert len(iid) == len(dirichlet) == 10_000
    assert sum(p.size for p in dirichlet) == 60_000
