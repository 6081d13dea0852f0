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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedsim.privacy.ledger import DISCARDED, LedgerError, parse_ledger_line
from fedsim.rundir import RunDirError, atomic_write, torch_bytes

# Attributes of Flower's strategies (and ours) that change from round to round.
_STATE_ATTRS = (
    "current_arrays",
    "m_t",
    "v_t",
    "momentum_vector",
    "clip_norm",
    "c_global",
    "c_clients_flat",
    "h_server",
    "grad_clients_flat",
)


class CheckpointError(RunDirError):
    """A checkpoint that cannot be used (corrupt, truncated, other scenario), or run
    files that do not match it."""


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
    data = {
        "round": ckpt.round,
        "weights": ckpt.weights,
        "strategy_state": ckpt.strategy_state,
        "ledger_lines": ckpt.ledger_lines,
        "metrics_lines": ckpt.metrics_lines,
        "scenario_hash": ckpt.scenario_hash,
    }
    atomic_write(path, torch_bytes(data))
    pointer = json.dumps({"round": ckpt.round, "file": path.name}) + "\n"
    atomic_write(directory / "latest.json", pointer.encode())
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
    kept, _ = _split_lines(path, keep)
    atomic_write(path, "".join(kept).encode("utf-8"))


@dataclass(frozen=True)
class ResumePlan:
    """What resuming a run directory will do, checked before anything is changed.

    Attributes:
        checkpoint: The checkpoint to continue from (None: start again at round 1).
        metrics: The metrics file's new content (the lines up to the checkpoint).
        ledger: The ledger's new content, or None when the run has no ledger file.
        discarded: Ledger lines after the checkpoint kept with status "discarded"
            (secure_rng: the killed attempt's releases used fresh noise and stay charged).
        dropped: Ledger lines after the checkpoint dropped (seeded noise: the rounds run
            again with the very same releases).
    """

    checkpoint: Checkpoint | None
    metrics: bytes
    ledger: bytes | None
    discarded: int
    dropped: int


def plan_resume(
    metrics: Path, ledger: Path, checkpoints: Path, *, expected_hash: str, fresh_noise: bool
) -> ResumePlan:
    """Check a run directory's checkpoint, metrics and ledger; change nothing.

    Raises:
        CheckpointError: a corrupt checkpoint, one from another scenario, or files
            that do not match it (fewer lines, other rounds, a corrupt line).
    """
    ckpt = load_latest(checkpoints, expected_hash=expected_hash)
    last_round = ckpt.round if ckpt is not None else 0
    kept, _ = _split_lines(metrics, ckpt.metrics_lines if ckpt else 0)
    rows = [_json_line(metrics, n, text) for n, text in enumerate(kept, start=1)]
    if rows and rows[-1].get("round") != last_round:
        raise CheckpointError(
            f"{metrics}: line {len(rows)} is round {rows[-1].get('round')!r} but the "
            f"checkpoint is of round {last_round}; the files do not belong together"
        )
    if not ledger.exists():
        if ckpt is not None and ckpt.ledger_lines:
            raise CheckpointError(
                f"{ledger} is missing but the checkpoint expects {ckpt.ledger_lines} lines"
            )
        return ResumePlan(ckpt, "".join(kept).encode(), None, 0, 0)
    keep, after = _split_lines(ledger, ckpt.ledger_lines if ckpt else 0)
    for n, text in enumerate(keep, start=1):
        record = _ledger_line(ledger, n, text)
        if int(record["round"]) > last_round:
            raise CheckpointError(
                f"{ledger}, line {n}: round {record['round']} is after the checkpoint's "
                f"round {last_round}; the files do not belong together"
            )
    discarded = _discarded(ledger, after, first=len(keep) + 1) if fresh_noise else []
    return ResumePlan(
        ckpt,
        "".join(kept).encode(),
        "".join(keep + discarded).encode(),
        len(discarded),
        len(after) - len(discarded),
    )


def _discarded(ledger: Path, lines: list[str], *, first: int) -> list[str]:
    """The killed attempt's ledger lines, marked "discarded" (still composed)."""
    out = []
    for n, text in enumerate(lines, start=first):
        if n == first + len(lines) - 1 and not text.endswith("\n"):
            # Torn by the kill mid-write: the line never was a complete record.
            try:
                json.loads(text)
            except ValueError:
                continue
        record = _ledger_line(ledger, n, text)
        record["status"] = DISCARDED
        out.append(json.dumps(record) + "\n")
    return out


def _split_lines(path: Path, keep: int) -> tuple[list[str], list[str]]:
    """(first `keep` lines, each ending in a newline; the lines after them)."""
    if not path.exists():
        if keep:
            raise CheckpointError(f"{path} is missing but the checkpoint expects {keep} lines")
        return [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read it back ({exc})") from exc
    if len(lines) < keep:
        raise CheckpointError(
            f"{path} has {len(lines)} lines but the checkpoint expects at least {keep}"
        )
    # A kept line without its newline (torn at the end) gets it back: the next
    # record must start on a line of its own.
    kept = [line if line.endswith("\n") else line + "\n" for line in lines[:keep]]
    return kept, lines[keep:]


def _json_line(path: Path, n: int, text: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}, line {n}: not valid JSON (corrupt line?): {exc}") from exc
    if not isinstance(row, dict):
        raise CheckpointError(f"{path}, line {n}: expected a JSON object")
    return row


def _ledger_line(path: Path, n: int, text: str) -> dict[str, Any]:
    try:
        return parse_ledger_line(text, path=path, line_no=n)
    except LedgerError as exc:
        raise CheckpointError(f"corrupt privacy ledger: {exc}") from exc
