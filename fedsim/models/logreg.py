"""Multinomial logistic regression ("logreg"): one Linear layer on the flattened input.

This is the model FedProx (Li et al., 2020) trains on its Synthetic(alpha, beta) data:
60 features and 10 classes, i.e. 60*10 + 10 = 610 parameters. The softmax lives in the loss
(``nn.CrossEntropyLoss``), so the module returns logits.

Opacus grad_sample modes: "hooks", "functorch", "ew" and "ghost" all work.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsim.models._checks import check_input_shape, check_num_classes, flat_size

NAME = "logreg"


class LogReg(nn.Module):
    """Flatten, then a single affine map to class logits."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs to class logits."""
        # x: (batch, *input_shape)
        x = self.flatten(x)  # (batch, in_features)
        return self.linear(x)  # (batch, num_classes)


def build(input_shape: tuple[int, ...], num_classes: int) -> LogReg:
    """Build a :class:`LogReg`; it takes no options.

    Args:
        input_shape: shape of one example, e.g. (60,) for FedProx Synthetic; flattened.
        num_classes: number of output logits.
    """
    shape = check_input_shape(NAME, input_shape, ndim=None, hint="a tuple such as (60,)")
    return LogReg(flat_size(shape), check_num_classes(NAME, num_classes))
