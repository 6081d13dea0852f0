"""Dataset containers shared by every loader.

Data is stored once, as tensors, in an `ArrayDataset`; clients, partitioners and samplers only ever
hold int64 index arrays into it. `ArrayDataset.batch` is the single place samples are materialised,
so a simulation with thousands of clients costs one copy of the data per process, not one per
client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedsim.data.errors import DataError


def _readonly_int64(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Return `values` as a read-only 1-D int64 numpy array (sharing memory where possible)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.int64:
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{name} must hold integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    # Read-only so a client that sorts or edits "its" labels cannot corrupt the shared copy.
    arr = arr.view()
    arr.flags.writeable = False
    return arr


def _as_index(indices: np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
    """Convert an index array of any accepted kind to a 1-D int64 tensor."""
    index = torch.as_tensor(np.asarray(indices) if isinstance(indices, list) else indices)
    if index.ndim != 1:
        raise DataError(f"indices must be 1-D, got shape {tuple(index.shape)}")
    if index.numel() and (index.dtype.is_floating_point or index.dtype == torch.bool):
        raise DataError(f"indices must be integers, got dtype {index.dtype}")
    return index.to(torch.long)


class ArrayDataset:
    """One split (train or test) held in memory as tensors.

    Attributes:
        labels: int64 array (N,), the label of every sample; partitioners read this, never `x`.
        groups: int64 array (N,) with the natural group id of every sample (speaking role,
            synthetic device), or None when the data has no natural clients.
        group_names: optional human-readable name per group id (``group_names[g]``).
    """

    labels: np.ndarray
    groups: np.ndarray | None
    group_names: tuple[str, ...] | None

    def __init__(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        groups: torch.Tensor | np.ndarray | None = None,
        *,
        group_names: tuple[str, ...] | None = None,
    ) -> None:
        """Wrap features and labels that are already in memory.

        Args:
            x: features, shape (N, *input_shape); float data is stored as float32, integer data
                (token ids) as int64.
            y: labels, shape (N,), integers.
            groups: optional natural group id per sample, shape (N,).
            group_names: optional name per group id.

        Raises:
            DataError: if the lengths of `x`, `y` and `groups` differ or dtypes are wrong.
        """
        x_t = torch.as_tensor(x)
        x_t = x_t.to(torch.float32) if x_t.is_floating_point() else x_t.to(torch.long)
        labels = _readonly_int64(y, "y")
        if x_t.shape[0] != labels.shape[0]:
            raise DataError(f"x has {x_t.shape[0]} samples but y has {labels.shape[0]}")
        self._x = x_t
        # One owned copy of y; `labels` is a read-only numpy view of the same memory.
        self._y = torch.tensor(labels, dtype=torch.long)
        self._init_common(_readonly_int64(self._y.numpy(), "y"), groups, group_names)

    @classmethod
    def shared(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None = None,
        *,
        group_names: tuple[str, ...] | None = None,
    ) -> ArrayDataset:
        """Wrap arrays without copying them (memory-mapped files shared by processes).

        Args:
            x: float32 features or int64 token ids, shape (N, *input_shape).
            y: int64 labels, shape (N,).
            groups: optional int64 group id per sample.
            group_names: optional name per group id.

        Raises:
            DataError: if a dtype would need a copy or the lengths differ.
        """
        if x.dtype not in (np.float32, np.int64) or y.dtype != np.int64:
            raise DataError(
                f"shared arrays must be float32 or int64 features and int64 labels, "
                f"got {x.dtype} and {y.dtype}"
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        ds = cls.__new__(cls)
        ds._x, ds._y = torch.from_numpy(x), torch.from_numpy(y)
        ds._init_common(_readonly_int64(y, "y"), groups, group_names)
        return ds

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored features and labels as numpy arrays sharing this split's memory."""
        return self._x.numpy(), self._y.numpy()

    def _init_common(
        self,
        labels: np.ndarray,
        groups: torch.Tensor | np.ndarray | None,
        group_names: tuple[str, ...] | None,
    ) -> None:
        """Set `labels`, `groups` and `group_names`, checking they agree in length."""
        self.labels = labels
        self.groups = None if groups is None else _readonly_int64(groups, "groups")
        if self.groups is not None and self.groups.shape[0] != labels.shape[0]:
            raise DataError(
                f"groups has {self.groups.shape[0]} entries but there are {labels.shape[0]} samples"
            )
        self.group_names = None if group_names is None else tuple(group_names)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (e.g. to a Ray worker) only the primary arrays; `labels` is a view of y.
        return (_rebuild, (type(self), (self._x, self._y, self.groups), self.group_names))

    def __len__(self) -> int:
        """Number of samples in this split."""
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        n_groups = "none" if self.groups is None else len(np.unique(self.groups))
        return f"{type(self).__name__}(samples={len(self)}, groups={n_groups})"

    def batch(
        self, indices: np.ndarray | torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Materialise the samples at `indices`.

        Args:
            indices: 1-D integer indices into this split (numpy, torch or list).

        Returns:
            ``(x, y)``: x of shape (B, *input_shape) (float32 features or int64 token ids) and
            y int64 of shape (B,). Both are fresh tensors, safe to modify.

        Raises:
            DataError: if `indices` is not a 1-D integer array.
            IndexError: if an index is out of range.
        """
        index = _as_index(indices)
        return self._x[index], self._y[index]


class TextWindowDataset(ArrayDataset):
    """Next-token samples stored as start offsets into one shared token stream.

    Sample ``i`` is ``x = text[starts[i] : starts[i] + seq_len]`` and ``y = text[starts[i] +
    seq_len]``. Only the stream is stored (uint8 tokens), so a million overlapping windows cost a
    million int64 offsets rather than 80 million tokens.
    """

    def __init__(
        self,
        text: torch.Tensor,
        starts: np.ndarray,
        seq_len: int,
        groups: np.ndarray | None = None,
        *,
        group_names: tuple[str, ...] | None = None,
    ) -> None:
        """Wrap a token stream and the window start offsets of this split.

        Args:
            text: 1-D integer tensor of token ids (may be shared between train and test).
            starts: int64 (N,) start offset of every window; each must satisfy
                ``start + seq_len < len(text)``.
            seq_len: window length (input length); the label is the token right after it.
            groups: optional natural group id per window.
            group_names: optional name per group id.

        Raises:
            DataError: if `text` is not 1-D, `seq_len` < 1, or a window runs past the stream.
        """
        if text.ndim != 1:
            raise DataError(f"text must be a 1-D token stream, got shape {tuple(text.shape)}")
        if seq_len < 1:
            raise DataError(f"seq_len must be >= 1, got {seq_len}")
        starts_np = _readonly_int64(starts, "starts")
        if starts_np.size and (starts_np.min() < 0 or starts_np.max() + seq_len >= text.shape[0]):
            raise DataError(
                f"window starts must lie in [0, {text.shape[0] - seq_len - 1}] for a stream of "
                f"{text.shape[0]} tokens and seq_len={seq_len}"
            )
        self.text = text
        self.seq_len = int(seq_len)
        # A strided view: row s is text[s : s + seq_len + 1]; indexing it copies only the batch.
        self._windows = text.unfold(0, seq_len + 1, 1)
        self._starts_t = torch.tensor(starts_np, dtype=torch.long)
        self.starts = _readonly_int64(self._starts_t.numpy(), "starts")  # shares _starts_t
        labels = text[self._starts_t + seq_len].to(torch.long).numpy()
        self._init_common(_readonly_int64(labels, "labels"), groups, group_names)

    def __reduce__(self) -> tuple[Any, ...]:
        # The window view and labels are derived; pickle the stream (shared between splits in
        # one pickle), the offsets and the groups only.
        args = (self.text, self.starts, self.seq_len, self.groups)
        return (_rebuild, (type(self), args, self.group_names))

    def batch(
        self, indices: np.ndarray | torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Materialise windows: x int64 (B, seq_len) and y int64 (B,), the token after each."""
        rows = self._windows[self._starts_t[_as_index(indices)]].to(torch.long)
        return rows[:, : self.seq_len], rows[:, self.seq_len]


def _rebuild(
    cls: type[ArrayDataset], args: tuple[Any, ...], group_names: tuple[str, ...] | None
) -> ArrayDataset:
    """Unpickle helper: call the constructor again (keyword-only `group_names` needs this)."""
    return cls(*args, group_names=group_names)


@dataclass(frozen=True)
class DatasetBundle:
    """A loaded dataset: both splits plus the facts a model and a report need.

    Attributes:
        name: registry name, e.g. "digits".
        train: the training split.
        test: the test split.
        num_classes: number of label values (labels lie in ``[0, num_classes)``).
        input_shape: per-sample shape of x, e.g. (1, 8, 8) for digits, (80,) for shakespeare.
        info: small JSON-friendly facts to report (client counts, sample counts, vocab ...).
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
