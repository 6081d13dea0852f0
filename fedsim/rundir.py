"""The run directory: every file a run leaves behind, written so nothing is lost.

Line files (metrics.jsonl, privacy_ledger.jsonl) are appended and flushed every
round; whole files (summary.json, model.pt) are written to a temporary name and
renamed, so a crash never leaves a half-written file under the real name.
summary.json is written last: it marks a finished run.

A run directory carries a marker file (MARKER), so `--overwrite` replaces only a
directory fedsim created, and removes only fedsim's own files (OWN_FILES,
OWN_FOLDERS). The process that runs or resumes it holds an exclusive lock (LOCK).
A full or read-only disk is a StorageError: the run stays resumable.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fedsim.errors import FedsimError

if TYPE_CHECKING:  # torch is imported where a model is saved: reading a run needs no torch
    import torch

#: Written when fedsim creates a run directory: `--overwrite` only replaces a
#: directory that holds it (and a scenario.toml).
MARKER = ".fedsim-run"
#: Locked (fcntl.flock, exclusive) by the process running or resuming the run; holds its PID.
LOCK = ".fedsim-lock"
#: Per-client facts the audit needs (training shard sizes), written at run start.
CLIENTS_FILE = "clients.json"
#: Every file and folder fedsim writes in a run directory: the only things
#: `--overwrite` removes (with their ".tmp" siblings). Anything else is left alone.
OWN_FILES: tuple[str, ...] = (
    "scenario.toml",
    "metrics.jsonl",
    "privacy_ledger.jsonl",
    "summary.json",
    CLIENTS_FILE,
    "model.pt",
    "empirical_audit.json",
    "errors.log",
    "tracking.json",
    "mlflow.db",
    "report.html",
    MARKER,
)
#: Figures `fedsim report` writes into a single run's directory (one per format);
#: tests/test_rundir.py checks this covers every figure of fedsim.report.figures.
REPORT_FIGURE_STEMS: tuple[str, ...] = (
    "accuracy",
    "loss",
    "epsilon",
    "epsilon_hist",
    "participation",
    "privacy_utility",
)
OWN_FILES += tuple(f"{stem}.{ext}" for stem in REPORT_FIGURE_STEMS for ext in ("png", "svg", "pdf"))
#: fedsim.data.cache's memory-mapped arrays, removed when a run ends; an own folder so that
#: a killed run's leftover goes with --overwrite.
DATA_CACHE_DIR = "data_cache"
OWN_FOLDERS: tuple[str, ...] = ("checkpoints", "plots", "tensorboard", "mlruns", DATA_CACHE_DIR)
#: errno values that mean "the disk cannot take more": the run is resumable once fixed.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class RunDirError(FedsimError, ValueError):
    """The run directory cannot be used (exists, not writable, ...)."""

    bad_input = True


class NotARunError(RunDirError):
    """The directory is not a fedsim run directory (so fedsim will not replace it)."""


class RunDirInUseError(RunDirError):
    """Another process holds the run directory's lock."""


class RunDirCorruptError(RunDirError):
    """A file of the run directory cannot be read back (corrupt line, mismatch)."""


class StorageError(RunDirError):
    """The disk is full or read-only: nothing is lost and the run can be resumed."""


