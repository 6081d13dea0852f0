"""Canary examples for the one-run example-level privacy audit (Steinke et al. 2023).

With `audit.canaries = m`, m canary examples (random inputs with random labels: far
from the data, so only memorisation can lower their loss) are made from the
scenario seed. Each canary is included independently with probability 1/2, in the
shard of one seeded owner client; the excluded half never leaves this module.
After training, every canary is scored by the final model (score = -loss: a lower
loss means "more likely trained on") and the scores feed
`fedsim.empirical.one_run.best_lower_bound`.

Canaries are rows appended after the real training set, so shards stay index
arrays and every process derives the same canaries from the scenario alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsim.data import ArrayDataset, DatasetBundle
from fedsim.seeding import numpy_rng


@dataclass(frozen=True)
class CanaryPlan:
    """Which canaries exist, which were included, and in whose shard."""

    included: np.ndarray  # bool (m,)
    owner: np.ndarray  # int64 (m,), client holding the canary if included
    offset: int  # index of canary 0 in the augmented training set


class CanaryDataset(ArrayDataset):
    """A training set followed by m canary rows; `batch` serves both."""

    def __init__(self, base: ArrayDataset, x: torch.Tensor, y: torch.Tensor) -> None:
        self.base = base
        self._cx = x
        self._cy = y.to(torch.long)
        groups = None
        if base.groups is not None:
            # Canaries belong to no natural group: a fresh id past the last one.
            groups = np.concatenate(
                [base.groups, np.full(len(y), int(base.groups.max()) + 1, dtype=np.int64)]
            )
        self._init_common(
            np.concatenate([base.labels, y.numpy().astype(np.int64)]), groups, base.group_names
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (CanaryDataset, (self.base, self._cx, self._cy))

    def batch(
        self, indices: np.ndarray | torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        n = len(self.base)
        real = index < n
        if bool(real.all()):
            return self.base.batch(index)
        x_real, y_real = self.base.batch(index[real])
        cx, cy = self._cx[index[~real] - n], self._cy[index[~real] - n]
        x = torch.empty((len(index), *cx.shape[1:]), dtype=cx.dtype)
        y = torch.empty(len(index), dtype=torch.long)
        x[real], y[real] = x_real, y_real
        x[~real], y[~real] = cx, cy
        return x, y


def make_canaries(bundle: DatasetBundle, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """m canary inputs shaped like the data, with uniformly random labels."""
    rng = numpy_rng(seed, "canary-data")
    probe, _ = bundle.train.batch(np.arange(min(len(bundle.train), 256)))
    shape = (m, *probe.shape[1:])
    if probe.is_floating_point():
        lo, hi = float(probe.min()), float(probe.max())
        x = torch.as_tensor(rng.uniform(lo, hi, size=shape), dtype=torch.float32)
    else:  # token ids (text): random sequences over the vocabulary
        x = torch.as_tensor(rng.integers(0, bundle.num_classes, size=shape), dtype=torch.long)
    y = torch.as_tensor(rng.integers(0, bundle.num_classes, size=m), dtype=torch.long)
    return x, y


def canary_plan(m: int, population: int, offset: int, seed: int) -> CanaryPlan:
    """Seeded inclusion (probability 1/2 each) and owner client of every canary."""
    rng = numpy_rng(seed, "canary-plan")
    included = rng.random(m) < 0.5
    owner = rng.integers(0, population, size=m).astype(np.int64)
    return CanaryPlan(included=included, owner=owner, offset=offset)


def with_canaries(bundle: DatasetBundle, m: int, seed: int) -> DatasetBundle:
    """The bundle with m canary rows appended to its training set."""
    x, y = make_canaries(bundle, m, seed)
    return DatasetBundle(
        name=bundle.name,
        train=CanaryDataset(bundle.train, x, y),
        test=bundle.test,
        num_classes=bundle.num_classes,
        input_shape=bundle.input_shape,
        info={**bundle.info, "canaries": m},
    )


def add_to_shards(parts: list[np.ndarray], plan: CanaryPlan) -> list[np.ndarray]:
    """Each client's shard plus the included canaries it owns (indices stay sorted)."""
    extra: dict[int, list[int]] = {}
    for j in np.flatnonzero(plan.included):
        extra.setdefault(int(plan.owner[j]), []).append(plan.offset + int(j))
    return [
        np.sort(np.concatenate([p, np.asarray(extra[c], dtype=np.int64)])) if c in extra else p
        for c, p in enumerate(parts)
    ]


@torch.no_grad()
def canary_scores(model: torch.nn.Module, dataset: CanaryDataset, offset: int) -> np.ndarray:
    """Score of every canary under the final model: -cross-entropy (higher = 'in')."""
    m = len(dataset) - offset
    model.eval()
    x, y = dataset.batch(np.arange(offset, offset + m))
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    return (-loss).numpy()
