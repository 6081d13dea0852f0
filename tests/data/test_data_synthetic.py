"""Synthetic(alpha, beta) of the FedProx paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.data import DataError, load_synthetic
from fedsim.data.synthetic import MAX_SAMPLES_PER_DEVICE


def _device_feature_mean_spread(bundle) -> float:
    """Std over devices of each device's mean feature value (feature skew)."""
    x, _ = bundle.train.batch(np.arange(len(bundle.train)))
    groups = bundle.train.groups
    sums = np.zeros(bundle.info["clients"])
    np.add.at(sums, groups, x.numpy().mean(axis=1))
    return float((sums / np.bincount(groups)).std())


def _mean_device_label_entropy(bundle) -> float:
    ds = bundle.train
    entropies = []
    for g in range(bundle.info["clients"]):
        p = np.bincount(ds.labels[ds.groups == g], minlength=bundle.num_classes)
        p = p[p > 0] / p.sum()
        entropies.append(-(p * np.log(p)).sum())
    return float(np.mean(entropies))


def test_shapes_groups_and_sizes() -> None:
    b = load_synthetic(seed=0, num_clients=30)
    x, y = b.train.batch(np.arange(len(b.train)))
    assert x.shape == (len(b.train), 60) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 10
    assert b.input_shape == (60,) and b.num_classes == 10
    assert np.array_equal(np.unique(b.train.groups), np.arange(30))
    assert np.array_equal(np.unique(b.test.groups), np.arange(30))
    sizes = np.bincount(b.train.groups) + np.bincount(b.test.groups)
    assert sizes.min() >= 50 and sizes.max() <= MAX_SAMPLES_PER_DEVICE
    assert b.info["train_samples"] + b.info["test_samples"] == sizes.sum()
    share = np.bincount(b.test.groups) / sizes
    assert np.all(np.abs(share - 0.2) < 0.02)


def test_power_law_sizes() -> None:
    b = load_synthetic(seed=0, num_clients=500)
    sizes = np.bincount(b.train.groups) + np.bincount(b.test.groups)
    # lognormal(4, 2) + 50: median ~ 50 + e^4 = 105; a long tail reaches the cap.
    assert 80 < np.median(sizes) < 140
    assert np.sum(sizes == MAX_SAMPLES_PER_DEVICE) > 10


def test_reproducible_and_seed_sensitive() -> None:
    a = load_synthetic(seed=3, num_clients=10)
    b = load_synthetic(seed=3, num_clients=10)
    c = load_synthetic(seed=4, num_clients=10)
    xa, ya = a.train.batch(np.arange(len(a.train)))
    xb, yb = b.train.batch(np.arange(len(b.train)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(c.train) != len(a.train) or not torch.equal(c.train.batch([0])[0], xa[:1])


def test_beta_controls_feature_and_label_heterogeneity() -> None:
    flat = load_synthetic(seed=1, num_clients=50, alpha=0.0, beta=0.0)
    spread = load_synthetic(seed=1, num_clients=50, alpha=0.0, beta=1.0)
    wide = load_synthetic(seed=1, num_clients=50, alpha=0.0, beta=3.0)
    # Device feature means: only N(B_k, 1) noise at beta=0, scaled-up B_k spread at beta>0.
    assert _device_feature_mean_spread(flat) < 0.25
    assert _device_feature_mean_spread(spread) > 3 * _device_feature_mean_spread(flat)
    assert _device_feature_mean_spread(wide) > 2 * _device_feature_mean_spread(spread)
    # Far-off feature means make one class dominate each device: lower per-device entropy.
    assert _mean_device_label_entropy(wide) < 0.75 * _mean_device_label_entropy(flat)


def test_alpha_does_not_change_labels() -> None:
    # alpha shifts every class score of a device equally (see load_synthetic's docstring).
    small = load_synthetic(seed=2, num_clients=20, alpha=0.0, beta=1.0)
    large = load_synthetic(seed=2, num_clients=20, alpha=5.0, beta=1.0)
    assert np.mean(small.train.labels == large.train.labels) > 0.999


def test_dim_and_classes_options() -> None:
    b = load_synthetic(seed=0, num_clients=3, dim=5, num_classes=3)
    x, y = b.train.batch([0, 1])
    assert x.shape == (2, 5) and b.input_shape == (5,) and b.num_classes == 3
    assert int(b.train.labels.max()) < 3


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_clients": 0}, "num_clients must be >= 1, got 0"),
        ({"num_clients": 5, "alpha": -1.0}, "alpha must be a finite number >= 0, got -1.0"),
        ({"num_clients": 5, "beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"num_clients": 5, "num_classes": 1}, "num_classes must be >= 2, got 1"),
        ({"num_clients": 5, "min_samples": 5000}, "min_samples must be <= 1000"),
    ],
)
def test_bad_arguments_named(kwargs, needle) -> None:
    with pytest.raises(DataError) as err:
        load_synthetic(seed=0, **kwargs)
    assert needle in str(err.value)
