"""A data set's arrays written once per machine and memory-mapped by every process of a run.

Without it the server and every Ray worker build the whole data set for themselves (a
10,000-client synthetic population is ~0.5 GiB of features, ~2 GiB while it is generated, in
each process). With it, the first process that needs the data builds it under a file lock
and writes its arrays as ``.npy`` files; every process, that one included, then maps the
files (``np.load(mmap_mode="c")``) and wraps them as tensors without copying, so the pages
live once in the machine's page cache and a process only reads the samples it touches.

Where: ``fedsim.run`` points `CACHE_ENV` at the run directory's ``data_cache`` folder
(`FOLDER`) before Ray starts, so the workers inherit it, and removes the folder when the
run ends (it is also one of the run directory's own folders: ``--overwrite`` and a
killed run's next start clean it). With the variable unset (tests, notebooks, a worker on
another machine of a cluster that lacks the folder) `load_dataset` keeps its per-process
copy. Entries are keyed by the data set's name, seed and loader options, so one run's
folder holds one entry; a run never sees another run's data.

Only bundles whose splits are plain `ArrayDataset` objects are cached; a `TextWindowDataset`
(Shakespeare: a ~10 MB token stream) and a bundle whose ``info`` is not JSON stay per process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.rundir import DATA_CACHE_DIR

#: Environment variable naming the cache folder of the current run (unset: no cache).
CACHE_ENV = "FEDSIM_DATA_CACHE"
#: The cache's folder in a run directory.
FOLDER = DATA_CACHE_DIR
# Bump when the layout of an entry changes.
_FORMAT = 1
_META = "meta.json"


def cache_root() -> Path | None:
    """The folder named by `CACHE_ENV`, or None when caching is off or the folder is absent.

    An absent folder means this process is not on the machine that holds the run directory
    (a cluster's other node): it builds its own copy instead of writing somewhere else.
    """
    value = os.environ.get(CACHE_ENV)
    if not value:
        return None
    root = Path(value)
    return root if root.is_dir() else None


def entry_key(name: str, seed: int, options: tuple[tuple[str, Any], ...]) -> str:
    """The entry's folder name: a hash of what determines the data (name, seed, options)."""
    text = json.dumps([_FORMAT, name, seed, [list(o) for o in options]], default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_bundle(root: Path, key: str, build: Callable[[], DatasetBundle]) -> DatasetBundle:
    """The bundle of entry `key` under `root`, built and written by the first caller.

    Concurrent callers (the server and the workers start together) wait on one lock per
    entry, so the data set is built once. The entry is written to a temporary folder and
    renamed, so a reader never sees half an entry.

    Args:
        root: the cache folder (see `cache_root`).
        key: the entry (see `entry_key`).
        build: builds the bundle when the entry is missing.

    Returns:
        A bundle whose arrays are memory-mapped from the entry's files, or the built bundle
        itself when it cannot be cached (a text-window split, non-JSON info).
    """
    entry = root / key
    if (entry / _META).is_file():
        return _open(entry)
    with _locked(root / f"{key}.lock"):
        if (entry / _META).is_file():  # built by another process while we waited
            return _open(entry)
        bundle = build()
        if not _cacheable(bundle):
            return bundle
        tmp = root / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _write(tmp, bundle)
        os.replace(tmp, entry)
    del bundle  # the built copy goes; this process maps the files like every other
    return _open(entry)


@contextlib.contextmanager
def run_cache(folder: Path) -> Iterator[Path]:
    """Create `folder`, point `CACHE_ENV` at it for this process and its children (Ray's
    processes started inside), and on exit restore the variable and remove the folder."""
    previous = os.environ.get(CACHE_ENV)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
        # Mapped files stay readable for processes that still hold them (POSIX unlink).
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cacheable(bundle: DatasetBundle) -> bool:
    if type(bundle.train) is not ArrayDataset or type(bundle.test) is not ArrayDataset:
        return False
    try:
        json.dumps(bundle.info)
    except (TypeError, ValueError):
        return False
    return True


def _write(folder: Path, bundle: DatasetBundle) -> None:
    folder.mkdir(parents=True)
    splits = {}
    for split in ("train", "test"):
        ds: ArrayDataset = getattr(bundle, split)
        x, y = ds.arrays()
        np.save(folder / f"{split}_x.npy", x)
        np.save(folder / f"{split}_y.npy", y)
        if ds.groups is not None:
            np.save(folder / f"{split}_groups.npy", ds.groups)
        splits[split] = {
            "groups": ds.groups is not None,
            "group_names": None if ds.group_names is None else list(ds.group_names),
        }
    meta = {
        "format": _FORMAT,
        "name": bundle.name,
        "num_classes": bundle.num_classes,
        "input_shape": list(bundle.input_shape),
        "info": bundle.info,
        "splits": splits,
    }
    (folder / _META).write_text(json.dumps(meta))  # last: its presence marks a whole entry


def _open(entry: Path) -> DatasetBundle:
    meta = json.loads((entry / _META).read_text())

    def load(name: str) -> np.ndarray:
        # Copy-on-write: pages are shared until a process writes one, which then becomes
        # private to it (an accidental in-place edit cannot corrupt the others or crash).
        return np.load(entry / name, mmap_mode="c")

    splits = {}
    for split, facts in meta["splits"].items():
        names = facts["group_names"]
        splits[split] = ArrayDataset.shared(
            load(f"{split}_x.npy"),
            load(f"{split}_y.npy"),
            load(f"{split}_groups.npy") if facts["groups"] else None,
            group_names=None if names is None else tuple(names),
        )
    return DatasetBundle(
        name=meta["name"],
        train=splits["train"],
        test=splits["test"],
        num_classes=int(meta["num_classes"]),
        input_shape=tuple(int(s) for s in meta["input_shape"]),
        info=meta["info"],
    )
