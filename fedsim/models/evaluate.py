"""Evaluation of a model on a set of indices (central test set or a client's hold-out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsim.data import ArrayDataset


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ArrayDataset,
    indices: np.ndarray | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> EvalResult:
    """Mean cross-entropy and accuracy of `model` on `dataset[indices]` (all if None)."""
    device = device or torch.device("cpu")
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    if len(idx) == 0:
        return EvalResult(loss=float("nan"), accuracy=float("nan"), num_examples=0)
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(idx), batch_size):
        x, y = dataset.batch(idx[start : start + batch_size])
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    model.train(was_training)
    return EvalResult(loss=loss_sum / len(idx), accuracy=correct / len(idx), num_examples=len(idx))