class RunDir:
    """Paths and writers of one run's output directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fh: IO[str] | None = None

    scenario = property(lambda self: self.path / "scenario.toml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    ledger = property(lambda self: self.path / "privacy_ledger.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    clients = property(lambda self: self.path / CLIENTS_FILE)
    model = property(lambda self: self.path / "model.pt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    plots = property(lambda self: self.path / "plots")
    marker = property(lambda self: self.path / MARKER)
    lock_file = property(lambda self: self.path / LOCK)

    def is_run(self) -> bool:
        """Whether the directory holds a fedsim run (its scenario.toml and marker)."""
        return self.scenario.is_file() and self.marker.is_file()

    def complete_summary(self) -> dict[str, Any] | None:
        """The run's summary if the run finished, else None.

        summary.json is written last (after model.pt and the plots), so a readable
        one beside model.pt marks a complete run; anything less can be resumed.
        """
        if not self.model.is_file():
            return None
        try:
            data = json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "rounds" in data else None

    def create(self, *, overwrite: bool = False) -> None:
        """Create the directory and take its lock; refuse a non-empty one unless `overwrite`.

        `overwrite` replaces only a fedsim run (scenario.toml plus the marker file), and
        removes only fedsim's own files in it (OWN_FILES, OWN_FOLDERS).

        Raises:
            RunDirError: it exists with files (and not overwrite), or is not writable.
            NotARunError: overwrite of a directory that is not a fedsim run.
            RunDirInUseError: another process runs or resumes the run there.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                raise RunDirError(
                    f"run directory {self.path} already holds a run; "
                    "choose another --out or pass --overwrite"
                )
            if not self.is_run():
                raise NotARunError(
                    f"--overwrite refused: {self.path} is not a fedsim run directory (it has "
                    f"no scenario.toml and {MARKER}); nothing was deleted. --overwrite only "
                    "replaces a directory fedsim created; choose another --out"
                )
            self.lock()
            self._remove_own_files()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            self.checkpoints.mkdir(exist_ok=True)
            self.plots.mkdir(exist_ok=True)
            self.write_text(self.marker, "a fedsim run directory (fedsim resume, --overwrite)\n")
        except OSError as exc:
            self.unlock()
            raise RunDirError(f"run directory {self.path} is not writable: {exc.strerror}") from exc

    def _remove_own_files(self) -> None:
        for name in OWN_FILES:
            for path in (self.path / name, self.path / f"{name}.tmp"):
                if path.is_file() or path.is_symlink():
                    path.unlink()
        for name in OWN_FOLDERS:
            path = self.path / name
            if path.is_symlink():
                path.unlink()  # never follow a link out of the run directory
            elif path.is_dir():
                shutil.rmtree(path)

    def lock(self) -> None:
        """Take the run's exclusive lock (held until `unlock` or the process ends).

        Raises:
            RunDirInUseError: another process holds it ("DIR is in use by PID N").
            RunDirError: the lock file cannot be created (read-only directory...).
        """
        if self._lock_fh is not None:
            return
        try:
            fh = open(self.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        except OSError as exc:
            raise storage_error(exc, self.path) or RunDirError(
                f"cannot lock the run directory {self.path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunDirInUseError(
                f"{self.path} is in use by PID {holder} (a run or resume of it is going on); "
                "wait for it to end, or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh

    def unlock(self) -> None:
        """Release the lock (the lock file stays: removing it would race a new holder)."""
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing the descriptor releases the flock
            self._lock_fh = None

    def write_text(self, path: Path, text: str) -> None:
        """Write a whole file atomically (temporary name, fsync, rename)."""
        self.write_bytes(path, text.encode("utf-8"))

    def write_bytes(self, path: Path, data: bytes) -> None:
        """Write a whole file atomically; a failed write leaves the old file in place."""
        atomic_write(path, data)

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, json.dumps(clean_json(data), indent=2, allow_nan=False) + "\n")

    def write_clients(self, shard_sizes: Sequence[int]) -> None:
        """Write ``clients.json``: each client's training shard size, by client id.

        The server writes it when a run starts (the sizes are what it plans every
        participation with), so the audit can check the plans from the run directory
        alone, without the data set. See :func:`read_clients`.
        """
        sizes = [int(n) for n in shard_sizes]
        self.write_json(self.clients, {"population": len(sizes), "train_shard_sizes": sizes})

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        self.write_bytes(self.model, torch_bytes({k: v.detach().cpu() for k, v in state.items()}))


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name, fsync, rename: `path` is old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):  # a full disk must not keep a partial .tmp around
            tmp.unlink(missing_ok=True)
        raise


def torch_bytes(obj: Any) -> bytes:
    """`torch.save` into memory: written by Python, a full disk raises OSError(ENOSPC)
    instead of torch's "unexpected pos" RuntimeError."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def storage_error(exc: BaseException, path: Path) -> StorageError | None:
    """A StorageError if `exc` (or what caused it) is a full or read-only disk, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (*_NO_SPACE, errno.EROFS):
            where, free_mb = _device_of(path)
            what = "no space left on" if seen.errno in _NO_SPACE else "read-only file system on"
            return StorageError(
                f"{what} {where} ({free_mb} MB free) while writing "
                f"{seen.filename or path}; the run is resumable: free space (or make it "
                f"writable), then `fedsim resume {path}`"
            )
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Turn a full or read-only disk anywhere inside into a StorageError (exit 2)."""
    try:
        yield
    except RunDirError:
        raise
    except Exception as exc:
        mapped = storage_error(exc, path)
        if mapped is None:
            raise
        raise mapped from exc


def _device_of(path: Path) -> tuple[str, int]:
    """(device and mount point holding `path`, free MB), best effort."""
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
        free_mb = st.f_bavail * st.f_frsize // 2**20
    except OSError:
        free_mb = 0
    mount = probe
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    device = ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 1 and parts[1] == str(mount):
                    device = parts[0]
    except OSError:
        pass
    return (f"{device} (mounted on {mount})" if device else str(mount)), free_mb


class JsonLines:
    """An append-only JSON-lines file, flushed and fsynced on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the run
        if not ends_with_newline(path):
            # A crash can leave the last line without its newline: the next record
            # must not be glued onto it.
            self._fh.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        # Strict JSON: a metric that could not be computed (NaN) is written as null.
        self._fh.write(json.dumps(clean_json(record), allow_nan=False) + "\n")

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()


def ends_with_newline(path: Path) -> bool:
    """True for an empty or missing file, or one whose last byte is a newline."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except FileNotFoundError:
        return True


def clean_json(value: Any) -> Any:
    """Replace NaN/inf floats by None, recursively, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def read_clients(path: Path) -> list[int] | None:
    """The training shard sizes ``clients.json`` (see :meth:`RunDir.write_clients`) holds.

    Returns:
        One size per client id, or None when the file is absent (a run written before
        fedsim wrote it).

    Raises:
        RunDirCorruptError: the file is unreadable, not JSON, or not in this format.
    """
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirCorruptError(f"cannot read {path}: {exc}") from exc
    sizes = data.get("train_shard_sizes") if isinstance(data, dict) else None
    if not isinstance(sizes, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes
    ):
        raise RunDirCorruptError(
            f"{path}: 'train_shard_sizes' must be a list of integers >= 0 (one per client)"
        )
    if data.get("population") != len(sizes):
        raise RunDirCorruptError(
            f"{path}: 'population' = {data.get('population')!r} but "
            f"{len(sizes)} shard sizes are listed"
        )
    return sizes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (raises ValueError naming the bad line)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
    return rows
