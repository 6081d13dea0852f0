"""Hugging Face datasets, online through flwr-datasets or offline from a ``save_to_disk`` copy.

Both routes end in the same conversion, `from_hf_dataset`, which turns an image (or feature
vector) column and a label column into an `ArrayDataset`:

    bundle = load_hub("ylecun/mnist", seed=0)                     # online: FederatedDataset
    bundle = load_hub("mnist", seed=0, root="/data/mnist_hf")      # offline: load_from_disk

A machine without network gets a `DataError` that says so and names the offline route, instead
of a stack trace from the HTTP client. `datasets` and `flwr_datasets` are imported on first use:
they take seconds to import, and most runs never touch the hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data._checks import check_fraction, check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

_MAX_PIXEL = 255.0
# Channel counts that mark the last axis of a decoded image as channels (PIL gives H, W, C).
_CHANNEL_COUNTS = (1, 3, 4)


def _column(ds: Any, key: str) -> np.ndarray:
    """One column as a numpy array (images decoded), or DataError naming the missing column."""
    if key not in ds.column_names:
        raise DataError(f"dataset has no column {key!r}; columns: {', '.join(ds.column_names)}")
    try:
        values = ds.with_format("numpy", columns=[key])[:][key]
    except (TypeError, ValueError) as exc:
        raise DataError(f"column {key!r} cannot be converted to an array: {exc}") from exc
    arr = np.asarray(values)
    if arr.dtype == object and arr.ndim == 1 and arr.size and isinstance(arr[0], np.ndarray):
        # Rows of different shapes (e.g. images of different sizes) come back as an object array.
        shapes = sorted({tuple(a.shape) for a in arr[:1000]})
        raise DataError(f"column {key!r} has rows of different shapes ({shapes[:3]} ...)")
    return arr


def _is_image_column(ds: Any, key: str) -> bool:
    """Whether `key` is a `datasets.Image` column (decoded to (H, W) or (H, W, C))."""
    feature = getattr(ds, "features", {}).get(key)
    return type(feature).__name__ == "Image"


def _features(arr: np.ndarray, key: str, channels_last: bool | None) -> np.ndarray:
    """Convert an image/feature column to float32 (N, C, H, W) or (N, D).

    `channels_last` is True for decoded images (PIL gives H, W, C); None means unknown
    (stored arrays), decided by which axis looks like a channel count.
    """
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32)
        x /= _MAX_PIXEL  # 8-bit pixels -> [0, 1], as the file-based loaders do
    elif np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        x = arr.astype(np.float32)  # already-scaled floats (or counts) are kept as they are
    else:
        raise DataError(f"column {key!r} must hold images or numbers, got dtype {arr.dtype}")
    if x.ndim == 2:  # (N, D) feature vectors
        return x
    if x.ndim == 3:  # (N, H, W) greyscale images
        return x[:, None, :, :]
    if x.ndim == 4:
        if channels_last is None:
            channels_last = x.shape[-1] in _CHANNEL_COUNTS and x.shape[1] not in _CHANNEL_COUNTS
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if channels_last else x
    raise DataError(
        f"column {key!r} has per-sample shape {x.shape[1:]}; allowed: (D,), (H, W), (H, W, C) "
        f"or (C, H, W)"
    )


def _py(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (so str and np.str_ codes agree)."""
    return value.item() if isinstance(value, np.generic) else value


