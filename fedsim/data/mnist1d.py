"""MNIST-1D (Greydanus & Kobak, 2020): 1-D digit signals of length 40, generated locally.

The `mnist1d` package builds the data from ten 1-D templates with random padding, scaling,
translation, correlated and i.i.d. noise and shear (`mnist1d.data.make_dataset`), so nothing is
downloaded. Its published ``mnist1d_data.pkl`` is this generator with seed 42, 5,000 samples and
an 80/20 split, i.e. ``load_mnist1d(seed=42)`` with the defaults here.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from fedsim.data._checks import check_fraction, check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

_NUM_CLASSES = 10
# The generator seeds numpy's legacy global RNG, which takes 32-bit seeds only.
_SEED_MODULUS = 2**32


def load_mnist1d(
    *, seed: int, num_samples: int = 5000, test_fraction: float = 0.2
) -> DatasetBundle:
    """Generate MNIST-1D with the `mnist1d` package.

    Args:
        seed: the generator's seed (folded to 32 bits); same arguments, same data.
        num_samples: total samples before the split, >= 20; the generator makes
            ``num_samples // 10`` per class, so the total is rounded down to a multiple of 10.
        test_fraction: share of the (shuffled) samples held out for test, 0 < f < 1.

    Returns:
        A `DatasetBundle`; x float32 (N, 1, 40) (one channel, for a 1-D CNN), standardised over
        the whole dataset as the package does; ten classes; no groups.

    Raises:
        DataError: on an out-of-range argument, or if the `mnist1d` package is not installed.
    """
    seed = check_int("seed", seed, minimum=0)
    num_samples = check_int("num_samples", num_samples, minimum=2 * _NUM_CLASSES)
    test_fraction = check_fraction("test_fraction", test_fraction)
    raw = _generate(seed=seed, num_samples=num_samples, test_fraction=test_fraction)
    n_train, n_test = len(raw["y"]), len(raw["y_test"])
    if n_train == 0 or n_test == 0:
        raise DataError(
            f"mnist1d: num_samples={num_samples} with test_fraction={test_fraction} leaves "
            f"{n_train} train and {n_test} test samples; both must be >= 1"
        )
    train = ArrayDataset(np.asarray(raw["x"], np.float32)[:, None, :], raw["y"])
    test = ArrayDataset(np.asarray(raw["x_test"], np.float32)[:, None, :], raw["y_test"])
    length = int(train.batch([0])[0].shape[-1])
    info = {
        "train_samples": len(train),
        "test_samples": len(test),
        "source": "mnist1d.make_dataset",
        "sequence_length": length,
    }
    return DatasetBundle(
        name="mnist1d",
        train=train,
        test=test,
        num_classes=_NUM_CLASSES,
        input_shape=(1, length),
        info=info,
    )


def _generate(*, seed: int, num_samples: int, test_fraction: float) -> dict[str, Any]:
    """The raw arrays of `mnist1d.make_dataset`, leaving the global RNGs as they were."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DataError(
            "mnist1d needs the 'mnist1d' package (pip install mnist1d); it generates the data "
            f"locally, no download ({exc})"
        ) from exc

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0 - test_fraction
    args.seed = seed % _SEED_MODULUS
    # make_dataset reseeds numpy's and Python's global RNGs; restore them so loading data does
    # not change the random stream of anything else running in this process.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw: dict[str, Any] = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return raw
