"""FEMNIST from LEAF's JSON files: handwritten characters, one natural client per writer.

LEAF's preprocessing (``preprocess.sh``) writes ``train/*.json`` and ``test/*.json``; each file is

    {"users": ["f0000_14", ...], "num_samples": [n, ...],
     "user_data": {"f0000_14": {"x": [[784 floats], ...], "y": [label, ...]}, ...}}

with 28x28 images flattened row by row (floats in [0, 1]; LEAF stores ink dark on a light
background, i.e. inverted with respect to MNIST, and the values are kept as stored) and 62
classes: digits 0-9, upper-case A-Z (10-35), lower-case a-z (36-61). The same writers appear in
both splits (LEAF splits each writer's samples), so a writer keeps one group id in both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data._checks import check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

NUM_CLASSES = 62
_SIDE = 28
_PIXELS = _SIDE * _SIDE


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("r", encoding="utf-8") as handle:
            obj = json.load(handle)
    except OSError as exc:
        raise DataError(f"cannot read FEMNIST file {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or "users" not in obj or "user_data" not in obj:
        raise DataError(
            f"{path}: not a LEAF file; expected a JSON object with 'users', 'num_samples' and "
            f"'user_data'"
        )
    return obj


def _user_arrays(path: Path, user: str, record: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate one writer's record and return (x float32 (n, 784), y int64 (n,))."""
    if not isinstance(record, dict) or "x" not in record or "y" not in record:
        raise DataError(f"{path}: user_data[{user!r}] must be an object with 'x' and 'y'")
    try:
        x = np.asarray(record["x"], dtype=np.float32)
        y = np.asarray(record["y"])
    except (TypeError, ValueError) as exc:
        # Ragged rows (an image with a missing pixel) end up here.
        raise DataError(f"{path}: user {user!r} has malformed 'x' or 'y': {exc}") from exc
    if x.size == 0 and y.size == 0:
        return np.empty((0, _PIXELS), np.float32), np.empty(0, np.int64)
    if x.ndim != 2 or x.shape[1] != _PIXELS:
        raise DataError(
            f"{path}: user {user!r}: each 'x' row must hold {_PIXELS} pixel values, got shape "
            f"{x.shape}"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{path}: user {user!r} has {x.shape[0]} images but {y.size} labels in 'y'")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise DataError(f"{path}: user {user!r}: labels must be integers in 0..{NUM_CLASSES - 1}")
    return x, y.astype(np.int64)


def read_leaf_split(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every ``*.json`` file of one LEAF split directory.

    Args:
        directory: a ``train`` or ``test`` directory.

    Returns:
        writer id -> (x float32 (n, 784), y int64 (n,)); a writer found in several files has
        their samples concatenated in file-name order.

    Raises:
        DataError: if the directory holds no JSON file, or a file is not a valid LEAF file
            (the message names the file and, where it applies, the writer).
    """
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DataError(f"femnist: no *.json files in {directory}")
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in files:
        obj = _read_json(path)
        users, user_data = obj["users"], obj["user_data"]
        if not isinstance(users, list) or not isinstance(user_data, dict):
            raise DataError(f"{path}: 'users' must be a list and 'user_data' an object")
        counts = obj.get("num_samples")
        if counts is not None and (not isinstance(counts, list) or len(counts) != len(users)):
            raise DataError(f"{path}: 'num_samples' must list one count per user")
        for i, user in enumerate(users):
            if user not in user_data:
                raise DataError(f"{path}: user {user!r} is listed in 'users' but has no user_data")
            x, y = _user_arrays(path, str(user), user_data[user])
            if counts is not None and counts[i] != y.size:
                raise DataError(
                    f"{path}: user {user!r}: num_samples says {counts[i]} but there are "
                    f"{y.size} samples"
                )
            out.setdefault(str(user), []).append((x, y))
    return {
        user: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        for user, parts in out.items()
    }


def _to_dataset(
    split: dict[str, tuple[np.ndarray, np.ndarray]],
    writer_id: dict[str, int],
    names: tuple[str, ...],
) -> ArrayDataset:
    users = sorted(split)
    x = np.concatenate([split[u][0] for u in users]).reshape(-1, 1, _SIDE, _SIDE)
    y = np.concatenate([split[u][1] for u in users])
    groups = np.repeat(
        np.array([writer_id[u] for u in users], dtype=np.int64),
        [split[u][1].size for u in users],
    )
    return ArrayDataset(x, y, groups, group_names=names)


def locate_femnist(root: str | None) -> Path:
    """The LEAF data directory (with train/ and test/); DataError if one is missing.

    Cheap (no file is read): scenario validation calls it before anything starts.
    """
    if root is None:
        raise DataError(
            "femnist is read from LEAF's JSON files; give root = the directory holding "
            "train/*.json and test/*.json"
        )
    base = Path(root).expanduser()
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise DataError(
                f"femnist: missing directory {base / split} (expected LEAF's {split}/*.json)"
            )
    return base


def load_femnist(*, seed: int, root: str | None = None) -> DatasetBundle:
    """Load LEAF's FEMNIST (handwritten digits and letters by ~3,500 writers) from JSON files.

    Args:
        seed: accepted for the registry's uniform call; LEAF has already split the data.
        root: directory with ``train/*.json`` and ``test/*.json`` as LEAF's preprocessing
            writes them (``leaf/data/femnist/data``).

    Returns:
        A `DatasetBundle`; x float32 (N, 1, 28, 28), 62 classes, ``groups`` the writer id
        (``group_names[g]`` is LEAF's writer name; ids follow the sorted writer names of both
        splits together, so one writer has the same id in train and test). Partition with
        "natural" for one client per writer.

    Raises:
        DataError: if `root` is missing, a split directory or its JSON files are missing, or
            a file is malformed (the message names the file and writer).
    """
    check_int("seed", seed, minimum=0)
    base = locate_femnist(root)
    train_raw = read_leaf_split(base / "train")
    test_raw = read_leaf_split(base / "test")
    names = tuple(sorted(set(train_raw) | set(test_raw)))
    writer_id = {name: i for i, name in enumerate(names)}
    train = _to_dataset(train_raw, writer_id, names)
    test = _to_dataset(test_raw, writer_id, names)
    info = {
        "writers": len(names),
        "train_writers": len(train_raw),
        "test_writers": len(test_raw),
        "train_samples": len(train),
        "test_samples": len(test),
        "source": str(base),
    }
    return DatasetBundle(
        name="femnist",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        input_shape=(1, _SIDE, _SIDE),
        info=info,
    )
