"""load_dataset dispatch and caching, and the ArrayDataset containers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import fedsim.data as data
from fedsim.data import (
    DATASETS,
    ArrayDataset,
    DataError,
    DatasetBundle,
    TextWindowDataset,
    load_dataset,
)


def test_public_names_exported() -> None:
    for name in (
        "ArrayDataset",
        "DatasetBundle",
        "load_dataset",
        "partition_indices",
        "DataError",
        "DATASETS",
        "load_digits",
        "load_shakespeare",
        "load_synthetic",
    ):
        assert hasattr(data, name)
    assert {"digits", "shakespeare", "synthetic", "mnist", "cifar10", "femnist"} <= set(DATASETS)


def test_dispatch_and_cache() -> None:
    a = load_dataset("digits", seed=0)
    assert isinstance(a, DatasetBundle) and a.name == "digits"
    assert load_dataset("digits", seed=0) is a  # same process, same bundle
    assert load_dataset("digits", seed=1) is not a
    s1 = load_dataset("synthetic", seed=0, num_clients=5, beta=0.5)
    assert load_dataset("synthetic", seed=0, beta=0.5, num_clients=5) is s1  # option order
    assert s1.info["clients"] == 5


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", seed=0)
    msg = str(err.value)
    assert "'imagenet'" in msg and "digits" in msg and "shakespeare" in msg


def test_unknown_option_lists_allowed() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("digits", seed=0, num_clients=3)
    assert "num_clients" in str(err.value) and "test_fraction" in str(err.value)


def test_loader_errors_pass_through() -> None:
    with pytest.raises(DataError, match="num_clients must be >= 1"):
        load_dataset("synthetic", seed=0, num_clients=0)


def test_array_dataset_batch_accepts_index_kinds() -> None:
    ds = ArrayDataset(
        np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6), np.zeros(6, np.int64)
    )
    for idx in ([4, 1], np.array([4, 1]), torch.tensor([4, 1])):
        x, y = ds.batch(idx)
        assert x.tolist() == [[8.0, 9.0], [2.0, 3.0]] and y.tolist() == [4, 1]
    x, _ = ds.batch(np.array([], dtype=np.int64))
    assert x.shape == (0, 2)
    x[:] = -1  # a batch is a copy ...
    assert ds.batch([0])[0].tolist() == [[0.0, 1.0]]  # ... the stored data is untouched


def test_array_dataset_views_are_read_only() -> None:
    ds = ArrayDataset(np.zeros((3, 1)), np.array([0, 1, 2]), np.array([0, 0, 1]))
    assert ds.labels.dtype == np.int64 and ds.groups.dtype == np.int64
    with pytest.raises(ValueError):
        ds.labels[0] = 5
    with pytest.raises(ValueError):
        ds.groups[0] = 5


def test_array_dataset_rejects_mismatches() -> None:
    with pytest.raises(DataError, match="x has 3 samples but y has 2"):
        ArrayDataset(np.zeros((3, 1)), np.array([0, 1]))
    with pytest.raises(DataError, match="groups has 2 entries but there are 3 samples"):
        ArrayDataset(np.zeros((3, 1)), np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(DataError, match="indices must be integers"):
        ArrayDataset(np.zeros((3, 1)), np.array([0, 1, 2])).batch(np.array([0.5]))


def test_text_window_dataset() -> None:
    text = torch.arange(10, dtype=torch.uint8)
    ds = TextWindowDataset(text, np.array([0, 3, 6]), seq_len=3)
    x, y = ds.batch([2, 0])
    assert x.tolist() == [[6, 7, 8], [0, 1, 2]] and y.tolist() == [9, 3]
    assert ds.labels.tolist() == [3, 6, 9]
    with pytest.raises(DataError, match=r"window starts must lie in \[0, 6\]"):
        TextWindowDataset(text, np.array([7]), seq_len=3)


def test_pickle_round_trip_keeps_data_and_sharing() -> None:
    # Ray ships bundles by pickle; derived views are rebuilt, the text stays one shared copy.
    bundle = load_dataset("shakespeare", seed=0, max_roles=20)
    copy = pickle.loads(pickle.dumps(bundle))
    idx = np.array([0, 7, len(bundle.train) - 1])
    for a, b in zip(bundle.train.batch(idx), copy.train.batch(idx), strict=True):
        assert torch.equal(a, b)
    assert copy.train.text.data_ptr() == copy.test.text.data_ptr()
    assert copy.train.group_names == bundle.train.group_names
    assert np.array_equal(copy.test.labels, bundle.test.labels)
    digits = load_dataset("digits", seed=0)
    again = pickle.loads(pickle.dumps(digits.test))
    assert torch.equal(again.batch([3])[0], digits.test.batch([3])[0])
