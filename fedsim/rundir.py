"""The run directory: every file a run leaves behind, written so nothing is lost.

Line files (metrics.jsonl, privacy_ledger.jsonl) are appended and flushed every
round; whole files (summary.json, model.pt) are written to a temporary name and
renamed, so a crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model is saved: reading a run needs no torch
    import torch


class RunDirError(ValueError):
    """The run directory cannot be used (exists, not writable, ...)."""


class RunDir:
    """Paths and writers of one run's output directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    scenario = property(lambda self: self.path / "scenario.toml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    ledger = property(lambda self: self.path / "privacy_ledger.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    model = property(lambda self: self.path / "model.pt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    plots = property(lambda self: self.path / "plots")

    def create(self, *, overwrite: bool = False) -> None:
        """Create the directory; refuse a non-empty one unless `overwrite`.

        Raises:
            RunDirError: it exists with files (and not overwrite), or is not writable.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                raise RunDirError(
                    f"run directory {self.path} already holds a run; "
                    "choose another --out or pass --overwrite"
                )
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(exist_ok=True)
            self.plots.mkdir(exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"run directory {self.path} is not writable: {exc.strerror}") from exc

    def write_text(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, json.dumps(clean_json(data), indent=2, allow_nan=False) + "\n")

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        import torch

        tmp = self.model.with_name("model.pt.tmp")
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, self.model)


class JsonLines:
    """An append-only JSON-lines file, flushed and fsynced on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the run

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


def clean_json(value: Any) -> Any:
    """Replace NaN/inf floats by None, recursively, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


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
