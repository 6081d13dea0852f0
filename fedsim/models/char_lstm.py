"""LEAF's Shakespeare next-character model ("char_lstm"), as in LEAF ``models/shakespeare``.

Architecture (defaults)::

    Embedding(vocab=num_classes, 8)                  # (batch, seq_len, 8)
    2-layer LSTM, hidden 256, batch_first            # (batch, seq_len, 256)
    last time step -> Linear(256, num_classes)       # (batch, num_classes)

The LSTM is :class:`opacus.layers.DPLSTM`, not ``torch.nn.LSTM``: the fused cuDNN-style kernel
of ``nn.LSTM`` hides the per-time-step matmuls that Opacus needs to compute per-sample
gradients, while DPLSTM is built from ``RNNLinear`` layers whose grads Opacus accumulates over
time steps. DPLSTM registers each weight twice (its ``RNNLinear`` name ``l0.ih.weight`` and the
``nn.LSTM`` alias ``weight_ih_l0``) and only removes the duplicates from ``state_dict`` when it
is the top-level module; nested here, ``state_dict`` would hold every LSTM tensor twice, which
would double what a federated round ships. :class:`CharLSTM` therefore drops the aliases on
save and restores them on load, so its ``state_dict`` has one entry per parameter, named like
``nn.LSTM``'s, and matches ``parameters()`` one to one.

Parameter count with LEAF's vocabulary of 80 characters and the defaults::

    embedding  80*8                       =     640
    lstm l0    4*256*(8+256) + 2*4*256    = 272,384
    lstm l1    4*256*(256+256) + 2*4*256  = 526,336
    fc         256*80 + 80                =  20,560
    total                                 = 819,920

Opacus grad_sample modes: "hooks" (what DPLSTM is written for), "functorch", "ew" and "ghost"
all give per-sample gradients (or, for "ghost", norms) that match a per-example loop; "ghost"
uses ghost norms for the Embedding and Linear and falls back to per-sample grads for the LSTM's
``RNNLinear`` layers, which are reused at every time step.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.layers import DPLSTM
from torch import nn

from fedsim.models._checks import check_input_shape, check_num_classes, positive_int

NAME = "char_lstm"


def _drop_lstm_aliases(
    module: CharLSTM, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """state_dict post-hook: keep only the ``nn.LSTM`` name of each LSTM weight.

    Registered on CharLSTM rather than on the DPLSTM because DPLSTM's own filtering hook swaps
    in a fresh dict, so later hooks on it would edit a copy that torch then discards. Edits in
    place because torch also ignores the dict a nested module returns.
    """
    for old_name in module.lstm.old_to_new:  # e.g. "l0.ih.weight" (alias: "weight_ih_l0")
        state_dict.pop(f"{prefix}lstm.{old_name}", None)


def _restore_lstm_aliases(
    module: CharLSTM, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """load_state_dict pre-hook: refill the ``RNNLinear`` names dropped on save.

    Without this a strict load reports them missing; both names alias one Parameter, so the
    value is simply loaded twice.
    """
    for old_name, new_name in module.lstm.old_to_new.items():
        if f"{prefix}lstm.{new_name}" in state_dict:
            state_dict.setdefault(
                f"{prefix}lstm.{old_name}", state_dict[f"{prefix}lstm.{new_name}"]
            )


class CharLSTM(nn.Module):
    """Character embedding -> stacked DPLSTM -> linear classifier on the last time step."""

    def __init__(
        self, num_classes: int = 80, embed_dim: int = 8, hidden: int = 256, layers: int = 2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.lstm = DPLSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)
        self.register_state_dict_post_hook(_drop_lstm_aliases)
        self.register_load_state_dict_pre_hook(_restore_lstm_aliases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map int64 character ids to logits for the next character."""
        # x: (batch, seq_len) int64 character ids
        emb = self.embedding(x)  # (batch, seq_len, embed_dim)
        out, _ = self.lstm(emb)  # (batch, seq_len, hidden)
        return self.fc(out[:, -1, :])  # (batch, num_classes)


def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    embed_dim: int = 8,
    hidden: int = 256,
    layers: int = 2,
) -> CharLSTM:
    """Build a :class:`CharLSTM` after checking shape and options.

    Args:
        input_shape: ``(seq_len,)``; LEAF uses (80,). The model accepts any length at run time,
            the shape is only checked so a wrong dataset/model pairing fails early.
        num_classes: vocabulary size; inputs and outputs share it (80 for LEAF Shakespeare).
        embed_dim: width of the character embedding.
        hidden: LSTM hidden size.
        layers: number of stacked LSTM layers.
    """
    check_input_shape(NAME, input_shape, ndim=1, hint="(seq_len,)")
    return CharLSTM(
        check_num_classes(NAME, num_classes),
        embed_dim=positive_int(NAME, "embed_dim", embed_dim),
        hidden=positive_int(NAME, "hidden", hidden),
        layers=positive_int(NAME, "layers", layers),
    )
