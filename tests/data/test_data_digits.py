"""The scikit-learn digits loader: real images, shapes, scaling and a seeded stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_load_digits

from fedsim.data import DataError, load_digits
from fedsim.data.digits import PIXEL_MEAN, PIXEL_STD


@pytest.fixture(scope="module")
def bundle():
    return load_digits(seed=0)


def _all(split):
    return split.batch(np.arange(len(split)))


def test_sizes_and_metadata(bundle) -> None:
    assert len(bundle.train) + len(bundle.test) == 1797
    assert (len(bundle.train), len(bundle.test)) == (1437, 360)
    assert bundle.num_classes == 10
    assert bundle.input_shape == (1, 8, 8)
    assert bundle.info["train_samples"] == 1437
    assert bundle.info["test_samples"] == 360
    assert bundle.train.groups is None and bundle.test.groups is None


def test_batch_shapes_dtypes_and_range(bundle) -> None:
    x, y = _all(bundle.train)
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1437,) and y.dtype == torch.int64
    # pixels 0..16 scaled to [0, 1], then standardised with the fixed mean/std
    assert float(x.min()) == pytest.approx(-0.75) and float(x.max()) == pytest.approx(1.75)
    assert set(y.tolist()) == set(range(10))
    assert np.array_equal(bundle.train.labels, y.numpy())


def test_images_are_sklearns_with_their_labels(bundle) -> None:
    raw = sklearn_load_digits()
    truth = {
        img.astype(np.float32).tobytes(): int(t)
        for img, t in zip(raw.images, raw.target, strict=True)
    }
    for split in (bundle.train, bundle.test):
        x, y = _all(split)
        pixels = ((x.numpy()[:, 0] * PIXEL_STD + PIXEL_MEAN) * 16.0).round().astype(np.float32)
        for img, label in zip(pixels[:200], y[:200].tolist(), strict=True):
            assert truth[img.tobytes()] == label


def test_split_is_stratified(bundle) -> None:
    train_counts = np.bincount(bundle.train.labels, minlength=10)
    test_counts = np.bincount(bundle.test.labels, minlength=10)
    share = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(share - 0.2) < 0.01)


def test_same_seed_same_split_other_seed_differs(bundle) -> None:
    again = load_digits(seed=0)
    assert torch.equal(_all(again.test)[0], _all(bundle.test)[0])
    other = load_digits(seed=1)
    assert not torch.equal(_all(other.test)[0], _all(bundle.test)[0])


def test_test_fraction_controls_split() -> None:
    half = load_digits(seed=0, test_fraction=0.5)
    assert len(half.test) == 899 and len(half.train) == 898


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, "0.2"])
def test_bad_test_fraction_is_named(bad) -> None:
    with pytest.raises(DataError, match="test_fraction") as err:
        load_digits(seed=0, test_fraction=bad)
    assert repr(bad) in str(err.value)


def test_negative_seed_rejected() -> None:
    with pytest.raises(DataError, match="seed must be >= 0, got -1"):
        load_digits(seed=-1)
