"""A validation split held out of the training data, for choosing settings honestly.

With ``data.validation_fraction = f > 0`` a seeded, per-class share f of the training split
is removed from training and becomes the split the server evaluates; the test split is not
evaluated at all. Settings (learning rate, noise, batch size ...) are chosen on these
validation numbers, and the final run with ``validation_fraction = 0`` reports test accuracy
on data no choice has seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError
from fedsim.seeding import numpy_rng


class SubsetDataset(ArrayDataset):
    """The rows `index` of a base split; `batch` maps into the base, nothing is copied."""

    def __init__(self, base: ArrayDataset, index: np.ndarray) -> None:
        """Wrap `base` restricted to the sorted int64 row numbers `index`."""
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)
        self._index_t = torch.as_tensor(self.index)
        groups = None if base.groups is None else base.groups[self.index]
        self._init_common(base.labels[self.index], groups, base.group_names)

    def __reduce__(self) -> tuple[object, ...]:
        return (SubsetDataset, (self.base, self.index))

    def batch(
        self, indices: np.ndarray | torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Materialise rows of this subset (indices are positions in the subset)."""
        rows = self._index_t[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
        return self.base.batch(rows)


def validation_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row numbers of a seeded, per-class share `fraction` of the rows (at least one).

    Per class, ``ceil(fraction * n_class)`` rows are drawn, so every class is represented in
    proportion, as in the loaders' stratified test splits.
    """
    rng = numpy_rng(seed, "validation-split")
    chosen = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(rows, size=math.ceil(fraction * len(rows)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def with_validation(bundle: DatasetBundle, fraction: float, seed: int) -> DatasetBundle:
    """The bundle with a validation share of its training split as the evaluated split.

    Args:
        bundle: a loaded dataset.
        fraction: share of the training rows held out, 0 < fraction < 1.
        seed: the scenario seed; same seed, same split in every process.

    Returns:
        A bundle whose ``train`` is the remaining rows and whose ``test`` is the held-out
        validation rows (``info["evaluated_split"] = "validation"``).

    Raises:
        DataError: if `fraction` is outside (0, 1) or leaves no training rows.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation_fraction must lie in (0, 1), got {fraction}")
    held = validation_indices(bundle.train.labels, fraction, seed)
    keep = np.setdiff1d(np.arange(len(bundle.train), dtype=np.int64), held)
    if keep.size == 0:
        raise DataError(
            f"validation_fraction = {fraction} holds out all {len(bundle.train)} training rows"
        )
    info = {
        **bundle.info,
        "train_samples": int(keep.size),
        "validation_samples": int(held.size),
        "evaluated_split": "validation",
    }
    return DatasetBundle(
        name=bundle.name,
        train=SubsetDataset(bundle.train, keep),
        test=SubsetDataset(bundle.train, held),
        num_classes=bundle.num_classes,
        input_shape=bundle.input_shape,
        info=info,
    )
