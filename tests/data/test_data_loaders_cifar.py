"""CIFAR-10 from python batches pickled here the way the archive stores them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import DataError, load_dataset
from fedsim.data.cifar import TEST_BATCH, TRAIN_BATCHES, load_cifar10, read_batch


def _batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img.png"] * n,
    }


def _write_cifar(root: Path, n: int = 4) -> dict[str, dict[bytes, object]]:
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    batches = {name: _batch(n, i) for i, name in enumerate((*TRAIN_BATCHES, TEST_BATCH))}
    for name, batch in batches.items():
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [b"airplane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog",
                             b"horse", b"ship", b"truck"]}  # fmt: skip
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_loads_batches_channel_major(tmp_path: Path) -> None:
    batches = _write_cifar(tmp_path)
    bundle = load_cifar10(seed=0, root=str(tmp_path))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert len(bundle.train) == 20 and len(bundle.test) == 4
    assert bundle.info["classes"][1] == "car"  # read from batches.meta
    x, y = bundle.train.batch(np.arange(4))
    first = batches["data_batch_1"]
    raw = first[b"data"]
    # Row layout: 1024 red values, then green, then blue, each 32x32 in row order.
    np.testing.assert_allclose(x[0, 1, 0, 5].item(), raw[0, 1024 + 5] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(x[2, 2, 31, 31].item(), raw[2, 3071] / 255.0, rtol=1e-6)
    assert y.tolist() == first[b"labels"]
    assert bundle.test.labels.tolist() == batches[TEST_BATCH][b"labels"]


def test_root_may_be_the_batch_directory_and_registry(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    bundle = load_dataset("cifar10", seed=0, root=str(tmp_path / "cifar-10-batches-py"))
    assert len(bundle.train) == 20


def test_missing_batch_names_path(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match=r"missing batch file .*data_batch_3"):
        load_cifar10(seed=0, root=str(tmp_path))
    with pytest.raises(DataError, match="give root"):
        load_cifar10(seed=0)


def test_malformed_batches(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    batch = _batch(4, 0)
    del batch[b"labels"]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"data_batch_1: batch has no 'labels'"):
        read_batch(path)
    batch = _batch(4, 0)
    batch[b"data"] = np.zeros((4, 100), np.uint8)
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        read_batch(path)
    batch = _batch(4, 0)
    batch[b"labels"] = [0, 1, 2]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match="4 images but 'labels'"):
        read_batch(path)
    batch = _batch(4, 0)
    batch[b"labels"] = [0, 1, 2, 10]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=r"labels must be integers in 0..9"):
        read_batch(path)
    path.write_bytes(pickle.dumps(_batch(4, 0))[:-20])  # truncated download
    with pytest.raises(DataError, match="not a readable CIFAR-10 python batch"):
        read_batch(path)


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.getcwd, ())


def test_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"global .*getcwd is not allowed"):
        read_batch(path)
