"""CIFAR-10 from the local "python version" batches (``cifar-10-batches-py``).

The archive holds five training batches (``data_batch_1`` .. ``data_batch_5``, 10,000 images
each), ``test_batch`` and ``batches.meta``, each a pickled dict with byte-string keys:
``b"data"`` a uint8 array (N, 3072) of 32x32 images stored channel-major (1024 red, 1024 green,
1024 blue values, rows in order), and ``b"labels"`` a list of N ints in 0..9.

Pickle can run arbitrary code, so the batches are read with an unpickler that only builds
numpy arrays and plain Python containers; anything else in the file is rejected.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data._checks import check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
SUBDIR = "cifar-10-batches-py"

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_NUM_CLASSES = 10
_SIDE = 32
_CHANNELS = 3
_MAX_PIXEL = 255.0

# The only globals a CIFAR batch needs: numpy's array reconstruction (under its numpy 1 and
# numpy 2 module names), dtype, and _codecs.encode (how Python 3 writes bytes in protocol 2).
# Everything else (lists, dicts, bytes) is built-in pickle data.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol 5 pickles
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals CIFAR batches use."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # Files written with numpy 1 name numpy.core, which numpy 2 keeps only as a
            # deprecated alias; resolve to the real module instead.
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[Any, Any]:
    """Load one batch file into its dict (with bytes keys), or raise DataError naming it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc.strerror or exc}") from exc
    try:
        # encoding="bytes": the batches were pickled by Python 2, whose str keys arrive as bytes.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure (truncation, bad opcode) is a bad file
        raise DataError(f"{path} is not a readable CIFAR-10 python batch: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _get(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """Fetch ``batch[b"key"]`` (or a str key, as re-pickled copies have), else DataError."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    keys = ", ".join(repr(k) for k in batch)
    raise DataError(f"{path}: batch has no {key!r} entry (keys: {keys})")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Args:
        path: a ``data_batch_*`` or ``test_batch`` file.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,).

    Raises:
        DataError: if the file is missing or unreadable, lacks ``data``/``labels``, has the
            wrong image size, a label count that differs from the image count, or a label
            outside 0..9. The message names the file.
    """
    path = Path(path)
    batch = _unpickle(path)
    data = np.asarray(_get(batch, "data", path))
    labels = np.asarray(_get(batch, "labels", path))
    row = _CHANNELS * _SIDE * _SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise DataError(
            f"{path}: 'data' must be uint8 of shape (N, {row}), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(
            f"{path}: {data.shape[0]} images but 'labels' has shape {labels.shape}; expected "
            f"({data.shape[0]},)"
        )
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() >= _NUM_CLASSES
    ):
        raise DataError(f"{path}: labels must be integers in 0..{_NUM_CLASSES - 1}")
    return data.reshape(-1, _CHANNELS, _SIDE, _SIDE), labels.astype(np.int64)


def _to_dataset(batches: list[tuple[np.ndarray, np.ndarray]]) -> ArrayDataset:
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    x = images.astype(np.float32)
    x /= _MAX_PIXEL  # in place: one float32 copy of the data, not two
    return ArrayDataset(x, labels)


def _class_names(directory: Path) -> list[str]:
    """Label names from ``batches.meta`` when present (falls back to the standard names)."""
    path = directory / META_FILE
    if not path.is_file():
        return list(CIFAR10_CLASSES)
    names = _get(_unpickle(path), "label_names", path)
    out = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(out) != _NUM_CLASSES:
        raise DataError(f"{path}: expected {_NUM_CLASSES} label names, got {len(out)}")
    return out


def locate_cifar10(root: str | None) -> Path:
    """The directory holding the six batch files; DataError if it or a file is missing.

    Cheap (no file is read): scenario validation calls it before anything starts.
    """
    if root is None:
        raise DataError(
            "cifar10 is read from local files; give root = the directory holding "
            "cifar-10-batches-py/ (data_batch_1..5, test_batch)"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"cifar10: root {str(base)!r} is not a directory")
    directory = base / SUBDIR if (base / SUBDIR).is_dir() else base
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        if not (directory / name).is_file():
            raise DataError(
                f"cifar10: missing batch file {directory / name}; expected "
                f"{', '.join(TRAIN_BATCHES)} and {TEST_BATCH} in {directory}"
            )
    return directory


def load_cifar10(*, seed: int, root: str | None = None) -> DatasetBundle:
    """Load CIFAR-10 (50,000 train / 10,000 test 32x32 colour images) from local files.

    The data takes about 740 MB as float32 (the format the models train on).

    Args:
        seed: accepted for the registry's uniform call; CIFAR-10 has a fixed split.
        root: directory holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``,
            either directly or in a ``cifar-10-batches-py`` subdirectory (as the archive
            unpacks).

    Returns:
        A `DatasetBundle`; x float32 (N, 3, 32, 32) in [0, 1], ten classes (names in
        ``info["classes"]``), no groups.

    Raises:
        DataError: if `root` is missing, a batch file is missing (the message names the path),
            or a batch is malformed (see `read_batch`).
    """
    check_int("seed", seed, minimum=0)
    directory = locate_cifar10(root)
    train = _to_dataset([read_batch(directory / name) for name in TRAIN_BATCHES])
    test = _to_dataset([read_batch(directory / TEST_BATCH)])
    info = {
        "train_samples": len(train),
        "test_samples": len(test),
        "source": str(directory),
        "classes": _class_names(directory),
    }
    return DatasetBundle(
        name="cifar10",
        train=train,
        test=test,
        num_classes=_NUM_CLASSES,
        input_shape=(_CHANNELS, _SIDE, _SIDE),
        info=info,
    )
