"""`load_dataset`: a data set by registry name or import path, cached per process (and,
inside a run, memory-mapped once per machine: `fedsim.data.cache`).

The names are entries of `fedsim.registry.DATASETS`. A user loader (registered
with ``@fedsim.register_dataset`` or given as ``"package.module:load"``) is called
as ``load(seed=..., **options)`` and returns a mapping of numpy arrays, which
`bundle_from_arrays` wraps as a `DatasetBundle`.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsim import registry
from fedsim.data import cache
from fedsim.data._checks import check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

#: name -> loader: a read-only view of `fedsim.registry.DATASETS`.
DATASETS: registry.RegistryView = registry.DATASETS.view()

# Bundles are large (shakespeare ~10 MB, synthetic with many devices far more); a few distinct
# (name, seed, options) combinations per process is the expected use.
_CACHE_SIZE = 8
# What a user loader's mapping must hold, and may.
REQUIRED_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("groups_train", "num_classes")


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Reject option names the loader does not take, listing the ones it does."""
    params, open_options = registry.DATASETS.options(name)
    unknown = sorted(set(options) - set(params))
    if unknown and not open_options:
        raise DataError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(params)) or 'none'}"
        )
    for key, value in options.items():
        if not isinstance(value, Hashable):
            raise DataError(f"option {key}={value!r} must be a hashable value (number, string)")


def _build(name: str, seed: int, options: tuple[tuple[str, Any], ...]) -> DatasetBundle:
    entry = registry.DATASETS.resolve(name)
    result = entry.load()(seed=seed, **dict(options))
    if entry.builtin or isinstance(result, DatasetBundle):
        return result
    return bundle_from_arrays(name, result)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(
    name: str, seed: int, options: tuple[tuple[str, Any], ...], root: Path | None
) -> DatasetBundle:
    if root is None:
        return _build(name, seed, options)
    return cache.cached_bundle(
        root, cache.entry_key(name, seed, options), lambda: _build(name, seed, options)
    )


def load_dataset(name: str, *, seed: int, **options: Any) -> DatasetBundle:
    """Load a dataset by registry name or import path, reusing the bundle if this process
    loaded it before.

    Ray workers call this once per process; the cache (keyed by name, seed and the sorted
    options) makes later calls free and means every client in a process shares one copy of the
    data. Inside a run (`fedsim.data.cache.CACHE_ENV` set) the arrays are built once per
    machine and memory-mapped by the server and every worker. Bundles are shared, so treat
    them as read-only.

    Args:
        name: a registered name ("digits", "shakespeare", "synthetic", ...) or an import
            path "package.module:load" of a user loader.
        seed: passed to the loader (split / generation seed).
        **options: the loader's other keyword arguments, e.g. ``num_clients=30`` for synthetic.

    Returns:
        The loader's `DatasetBundle` (a user loader's arrays wrapped as one).

    Raises:
        DataError: for an unknown name (listing the allowed ones), a loader that cannot be
            imported, an option the loader does not take, any argument the loader rejects,
            or a user loader's result that is not the documented mapping.
    """
    try:
        registry.DATASETS.load(name)
    except registry.RegistryError as exc:
        raise DataError(str(exc)) from None
    seed = check_int("seed", seed, minimum=0)  # before the cache, which needs a hashable seed
    _check_options(name, options)
    return _load_cached(name, seed, tuple(sorted(options.items())), cache.cache_root())


def bundle_from_arrays(name: str, data: Any) -> DatasetBundle:
    """Wrap a user loader's mapping of numpy arrays as a `DatasetBundle`.

    Args:
        name: the loader's name or import path (the bundle's name).
        data: ``x_train, y_train, x_test, y_test`` (features of shape (N, *input_shape),
            integer labels of shape (N,)), optionally ``groups_train`` (natural client id
            of each training example) and ``num_classes`` (default: largest label + 1).

    Raises:
        DataError: naming the missing key, the bad shape or the label out of range.
    """
    if not isinstance(data, Mapping):
        raise DataError(
            f"dataset {name!r}: the loader returned {type(data).__name__}; it must return a "
            f"mapping with {', '.join(REQUIRED_ARRAYS)} (and optionally {', '.join(OPTIONAL_KEYS)})"
        )
    missing = [k for k in REQUIRED_ARRAYS if k not in data]
    extra = sorted(set(data) - set(REQUIRED_ARRAYS) - set(OPTIONAL_KEYS))
    if missing or extra:
        raise DataError(
            f"dataset {name!r}: the loader's mapping "
            + (f"lacks {', '.join(missing)}" if missing else f"has unknown key(s) {extra}")
            + f"; expected {', '.join(REQUIRED_ARRAYS)} and optionally {', '.join(OPTIONAL_KEYS)}"
        )
    x_train, x_test = np.asarray(data["x_train"]), np.asarray(data["x_test"])
    if x_train.ndim < 2 or x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"dataset {name!r}: x_train {x_train.shape} and x_test {x_test.shape} must be "
            "(examples, *input_shape) with the same input shape"
        )
    try:
        train = ArrayDataset(x_train, data["y_train"], data.get("groups_train"))
        test = ArrayDataset(x_test, data["y_test"])
    except DataError as exc:
        raise DataError(f"dataset {name!r}: {exc}") from None
    labels = np.concatenate([train.labels, test.labels])
    top = int(labels.max()) + 1 if labels.size else 0
    classes = int(data.get("num_classes", max(top, 2)))
    if labels.size and (labels.min() < 0 or top > classes):
        raise DataError(
            f"dataset {name!r}: labels must lie in [0, num_classes = {classes}), "
            f"got {int(labels.min())}..{top - 1}"
        )
    info: dict[str, Any] = {
        "train_samples": len(train),
        "test_samples": len(test),
        "source": name,
    }
    if train.groups is not None:
        info["clients"] = int(np.unique(train.groups).size)
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        num_classes=classes,
        input_shape=tuple(int(s) for s in x_train.shape[1:]),
        info=info,
    )


def clear_dataset_cache() -> None:
    """Forget cached bundles (frees their memory once no one else holds them)."""
    _load_cached.cache_clear()
