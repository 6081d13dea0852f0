"""A user's numpy loader, by import path: wrapped as a dataset, checked, cached."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsim.data import DataError, load_dataset, partition_indices
from fedsim.data.registry import bundle_from_arrays
from tests.fixtures.data import load_blobs

BLOBS = "tests.fixtures.data:load_blobs"


def test_a_loader_by_path_becomes_a_bundle() -> None:
    bundle = load_dataset(BLOBS, seed=0, examples=500, dim=3)
    assert bundle.name == BLOBS and bundle.input_shape == (3,) and bundle.num_classes == 4
    assert (len(bundle.train), len(bundle.test)) == (400, 100)
    assert bundle.train.groups is None
    raw = load_blobs(seed=0, examples=500, dim=3)
    x, y = bundle.train.batch([0, 7])
    np.testing.assert_array_equal(x.numpy(), raw["x_train"][[0, 7]])
    assert y.tolist() == raw["y_train"][[0, 7]].tolist()
    assert load_dataset(BLOBS, seed=0, dim=3, examples=500) is bundle  # cached like built-ins


def test_natural_ids_from_groups_train_partition_naturally() -> None:
    bundle = load_dataset(BLOBS, seed=0, examples=500, groups=5)
    assert bundle.info["clients"] == 5
    parts = partition_indices(bundle.train, method="natural", num_clients=5, seed=0)
    assert [len(p) for p in parts] == [80] * 5


def test_loader_options_are_checked_against_its_signature() -> None:
    with pytest.raises(DataError) as info:
        load_dataset(BLOBS, seed=0, exampels=10)
    assert "exampels" in str(info.value) and "examples" in str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "returned list; it must return a mapping with x_train"),
        ({"x_train": np.zeros((2, 1))}, "lacks y_train, x_test, y_test"),
        (
            {"x_train": np.zeros((2, 1)), "y_train": [0, 1], "x_test": np.zeros((1, 2)),
             "y_test": [0]},
            r"x_train \(2, 1\) and x_test \(1, 2\)",
        ),
        (
            {"x_train": np.zeros((2, 1)), "y_train": [0, 5], "x_test": np.zeros((1, 1)),
             "y_test": [0], "num_classes": 3},
            r"labels must lie in \[0, num_classes = 3\), got 0..5",
        ),
        (
            {"x_train": np.zeros((2, 1)), "y_train": [0], "x_test": np.zeros((1, 1)),
             "y_test": [0]},
            "x has 2 samples but y has 1",
        ),
        (
            {"x_train": np.zeros((2, 1)), "y_train": [0, 1], "x_test": np.zeros((1, 1)),
             "y_test": [0], "labels": [1]},
            r"unknown key\(s\) \['labels'\]",
        ),
    ],
)  # fmt: skip
def test_a_bad_mapping_is_named(data: Any, expected: str) -> None:
    with pytest.raises(DataError, match=expected) as info:
        bundle_from_arrays("mine", data)
    assert "dataset 'mine'" in str(info.value)


def test_a_loader_breaking_the_contract_fails_when_loaded() -> None:
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_dataset("tests.fixtures.data:load_wrong", seed=0)
