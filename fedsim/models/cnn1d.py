"""A 1-D CNN ("cnn1d") for sequence-shaped float inputs such as MNIST-1D (1, 40).

Conv1d(k=5, pad 2) -> ReLU -> MaxPool(2) per entry of `channels` (pooling stops once
the length is 1), then an optional hidden layer and the class logits. No BatchNorm,
so Opacus can train it privately (Conv1d and Linear have per-sample gradient hooks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedsim.models._checks import (
    check_input_shape,
    check_num_classes,
    positive_int,
    positive_int_list,
)

NAME = "cnn1d"


class CNN1d(nn.Module):
    """Conv1d blocks, then fully connected layers."""

    def __init__(
        self, input_shape: tuple[int, int], num_classes: int, *, channels: list[int], hidden: int
    ) -> None:
        super().__init__()
        in_ch, length = input_shape
        layers: list[nn.Module] = []
        for out_ch in channels:
            layers += [nn.Conv1d(in_ch, out_ch, kernel_size=5, padding=2), nn.ReLU()]
            if length > 1:
                layers.append(nn.MaxPool1d(2))
                length //= 2
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        flat = in_ch * length
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            head.append(nn.Linear(flat, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (batch, channels, length) inputs to class logits."""
        return self.head(self.features(x))  # (batch, num_classes)


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> CNN1d:
    """Build a :class:`CNN1d` for inputs of shape (channels, length)."""
    shape = check_input_shape(NAME, input_shape, ndim=2, hint="(channels, length)")
    return CNN1d(
        (shape[0], shape[1]),
        check_num_classes(NAME, num_classes),
        channels=positive_int_list(NAME, "channels", channels),
        hidden=positive_int(NAME, "hidden", hidden, allow_zero=True),
    )
