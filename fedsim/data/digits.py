"""scikit-learn's bundled 8x8 handwritten digits (no download needed)."""

from __future__ import annotations

import numpy as np

from fedsim.data._checks import check_fraction, check_int
from fedsim.data.base import ArrayDataset, DatasetBundle

# Pixel values in the sklearn copy are counts of set pixels in 4x4 blocks of the original 32x32
# bitmaps, so they lie in 0..16.
_MAX_PIXEL = 16.0
# Mean and std of the scaled pixels over all 1,797 images (0.305, 0.381), rounded and
# fixed so train and test are standardised alike without fitting on test data.
# Standardised inputs matter under DP-SGD: with [0, 1] inputs the small CNN spends
# its few clipped, noisy steps just moving off its initial plateau.
PIXEL_MEAN = 0.3
PIXEL_STD = 0.4


def load_digits(*, seed: int, test_fraction: float = 0.2) -> DatasetBundle:
    """Load the 1,797 real 8x8 digit images shipped with scikit-learn.

    Args:
        seed: seed of the stratified train/test split; same seed, same split.
        test_fraction: share of the images, per class, held out for test (0 < f < 1). The test
            split has ``ceil(test_fraction * 1797)`` images (360 at the default 0.2).

    Returns:
        A `DatasetBundle` with x float32 of shape (N, 1, 8, 8), pixels scaled to [0, 1] then
        standardised as (x - PIXEL_MEAN) / PIXEL_STD, ten classes and
        no natural groups (``groups`` is None; partition with "iid" or "dirichlet").

    Raises:
        DataError: if `seed` is not an integer or `test_fraction` is not in (0, 1).
    """
    seed = check_int("seed", seed, minimum=0)
    test_fraction = check_fraction("test_fraction", test_fraction)
    # Imported here: scikit-learn takes about a second to import, and most runs never need it.
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    raw = sklearn_load_digits()
    x = (raw.images.astype(np.float32) / _MAX_PIXEL)[:, None, :, :]
    x = (x - PIXEL_MEAN) / PIXEL_STD
    y = raw.target.astype(np.int64)
    # sklearn wants a 32-bit seed; fold larger seeds instead of failing on them.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed % 2**32
    )
    train = ArrayDataset(x_train, y_train)
    test = ArrayDataset(x_test, y_test)
    info = {"train_samples": len(train), "test_samples": len(test), "source": "sklearn"}
    return DatasetBundle(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        input_shape=(1, 8, 8),
        info=info,
    )