def _encode(
    values: np.ndarray, key: str, vocab: Sequence[Any] | None
) -> tuple[np.ndarray, list[Any] | None]:
    """Integer codes for a label/group column, and the vocabulary used (None for int columns).

    Integers are used as they are; anything else (strings) is coded by its position in
    `vocab`, or in the sorted distinct values when no vocabulary is given.
    """
    if values.ndim != 1:
        raise DataError(f"column {key!r} must hold one value per sample, got shape {values.shape}")
    if vocab is None and np.issubdtype(values.dtype, np.integer):
        if values.size and values.min() < 0:
            raise DataError(f"column {key!r} has negative value {int(values.min())}; need >= 0")
        return values.astype(np.int64), None
    vocab = sorted({_py(v) for v in values}) if vocab is None else list(vocab)
    index = {v: i for i, v in enumerate(vocab)}
    try:
        codes = np.array([index[_py(v)] for v in values], dtype=np.int64)
    except KeyError as exc:
        raise DataError(
            f"column {key!r}: value {exc.args[0]!r} is not in the vocabulary ({len(vocab)} values)"
        ) from exc
    return codes, vocab


def from_hf_dataset(
    ds: Any,
    image_key: str,
    label_key: str,
    group_key: str | None = None,
    *,
    label_vocab: Sequence[Any] | None = None,
    group_vocab: Sequence[Any] | None = None,
) -> ArrayDataset:
    """Convert a Hugging Face `datasets.Dataset` into an `ArrayDataset` (one copy, as tensors).

    Args:
        ds: a `datasets.Dataset` (one split).
        image_key: the feature column: an `Image` column (decoded to arrays) or fixed-size
            arrays/lists. uint8 values are scaled to [0, 1], other numbers kept. Greyscale
            (H, W) becomes (1, H, W); an `Image` column's (H, W, C) becomes (C, H, W); stored
            3-D arrays are taken as (H, W, C) when only the last axis is 1, 3 or 4 long, else
            as (C, H, W); (D,) vectors stay (D,).
        label_key: the label column: integers (e.g. a `ClassLabel`) are used as they are;
            other values (strings) are coded by their position in `label_vocab`, or in the
            sorted distinct values when no vocabulary is given.
        group_key: optional natural-client column (writer, user id), coded like labels via
            `group_vocab`; the vocabulary becomes ``group_names``.
        label_vocab: fixed label vocabulary (pass the same one for train and test).
        group_vocab: fixed group vocabulary (pass the same one for train and test).

    Returns:
        The split as an `ArrayDataset`.

    Raises:
        DataError: for a missing column, ragged images, a non-numeric feature column, or a
            label/group value outside the given vocabulary.
    """
    channels_last = True if _is_image_column(ds, image_key) else None
    x = _features(_column(ds, image_key), image_key, channels_last)
    y, _ = _encode(_column(ds, label_key), label_key, label_vocab)
    groups = names = None
    if group_key is not None:
        groups, used = _encode(_column(ds, group_key), group_key, group_vocab)
        names = None if used is None else tuple(str(g) for g in used)
    return ArrayDataset(x, y, groups, group_names=names)


def _shared_vocab(splits: list[Any], key: str) -> list[Any] | None:
    """One vocabulary for a non-integer column over all splits, so train and test agree on
    the codes (None for integer columns such as a ClassLabel, whose codes are kept)."""
    values: set[Any] = set()
    for split in splits:
        column = _column(split, key)
        if np.issubdtype(column.dtype, np.integer):
            return None
        values.update(_py(v) for v in column)
    return sorted(values)


def _num_classes(splits: list[Any], key: str, labels: list[np.ndarray]) -> int:
    # A ClassLabel knows its class count even when a class is absent from the data.
    feature = splits[0].features.get(key)
    if feature is not None and hasattr(feature, "num_classes"):
        return int(feature.num_classes)
    return int(max(int(y.max()) if y.size else -1 for y in labels)) + 1


