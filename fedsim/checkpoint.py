"""Checkpoints: everything needed to continue a run from the end of a round.

Every random stream of a run is derived from (seed, purpose, round, client), so no
RNG state needs saving: a checkpoint holds the global weights, the strategy's
mutable state (server optimiser moments, momentum, the adaptive clip norm), the
round and how many ledger and metrics lines belong to it. Files are written under
a temporary name and renamed, and loaded with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

# Attributes of Flower's strategies (and ours) that change from round to round.
_STATE_ATTRS = (
    "current_arrays",
    "m_t",
    "v_t",
    "momentum_vector",
    "clip_norm",
    "c_global",
    "c_clients_flat",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, truncated, other scenario)."""


@dataclass
class Checkpoint:
    round: int
    weights: dict[str, torch.Tensor]
    strategy_state: dict[str, Any]
    ledger_lines: int
    metrics_lines: int
    scenario_hash: str


def scenario_hash(fingerprint: str) -> str:
    """Short stable hash of a resolved scenario (to refuse a foreign checkpoint)."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def strategy_state(strategy: Any) -> dict[str, Any]:
    """The strategy's mutable state as tensors and numbers (safe for weights_only)."""
    out: dict[str, Any] = {}
    targets = [strategy, getattr(strategy, "inner", None)]
    for prefix, obj in zip(("", "inner."), targets, strict=True):
        if obj is None:
            continue
        for attr in _STATE_ATTRS:
            value = getattr(obj, attr, None)
            if value is None:
                continue
            out[prefix + attr] = _encode(value)
    return out


def restore_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Put back what `strategy_state` saved."""
    for key, encoded in state.items():
        obj = strategy
        if key.startswith("inner."):
            obj, key = strategy.inner, key.removeprefix("inner.")
        setattr(obj, key, _decode(encoded))


def _encode(value: Any) -> dict[str, Any]:
    if isinstance(value, ArrayRecord):
        return {
            "kind": "arrayrecord",
            "value": {k: torch.from_numpy(v.numpy().copy()) for k, v in value.items()},
        }
    if isinstance(value, dict):
        return {
            "kind": "ndict",
            "value": {k: torch.from_numpy(np.array(v)) for k, v in value.items()},
        }
    if isinstance(value, list):
        return {"kind": "nlist", "value": [torch.from_numpy(np.array(v)) for v in value]}
    if isinstance(value, int | float):
        return {"kind": "float", "value": float(value)}
    raise TypeError(f"cannot checkpoint strategy state of type {type(value).__name__}")


def _decode(encoded: dict[str, Any]) -> Any:
    kind, value = encoded["kind"], encoded["value"]
    if kind == "arrayrecord":
        return ArrayRecord({k: Array(v.numpy()) for k, v in value.items()})
    if kind == "ndict":
        return {k: v.numpy() for k, v in value.items()}
    if kind == "nlist":
        return [v.numpy() for v in value]
    return float(value)


def save_checkpoint(directory: Path, ckpt: Checkpoint) -> Path:
    """Write `round_NNNNN.pt` and point `latest.json` at it, both atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"round_{ckpt.round:05d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "round": ckpt.round,
            "weights": ckpt.weights,
            "strategy_state": ckpt.strategy_state,
            "ledger_lines": ckpt.ledger_lines,
            "metrics_lines": ckpt.metrics_lines,
            "scenario_hash": ckpt.scenario_hash,
        },
        tmp,
    )
    os.replace(tmp, path)
    latest = directory / "latest.json"
    tmp_latest = latest.with_name("latest.json.tmp")
    tmp_latest.write_text(json.dumps({"round": ckpt.round, "file": path.name}) + "\n")
    os.replace(tmp_latest, latest)
    return path


def load_latest(directory: Path, *, expected_hash: str) -> Checkpoint | None:
    """The newest checkpoint in `directory`, or None if there is none.

    Raises:
        CheckpointError: the checkpoint is corrupt or truncated, or was written by a
            different scenario.
    """
    latest = directory / "latest.json"
    if not latest.exists():
        return None
    try:
        pointer = json.loads(latest.read_text())
        path = directory / str(pointer["file"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{latest}: unreadable checkpoint pointer ({exc})") from exc
    try:
        data = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if data.get("scenario_hash") != expected_hash:
        raise CheckpointError(
            f"{path} was written by a different scenario (hash {data.get('scenario_hash')} "
            f"!= {expected_hash}); the run directory's scenario.toml was changed"
        )
    return Checkpoint(
        round=int(data["round"]),
        weights=data["weights"],
        strategy_state=data["strategy_state"],
        ledger_lines=int(data["ledger_lines"]),
        metrics_lines=int(data["metrics_lines"]),
        scenario_hash=data["scenario_hash"],
    )


def truncate_lines(path: Path, keep: int) -> None:
    """Keep the first `keep` lines of a JSON-lines file (atomically).

    Lines written after the checkpoint belong to rounds that will run again.
    """
    if not path.exists():
        if keep:
            raise CheckpointError(f"{path} is missing but the checkpoint expects {keep} lines")
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) < keep:
        raise CheckpointError(
            f"{path} has {len(lines)} lines but the checkpoint expects at least {keep}"
        )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines[:keep]), encoding="utf-8")
    os.replace(tmp, path)
