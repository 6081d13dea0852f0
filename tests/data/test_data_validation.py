"""data.validation_fraction: a seeded, stratified validation split replaces the evaluated split."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from clients.worker import load_scenario_data
from fedsim.config import Scenario, ScenarioError
from fedsim.data import DataError, load_digits
from fedsim.data.validation import with_validation


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def _rows(split) -> torch.Tensor:
    x, _ = split.batch(np.arange(len(split)))
    return x.flatten(1)


def test_validation_rows_come_from_train_and_leave_it(digits) -> None:
    held = with_validation(digits, 0.2, seed=0)
    # 1,437 training images, ~144 per class; ceil(0.2 * n) per class gives 291.
    per_class = np.bincount(digits.train.labels)
    assert len(held.test) == sum(math.ceil(0.2 * n) for n in per_class) == 291
    assert len(held.train) == 1437 - 291
    train, val, original = _rows(held.train), _rows(held.test), _rows(digits.train)
    assert torch.equal(torch.cat([train, val]).sort(0).values, original.sort(0).values)
    # Nothing of the real test split is evaluated any more.
    test = _rows(digits.test)
    assert not any(bool((val == t).all(1).any()) for t in test[:50])
    assert held.info["evaluated_split"] == "validation"
    assert held.info["validation_samples"] == 291


def test_split_is_stratified_and_seeded(digits) -> None:
    a, b = with_validation(digits, 0.2, seed=0), with_validation(digits, 0.2, seed=1)
    counts = np.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 31  # ~144 images per class, 20 % each
    assert np.array_equal(a.test.labels, with_validation(digits, 0.2, seed=0).test.labels)
    assert not torch.equal(_rows(a.test), _rows(b.test))


def test_subset_survives_pickling(digits) -> None:
    held = with_validation(digits, 0.1, seed=3)
    copy = pickle.loads(pickle.dumps(held.train))
    assert torch.equal(_rows(copy), _rows(held.train))
    assert np.array_equal(copy.labels, held.train.labels)


def test_scenario_option_switches_the_evaluated_split() -> None:
    plain = load_scenario_data(Scenario.from_dict({"name": "v", "population": 4}))
    held = load_scenario_data(
        Scenario.from_dict({"name": "v", "population": 4, "data": {"validation_fraction": 0.25}})
    )
    assert len(plain.test) == 360 and len(held.test) == 364
    assert len(held.train) == len(plain.train) - 364


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_bad_fraction_is_refused(bad: float) -> None:
    with pytest.raises(ScenarioError, match="validation_fraction"):
        Scenario.from_dict({"name": "v", "data": {"validation_fraction": bad}})
    if bad >= 1.0:
        with pytest.raises(DataError, match=r"\(0, 1\)"):
            with_validation(load_digits(seed=0), bad, seed=0)