def _fetch_online(
    name: str, subset: str | None, train_split: str, test_split: str | None, cache_dir: str | None
) -> tuple[Any, Any | None]:
    """Download (or reuse the HF cache of) a hub dataset through flwr-datasets."""
    from flwr_datasets import FederatedDataset

    kwargs: dict[str, Any] = {} if cache_dir is None else {"cache_dir": cache_dir}
    try:
        # One partition: fedsim partitions the tensors itself; FederatedDataset is used for
        # its download, caching and split handling, exactly as a Flower app would load it.
        fds = FederatedDataset(
            dataset=name, subset=subset, partitioners={train_split: 1}, shuffle=False, **kwargs
        )
        train = fds.load_split(train_split)
        test = None if test_split is None else fds.load_split(test_split)
    except OSError as exc:
        # ConnectionError, HF's OfflineModeIsEnabled, requests' errors and "not found" are
        # all OSErrors.
        raise DataError(
            f"could not load hub dataset {name!r} ({type(exc).__name__}: {exc}). This machine "
            f"may be offline: download it elsewhere, save it with "
            f"datasets.load_dataset({name!r}).save_to_disk(DIR), copy DIR here and give root=DIR"
        ) from exc
    except ValueError as exc:
        raise DataError(f"hub dataset {name!r}: {exc}") from exc
    return train, test


def _load_local(root: str, train_split: str, test_split: str | None) -> tuple[Any, Any | None]:
    """Open a `save_to_disk` copy: a `DatasetDict` (pick the splits) or a single `Dataset`."""
    import datasets

    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"hub: root {str(path)!r} does not exist")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"hub: {path} is not a datasets.save_to_disk directory: {exc}") from exc
    if isinstance(loaded, datasets.Dataset):
        if test_split is not None:
            raise DataError(
                f'hub: {path} holds a single split; set test_split = "" (none) so '
                f"test_fraction splits it, instead of test_split={test_split!r}"
            )
        return loaded, None
    for split in (train_split, test_split):
        if split is not None and split not in loaded:
            raise DataError(f"hub: {path} has no split {split!r}; available: {', '.join(loaded)}")
    return loaded[train_split], None if test_split is None else loaded[test_split]


def _convert_splits(
    train_ds: Any,
    test_ds: Any,
    keys: tuple[str, str, str | None],
    *,
    test_fraction: float,
    seed: int,
) -> tuple[ArrayDataset, ArrayDataset, list[Any] | None, int]:
    """Train and test `ArrayDataset`s of the Hugging Face splits (test held out of train
    when `test_ds` is None), the label vocabulary (None for integer labels) and the
    number of classes. `keys` are the image, label and group columns."""
    image_key, label_key, group_key = keys
    splits = [train_ds] if test_ds is None else [train_ds, test_ds]
    label_vocab = _shared_vocab(splits, label_key)
    group_vocab = None if group_key is None else _shared_vocab(splits, group_key)

    def convert(split: Any) -> ArrayDataset:
        # Shared vocabularies: a string label or writer gets the same code in train and test.
        return from_hf_dataset(
            split, image_key, label_key, group_key, label_vocab=label_vocab, group_vocab=group_vocab
        )

    if test_ds is None:
        train, test = _split(
            convert(train_ds), check_fraction("test_fraction", test_fraction), seed
        )
    else:
        train, test = convert(train_ds), convert(test_ds)
    num_classes = (
        len(label_vocab)
        if label_vocab is not None
        else _num_classes(splits, label_key, [train.labels, test.labels])
    )
    return train, test, label_vocab, num_classes


def _hub_info(
    train: ArrayDataset,
    test: ArrayDataset,
    root: str | None,
    keys: tuple[str, str, str | None],
    label_vocab: list[Any] | None,
) -> dict[str, Any]:
    """The bundle's ``info``: sizes, source, columns and (string labels) the classes."""
    image_key, label_key, group_key = keys
    info: dict[str, Any] = {
        "train_samples": len(train),
        "test_samples": len(test),
        "source": "hub" if root is None else str(root),
        "columns": {"image": image_key, "label": label_key, "group": group_key},
    }
    if label_vocab is not None:
        info["classes"] = [str(v) for v in label_vocab]
    return info


