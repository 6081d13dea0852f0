"""Name -> loader registry and the per-process cache behind `load_dataset`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable
from typing import Any

from fedsim.data._checks import check_int
from fedsim.data.base import DatasetBundle
from fedsim.data.cifar import load_cifar10
from fedsim.data.digits import load_digits
from fedsim.data.errors import DataError
from fedsim.data.femnist import load_femnist
from fedsim.data.hub import load_hub_dataset
from fedsim.data.idx import load_fashion_mnist, load_mnist
from fedsim.data.mnist1d import load_mnist1d
from fedsim.data.shakespeare import load_shakespeare
from fedsim.data.synthetic import load_synthetic

Loader = Callable[..., DatasetBundle]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "shakespeare": load_shakespeare,
    "synthetic": load_synthetic,
    # Offline-first loaders: read local files under `root` (or generate, for mnist1d).
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "femnist": load_femnist,
    "mnist1d": load_mnist1d,
    # Hugging Face datasets: `dataset=` hub id (online) or `root=` a save_to_disk copy.
    "hub": load_hub_dataset,
}

# Bundles are large (shakespeare ~10 MB, synthetic with many devices far more); a few distinct
# (name, seed, options) combinations per process is the expected use.
_CACHE_SIZE = 8


def _check_options(name: str, loader: Loader, options: dict[str, Any]) -> None:
    """Reject option names the loader does not take, listing the ones it does."""
    params = inspect.signature(loader).parameters
    allowed = sorted(p for p, spec in params.items() if spec.kind is spec.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"dataset {name!r} has no option(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(a for a in allowed if a != 'seed')}"
        )
    for key, value in options.items():
        if not isinstance(value, Hashable):
            raise DataError(f"option {key}={value!r} must be a hashable value (number, string)")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _load_cached(name: str, seed: int, options: tuple[tuple[str, Any], ...]) -> DatasetBundle:
    return DATASETS[name](seed=seed, **dict(options))


def load_dataset(name: str, *, seed: int, **options: Any) -> DatasetBundle:
    """Load a dataset by registry name, reusing the bundle if this process loaded it before.

    Ray workers call this once per process; the cache (keyed by name, seed and the sorted
    options) makes later calls free and means every client in a process shares one copy of the
    data. Bundles are shared, so treat them as read-only.

    Args:
        name: a key of `DATASETS` ("digits", "shakespeare", "synthetic").
        seed: passed to the loader (split / generation seed).
        **options: the loader's other keyword arguments, e.g. ``num_clients=30`` for synthetic.

    Returns:
        The loader's `DatasetBundle`.

    Raises:
        DataError: for an unknown name (listing the allowed ones), an option the loader does not
            take, or any argument the loader rejects.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}")
    seed = check_int("seed", seed, minimum=0)  # before the cache, which needs a hashable seed
    _check_options(name, DATASETS[name], options)
    return _load_cached(name, seed, tuple(sorted(options.items())))


def clear_dataset_cache() -> None:
    """Forget cached bundles (frees their memory once no one else holds them)."""
    _load_cached.cache_clear()
