"""The cohort-trainer interface the worker calls, whatever engine trains the clients.

A worker hands its trainer groups of client jobs (a *chunk*: at most
``trainer.chunk_size`` clients cut from the cohort by position) and gets one
outcome per job back. The sequential engine (clients/trainer.py) trains a chunk's
clients one after the other; the vectorised engine (clients/vectorised.py) trains
them as one batched computation. Both follow the same DP plan, seeds and faults,
and report the privacy event their DP-SGD actually ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fedsim.clients.trainer import TrainResult
    from fedsim.privacy.events import PrivacyEvent


@dataclass
class ClientJob:
    """One client's local training in a round, as the worker asks for it."""

    client: int
    round: int
    indices: np.ndarray
    global_state: Mapping[str, torch.Tensor]
    config: Mapping[str, object]


@dataclass
class JobOutcome:
    """What became of a job: a result, or the error and the steps taken before it.

    ``event`` is the privacy the job's DP optimizer spent (its steps, noise, clip
    and sample rate as run, whether it finished or failed); None without DP.
    """

    client: int
    result: TrainResult | None = None
    error: BaseException | None = None
    steps_done: int = 0
    event: PrivacyEvent | None = None


class CohortTrainer(Protocol):
    """What clients/worker.py needs from an engine."""

    dp: bool
    model: nn.Module
    #: clients the worker hands over at once (chunks are cut from the cohort by position)
    chunk_size: int

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy global weights into ``model`` (used for evaluation)."""
        ...

    def train_cohort(self, jobs: Sequence[ClientJob]) -> list[JobOutcome]:
        """Train every job; one job's failure is its outcome, not an exception."""
        ...
