"""Synthetic(alpha, beta): the per-device logistic-regression data of the FedProx paper.

Follows the generator of the FedProx repository (data/synthetic_*/generate_synthetic.py),
with numpy's seeded `Generator` instead of the global RNG. For device k:
u_k ~ N(0, alpha^2) and B_k ~ N(0, beta^2) (the repository passes alpha and beta as the
standard deviation; the paper writes N(0, alpha)); W_k (dim x classes) and b_k have entries
~ N(u_k, 1); the feature mean v_k has entries ~ N(B_k, 1); x ~ N(v_k, Sigma) with diagonal
Sigma_jj = j^-1.2 (j = 1..dim); y = argmax(x W_k + b_k) (softmax does not change the argmax).

Device sizes follow the repository's power law ``int(lognormal(4, 2)) + min_samples``, capped
at `MAX_SAMPLES_PER_DEVICE` (1,000). Each device's samples are split into train and test
(at least one of each); the samples are i.i.d. within a device, so the split takes the first
``1 - test_fraction`` as train.

What the parameters control: beta moves each device's feature distribution (larger beta,
more feature skew, and labels concentrate on fewer classes per device). alpha shifts all of a
device's weights and biases by the same u_k, which adds the same amount to every class score,
so in this generator it changes the devices' models but not the labels they produce.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsim.data._checks import check_fraction, check_int, check_positive_float
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

# Cap on samples per device. The lognormal(4, 2) draw has a heavy tail (one device in a thousand
# gets more than e^(4 + 2 * 3.1) ~ 27,000 samples), which would let a handful of devices hold most
# of the data and the memory; 1,000 leaves the power law intact below it (the median device
# has ~104 samples) and bounds any one device.
MAX_SAMPLES_PER_DEVICE = 1000


def _split_device(n: int, test_fraction: float) -> int:
    """Number of test samples for a device with `n` samples: at least one, at most n - 1."""
    return min(max(1, round(n * test_fraction)), n - 1)


def load_synthetic(
    *,
    seed: int,
    num_clients: int,
    alpha: float = 1.0,
    beta: float = 1.0,
    dim: int = 60,
    num_classes: int = 10,
    test_fraction: float = 0.2,
    min_samples: int = 50,
) -> DatasetBundle:
    """Generate Synthetic(alpha, beta) of Li et al. 2020 (FedProx), one device per client.

    How the data are drawn and what alpha and beta control: see the module docstring.

    Args:
        seed: seed for numpy's `default_rng`; same arguments give identical data.
        num_clients: number of devices (>= 1).
        alpha: spread of the device models (>= 0).
        beta: spread of the device feature distributions (>= 0).
        dim: feature dimension (the paper uses 60).
        num_classes: number of classes (the paper uses 10).
        test_fraction: share of each device's samples used for test, 0 < f < 1.
        min_samples: the additive floor of the size power law (the repository's 50), >= 2.

    Returns:
        A `DatasetBundle`; x is float32 (N, dim), ``groups`` is the device id (0..num_clients-1).

    Raises:
        DataError: on an out-of-range argument.
    """
    seed = check_int("seed", seed, minimum=0)
    num_clients = check_int("num_clients", num_clients, minimum=1)
    alpha = check_positive_float("alpha", alpha, allow_zero=True)
    beta = check_positive_float("beta", beta, allow_zero=True)
    dim = check_int("dim", dim, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    test_fraction = check_fraction("test_fraction", test_fraction)
    min_samples = check_int("min_samples", min_samples, minimum=2)
    x, y, device, sizes = _generate(
        np.random.default_rng(seed), num_clients, alpha, beta, dim, num_classes, min_samples
    )
    train, test = _split_devices(x, y, device, sizes, test_fraction)
    info = {
        "clients": num_clients,
        "alpha": alpha,
        "beta": beta,
        "train_samples": len(train),
        "test_samples": len(test),
        "max_samples_per_device": MAX_SAMPLES_PER_DEVICE,
    }
    return DatasetBundle(
        name="synthetic",
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=(dim,),
        info=info,
    )


def _generate(
    rng: np.random.Generator,
    num_clients: int,
    alpha: float,
    beta: float,
    dim: int,
    num_classes: int,
    min_samples: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features (N, dim) float32, labels, device of each sample and device sizes; the
    samples are grouped by device, in device order."""
    if min_samples > MAX_SAMPLES_PER_DEVICE:
        raise DataError(
            f"min_samples must be <= {MAX_SAMPLES_PER_DEVICE} (the per-device cap), "
            f"got {min_samples}"
        )
    sizes = rng.lognormal(4.0, 2.0, num_clients).astype(np.int64) + min_samples
    sizes = np.minimum(sizes, MAX_SAMPLES_PER_DEVICE)
    u = rng.normal(0.0, alpha, num_clients)
    big_b = rng.normal(0.0, beta, num_clients)
    v = rng.normal(big_b[:, None], 1.0, (num_clients, dim))
    std = np.power(np.arange(1, dim + 1, dtype=np.float64), -1.2) ** 0.5

    # Features for all devices at once (samples are grouped by device, in device order).
    device = np.repeat(np.arange(num_clients, dtype=np.int64), sizes)
    w = rng.normal(u[:, None, None], 1.0, (num_clients, dim, num_classes))
    b = rng.normal(u[:, None], 1.0, (num_clients, num_classes))
    # float32 throughout: the dataset is stored as float32 anyway, and this halves peak memory.
    noise = rng.standard_normal((device.size, dim), dtype=np.float32)
    x = v.astype(np.float32)[device] + noise * std.astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    y = np.empty(device.size, dtype=np.int64)
    # One small matmul per device: gathering W per sample would need N * dim * classes floats.
    for k, (s, n) in enumerate(zip(starts, sizes, strict=True)):
        y[s : s + n] = (x[s : s + n] @ w[k] + b[k]).argmax(axis=1)
    return x, y, device, sizes


def _split_devices(
    x: np.ndarray, y: np.ndarray, device: np.ndarray, sizes: np.ndarray, test_fraction: float
) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and test sets: the first ``1 - test_fraction`` of each device's samples train."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    n_test = np.array([_split_device(int(n), test_fraction) for n in sizes], dtype=np.int64)
    # Position of each sample within its device decides its split.
    within = np.arange(device.size) - np.repeat(starts, sizes)
    is_test = within >= np.repeat(sizes - n_test, sizes)

    x32 = torch.from_numpy(x)
    train_idx = np.flatnonzero(~is_test)
    test_idx = np.flatnonzero(is_test)
    train = ArrayDataset(x32[train_idx], y[train_idx], device[train_idx])
    test = ArrayDataset(x32[test_idx], y[test_idx], device[test_idx])
    return train, test
