"""MNIST / Fashion-MNIST from IDX files written here in the real format (plain and gzip)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import DataError, load_dataset, read_idx
from fedsim.data.idx import load_fashion_mnist, load_mnist, parse_idx


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> None:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _write_mnist(
    root: Path, *, gz: bool, n_train: int = 5, n_test: int = 3
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 9, 4][:n_train], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 3, 5][:n_test], dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write(root / name, _idx_bytes(arr), gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz=gz)
    bundle = load_mnist(seed=0, root=str(tmp_path))
    assert bundle.name == "mnist" and bundle.num_classes == 10
    assert bundle.input_shape == (1, 28, 28)
    assert len(bundle.train) == 5 and len(bundle.test) == 3
    x, y = bundle.train.batch(np.arange(5))
    assert x.dtype.is_floating_point and tuple(x.shape) == (5, 1, 28, 28)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32) / 255.0
    np.testing.assert_allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-7)
    assert y.tolist() == [0, 1, 2, 9, 4]
    assert bundle.test.labels.tolist() == [7, 3, 5]
    assert bundle.train.groups is None


def test_fashion_mnist_and_torchvision_layout(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    bundle = load_fashion_mnist(seed=0, root=str(tmp_path))
    assert bundle.name == "fashion_mnist" and bundle.info["classes"][9] == "Ankle boot"
    assert len(bundle.train) == 5


def test_registry_passes_root(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    bundle = load_dataset("mnist", seed=0, root=str(tmp_path))
    assert len(bundle.train) == 5


def test_parse_idx_other_dtypes() -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    out = parse_idx(_idx_bytes(arr, 0x0C))
    assert out.dtype == np.int32 and out.dtype.isnative and out.tolist() == arr.tolist()
    floats = np.array([1.5, -2.0], dtype=np.float64)
    assert parse_idx(_idx_bytes(floats, 0x0E)).tolist() == [1.5, -2.0]


def test_bad_magic_names_file(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 12)
    with pytest.raises(DataError, match=r"x-idx3-ubyte: bad IDX magic number 0x12340803"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")  # unknown type code 0x07
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_truncated_and_trailing_files(tmp_path: Path) -> None:
    good = _idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    path = tmp_path / "imgs"
    path.write_bytes(good[:-10])
    with pytest.raises(DataError, match=r"imgs: IDX file truncated.*\(2, 28, 28\)"):
        read_idx(path)
    path.write_bytes(good[:9])  # cut inside the dimension sizes
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)
    path.write_bytes(good + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)
    gz = tmp_path / "imgs.gz"
    gz.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(DataError, match=r"imgs.gz is a damaged or truncated gzip"):
        read_idx(gz)
    fake = tmp_path / "plain.gz"
    fake.write_bytes(good)
    with pytest.raises(DataError, match="not gzip-compressed"):
        read_idx(fake)


def test_missing_file_names_paths(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"test labels.*t10k-labels-idx1-ubyte\[\.gz\]") as err:
        load_mnist(seed=0, root=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_root_required_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="give root"):
        load_mnist(seed=0)
    with pytest.raises(DataError, match="is not a directory"):
        load_mnist(seed=0, root=str(tmp_path / "nope"))


def test_mismatched_counts_and_bad_labels(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.array([1, 2], np.uint8)), False)
    with pytest.raises(DataError, match="has 3 images but .* has 2 labels"):
        load_mnist(seed=0, root=str(tmp_path))
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.array([1, 2, 10], np.uint8)), False)
    with pytest.raises(DataError, match="label 10 out of range"):
        load_mnist(seed=0, root=str(tmp_path))
    _write(
        tmp_path / "t10k-images-idx3-ubyte",
        _idx_bytes(np.zeros((3, 32, 32), np.uint8)),
        False,
    )
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\)"):
        load_mnist(seed=0, root=str(tmp_path))