def load_hub(
    name: str,
    *,
    seed: int,
    root: str | None = None,
    subset: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    group_key: str | None = None,
    train_split: str = "train",
    test_split: str | None = "test",
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
) -> DatasetBundle:
    """Load a Hugging Face dataset into a `DatasetBundle`.

    Args:
        name: hub id (``"ylecun/mnist"``, ``"uoft-cs/cifar10"``, ``"flwrlabs/femnist"``); used
            for the download when `root` is None, and as the bundle's name.
        seed: seed of the train/test split when `test_split` is None.
        root: a local directory written by ``save_to_disk`` (a DatasetDict, or one Dataset with
            ``test_split=None``); when given, nothing is downloaded.
        subset: hub configuration name (``load_dataset(name, subset)``), online only.
        image_key: feature column (see `from_hf_dataset`), e.g. "img" for uoft-cs/cifar10.
        label_key: label column, e.g. "character" for flwrlabs/femnist.
        group_key: natural-client column, e.g. "writer_id" for flwrlabs/femnist.
        train_split: split used for training.
        test_split: split used for testing, or None to hold out `test_fraction` of the train
            split (seeded) instead.
        test_fraction: used only when `test_split` is None, 0 < f < 1.
        cache_dir: Hugging Face cache directory for the download.

    Returns:
        A `DatasetBundle` named `name`; ``info`` records the source and columns.

    Raises:
        DataError: when offline or the dataset cannot be fetched (the message names the
            ``save_to_disk`` route), for a missing split or column, or bad values.
    """
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(name, str) or not name:
        raise DataError(f"hub dataset name must be a non-empty string, got {name!r}")
    if root is None:
        train_ds, test_ds = _fetch_online(name, subset, train_split, test_split, cache_dir)
    else:
        train_ds, test_ds = _load_local(root, train_split, test_split)
    keys = (image_key, label_key, group_key)
    train, test, label_vocab, num_classes = _convert_splits(
        train_ds, test_ds, keys, test_fraction=test_fraction, seed=seed
    )
    info = _hub_info(train, test, root, keys, label_vocab)
    x0, _ = train.batch([0]) if len(train) else test.batch([0])
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(x0.shape[1:]),
        info=info,
    )


def _split(
    full: ArrayDataset, test_fraction: float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Seeded random train/test split of one converted split."""
    n = len(full)
    if n < 2:
        raise DataError(f"hub: cannot split {n} sample(s) into train and test")
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    parts = []
    for idx in (np.sort(order[n_test:]), np.sort(order[:n_test])):
        x, y = full.batch(idx)
        groups = None if full.groups is None else full.groups[idx]
        parts.append(ArrayDataset(x, y, groups, group_names=full.group_names))
    return parts[0], parts[1]


def load_hub_dataset(
    *,
    seed: int,
    dataset: str | None = None,
    root: str | None = None,
    subset: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    group_key: str | None = None,
    train_split: str = "train",
    test_split: str | None = "test",
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
) -> DatasetBundle:
    """`load_hub` with keyword-only arguments, as the `load_dataset` registry calls loaders.

    ``load_dataset("hub", seed=0, dataset="ylecun/mnist")`` or, offline,
    ``load_dataset("hub", seed=0, root="/data/mnist_hf")`` (then `dataset` defaults to the
    directory name). TOML has no null, so ``test_split=""`` means None (hold out
    `test_fraction` of the train split) and empty `subset`, `group_key`, `cache_dir` mean
    unset. See `load_hub` for the arguments.

    Raises:
        DataError: if neither `dataset` nor `root` is given, or as `load_hub`.
    """
    if dataset is None:
        if root is None:
            raise DataError(
                "hub needs dataset = a Hugging Face id (online) or root = a save_to_disk "
                "directory (offline)"
            )
        dataset = Path(root).name
    return load_hub(  # "" -> None: a scenario file cannot write null
        dataset,
        seed=seed,
        root=root,
        subset=subset or None,
        image_key=image_key,
        label_key=label_key,
        group_key=group_key or None,
        train_split=train_split,
        test_split=test_split or None,
        test_fraction=test_fraction,
        cache_dir=cache_dir or None,
    )
