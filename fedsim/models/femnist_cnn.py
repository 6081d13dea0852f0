"""LEAF's FEMNIST CNN ("femnist_cnn"), as in LEAF ``models/femnist/cnn.py``.

Architecture for a (1, 28, 28) input::

    conv 5x5, 32, 'same' -> ReLU -> maxpool 2    # (batch, 32, 14, 14)
    conv 5x5, 64, 'same' -> ReLU -> maxpool 2    # (batch, 64, 7, 7)
    flatten -> dense 2048 -> ReLU                # (batch, 2048)
    dense num_classes                            # (batch, num_classes)

Parameter count for 62 classes (FEMNIST digits + upper + lower case letters)::

    conv1  5*5*1*32 + 32        =       832
    conv2  5*5*32*64 + 64       =    51,264
    fc1    (64*7*7)*2048 + 2048 = 6,424,576
    fc2    2048*62 + 62         =   127,038
    total                       = 6,603,710   (~6.6M)

Other (C, H, W) inputs work: the flatten size is 64 * (H // 4) * (W // 4), so H and W must be
at least 4. Opacus grad_sample modes: "hooks", "functorch", "ew" and "ghost" all work (Conv2d
and Linear only). The 6.4M-weight fc1 dominates per-sample gradient memory in "hooks" mode
(batch * 6.4M floats), which is where "ghost" helps: its Linear norms need no per-sample grads.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.models._checks import ModelError, check_input_shape, check_num_classes

NAME = "femnist_cnn"


class FemnistCNN(nn.Module):
    """Two 5x5 'same' conv + pool blocks, a 2048-wide hidden layer, and a classifier."""

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 62):
        super().__init__()
        in_ch, h, w = input_shape
        # padding=2 is TensorFlow's 'same' for a 5x5 kernel at stride 1.
        self.conv1 = nn.Conv2d(in_ch, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * (h // 4) * (w // 4), 2048)
        self.fc2 = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images to class logits."""
        # x: (batch, channels, h, w)
        x = self.pool(self.relu(self.conv1(x)))  # (batch, 32, h/2, w/2)
        x = self.pool(self.relu(self.conv2(x)))  # (batch, 64, h/4, w/4)
        x = self.flatten(x)  # (batch, 64 * h/4 * w/4)
        x = self.relu(self.fc1(x))  # (batch, 2048)
        return self.fc2(x)  # (batch, num_classes)


def build(input_shape: tuple[int, ...], num_classes: int) -> FemnistCNN:
    """Build a :class:`FemnistCNN`; it is a fixed preset and takes no options.

    Args:
        input_shape: (channels, height, width); LEAF uses (1, 28, 28). H and W must be >= 4.
        num_classes: number of output logits; 62 for FEMNIST.
    """
    shape = check_input_shape(NAME, input_shape, ndim=3, hint="(channels, height, width)")
    if shape[1] < 4 or shape[2] < 4:
        # Two 2x2 poolings would leave an empty feature map.
        raise ModelError(
            f"model {NAME!r}: input_shape={input_shape!r} is not allowed; "
            f"height and width must be >= 4 (two 2x2 max-pools), e.g. (1, 28, 28)"
        )
    return FemnistCNN((shape[0], shape[1], shape[2]), check_num_classes(NAME, num_classes))
