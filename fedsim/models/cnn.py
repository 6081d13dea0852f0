"""Small configurable image CNN ("cnn") for any (channels, height, width) input.

Architecture: one ``conv3x3(pad 1) -> ReLU -> maxpool 2`` block per entry of ``channels``, then
flatten, an optional hidden ``Linear -> ReLU`` of width ``hidden``, and a ``Linear`` to the
logits. With the defaults (``channels=[16, 32]``, ``hidden=64``):

- 8x8 digits (1, 8, 8), 10 classes: 8 -> 4 -> 2, flatten 32*2*2 = 128, 13,706 parameters;
- 28x28 (1, 28, 28), 10 classes: 28 -> 14 -> 7, flatten 32*7*7 = 1568, 105,866 parameters.

No BatchNorm: Opacus refuses it because it mixes samples within a batch, which breaks
per-sample gradients. Every layer is Conv2d / Linear, so all Opacus grad_sample modes work:
"hooks", "functorch", "ew" (expanded weights) and "ghost" (Linear layers use ghost norms,
Conv2d falls back to fast gradient clipping, i.e. per-sample grads then norms).
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

NAME = "cnn"


class CNN(nn.Module):
    """Conv blocks + optional hidden fully connected layer + classifier.

    Pooling halves each spatial side that is still > 1, and is skipped entirely once the map is
    1x1, so arbitrarily deep ``channels`` lists work on tiny inputs such as 8x8 digits.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        in_ch, h, w = input_shape
        layers: list[nn.Module] = []
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU()]
            # Pool only the sides that can still shrink; a (2, 1) kernel keeps a width of 1
            # from collapsing to 0 on tall thin inputs.
            kh, kw = (2 if h > 1 else 1), (2 if w > 1 else 1)
            if (kh, kw) != (1, 1):
                layers.append(nn.MaxPool2d(kernel_size=(kh, kw)))
                h, w = h // kh, w // kw
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        flat = in_ch * h * w
        head: list[nn.Module] = []
        if hidden > 0:
            head += [nn.Linear(flat, hidden), nn.ReLU()]
            flat = hidden
        head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images to class logits."""
        # x: (batch, channels, h, w)
        x = self.features(x)  # (batch, channels[-1], h', w')
        x = self.flatten(x)  # (batch, channels[-1] * h' * w')
        return self.classifier(x)  # (batch, num_classes)


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> CNN:
    """Build a :class:`CNN` after checking shape and options.

    Args:
        input_shape: (channels, height, width) of one image.
        num_classes: number of output logits.
        channels: output channels of each conv block, e.g. ``[16, 32]``.
        hidden: width of the hidden fully connected layer; 0 means none.
    """
    shape = check_input_shape(NAME, input_shape, ndim=3, hint="(channels, height, width)")
    return CNN(
        (shape[0], shape[1], shape[2]),
        check_num_classes(NAME, num_classes),
        channels=positive_int_list(NAME, "channels", channels),
        hidden=positive_int(NAME, "hidden", hidden, allow_zero=True),
    )
