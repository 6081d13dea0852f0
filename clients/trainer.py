"""Local training of one virtual client at a time, reusing one model per worker.

A worker (Ray actor) builds the model, its Opacus wrapper and the optimizer once
and then trains client after client with them: weights are copied in place,
optimizer state is cleared, and the DP parameters of the client are set on the
existing DPOptimizer. Wrapping a model anew for every client (what Flower's Opacus
example does every round) costs more than the training of a small client.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsim.clients.cohort import ClientJob, JobOutcome
from fedsim.clients.dp import LocalPlan, SpentPrivacy, local_steps, plan_participation
from fedsim.clients.objectives import Context, Objective, client_context, resolve_objective
from fedsim.config import Scenario
from fedsim.data import ArrayDataset
from fedsim.errors import FedsimError
from fedsim.models.build import build_global_model, choose_grad_sample_mode
from fedsim.privacy.events import PrivacyEvent
from fedsim.seeding import (
    dp_torch_generator,
    numpy_rng,
    secure_torch_generator,
    torch_generator,
)

# Opacus' hooks fire on module outputs when inputs need no grad (always, for data):
# expected here, and one warning per step would drown the output.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


class ClientFailure(FedsimError, RuntimeError):
    """A client failed during training (injected by `faults` or raised by the model)."""


@dataclass
class TrainResult:
    """What one client's local training produced."""

    state: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float
    steps: int
    plan: LocalPlan | None  # None without DP




class LocalTrainer:
    """Trains clients one after the other on a cached model (DP-SGD or plain SGD)."""

    def __init__(
        self,
        scenario: Scenario,
        dataset: ArrayDataset,
        input_shape: tuple[int, ...],
        num_classes: int,
        device: torch.device | None = None,
    ) -> None:
        self.scenario = scenario
        self.dataset = dataset
        self.device = device or torch.device("cpu")
        self.model = build_global_model(scenario, input_shape, num_classes).to(self.device)
        self.dp = scenario.dp.mode == "sample"
        self.objective: Objective = resolve_objective(scenario)
        # the client's context (global params, state, config), set per client by train()
        self._ctx: Context | None = None
        # what the current participation's DP optimizer ran (None without DP)
        self._spent: SpentPrivacy | None = None
        params = [p for p in self.model.parameters() if p.requires_grad]
        inner = _make_optimizer(scenario, params)
        self.loss_fn = nn.CrossEntropyLoss()
        self.grad_sample_mode = (
            choose_grad_sample_mode(self.model, scenario.dp.grad_sample_mode) if self.dp else "none"
        )
        if self.grad_sample_mode == "ghost" and self.objective.custom_data_term():
            # ghost clipping wraps a criterion(logits, y); a custom data term is a
            # function of the parameters, clipped from per-example gradients
            self.grad_sample_mode = "hooks"
        self._criterion: object = self.loss_fn
        if self.dp:
            self._wrap_private(inner)
        else:
            self.forward_module = self.model
            self.optimizer = inner
            self._inner = inner

    def _wrap_private(self, inner: torch.optim.Optimizer) -> None:
        """Opacus wrappers, built once per worker; per-client values are set per client.

        Ghost clipping computes per-example gradient norms without per-example
        gradients (Linear/Embedding), then runs one backward of the clipped loss; the
        hooks path materialises per-example gradients. Same clipping, same noise.
        """
        from opacus import GradSampleModule
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        dp = self.scenario.dp
        ghost = self.grad_sample_mode == "ghost"
        if ghost:
            self.forward_module: nn.Module = GradSampleModuleFastGradientClipping(
                self.model,
                batch_first=True,
                loss_reduction="mean",
                max_grad_norm=dp.max_grad_norm,
                use_ghost_clipping=True,
            )
        else:
            self.forward_module = GradSampleModule(
                self.model, batch_first=True, loss_reduction="mean"
            )
        optimizer_cls = DPOptimizerFastGradientClipping if ghost else DPOptimizer
        self.optimizer: torch.optim.Optimizer = optimizer_cls(
            inner,
            noise_multiplier=0.0,
            max_grad_norm=dp.max_grad_norm,
            expected_batch_size=self.scenario.train.batch_size,
            loss_reduction="mean",
            secure_mode=dp.secure_rng,
        )
        if ghost:
            self._criterion = DPLossFastGradientClipping(
                self.forward_module, self.optimizer, nn.CrossEntropyLoss(), "mean"
            )
        self._inner = inner
        self.optimizer.attach_step_hook(self._on_noisy_step)  # type: ignore[attr-defined]

    def _on_noisy_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The DPOptimizer's step hook, run after clipping and noise of each step.

        It notes the step with the noise multiplier and clip the optimizer just
        applied (the client's report is what ran), then adds the regulariser.
        """
        if self._spent is not None:
            self._spent.step(
                optimizer.noise_multiplier,  # type: ignore[attr-defined]
                optimizer.max_grad_norm,  # type: ignore[attr-defined]
            )
        self._add_regulariser_grad()

    # ----------------------------------------------------------------- weights
    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the global weights into the cached model in place."""
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                tensor.copy_(state[name])

    def state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ----------------------------------------------------------------- training
    def train(
        self,
        *,
        client: int,
        round: int,
        indices: np.ndarray,
        global_state: Mapping[str, torch.Tensor],
        progress: list[int] | None = None,
        config: Mapping[str, object] | None = None,
    ) -> TrainResult:
        """Train one client for one round from the global weights.

        Args:
            client: virtual client id.
            round: server round (1-based), part of every seed.
            indices: the client's training indices into the worker's dataset.
            global_state: the global model's state dict.
            progress: if given, progress[0] is kept equal to the steps done so far, so
                a caller can tell how much privacy a failing client already spent.
            config: the strategy's ConfigRecord for this client, with its per-client
                array records decoded (SCAFFOLD's "correction", FedDyn's state): the
                objective's inputs (fedsim.clients.objectives; "proximal-mu" makes
                the FedProx term under train.objective = "auto").

        Raises:
            ClientFailure: an injected fault (scenario `faults.fail_probability`).
        """
        n = len(indices)
        # DP first: a failure anywhere after this still reports what was spent.
        sampler, plan = self._begin_participation(client, round, indices)
        self.load_state(global_state)
        self._inner.state.clear()  # momentum / Adam moments belong to one client
        self._set_context(config)
        self.model.train()
        fail_at = self._fault_step(client, round, n)
        steps = local_steps(self.scenario, n, client, round)
        losses: list[float] = []
        for step in range(steps):
            if fail_at is not None and step == fail_at:
                raise injected_failure(client, step)
            loss = self._step(sampler.next())
            if loss is not None:
                losses.append(loss)
            if progress is not None:
                progress[0] = step + 1
        return TrainResult(
            state=self.state_copy(),
            num_examples=n,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            steps=steps,
            plan=plan,
        )

    def _begin_participation(
        self, client: int, round: int, indices: np.ndarray
    ) -> tuple[BatchSampler, LocalPlan | None]:
        """The participation's batch sampler and DP plan; under DP the optimizer is
        configured and `spent` restarts from what it was configured with."""
        sc = self.scenario
        n = len(indices)
        self._spent = None
        # With secure_rng the batch masks are secret too: amplification by sampling
        # assumes nobody knows which examples joined a batch.
        gen = dp_torch_generator(self.dp and sc.dp.secure_rng, sc.seed, "batches", round, client)
        if not self.dp:
            return BatchSampler(indices, gen, sc.train.batch_size, None), None
        plan = plan_participation(sc, n)
        self._configure_dp(plan, n, client, round)
        sampler = BatchSampler(indices, gen, sc.train.batch_size, plan.sample_rate)
        opt = self.optimizer
        self._spent = SpentPrivacy(
            noise_multiplier=opt.noise_multiplier,  # type: ignore[attr-defined]
            max_grad_norm=opt.max_grad_norm,  # type: ignore[attr-defined]
            sample_rate=float(sampler.sample_rate),  # type: ignore[arg-type]
            delta=plan.delta,
        )
        return sampler, plan

    def spent(self) -> PrivacyEvent | None:
        """The privacy event the latest participation's DP optimizer ran (so far, if it
        failed): the client's report. None without DP."""
        return self._spent.event() if self._spent is not None else None

    def _step(self, batch_idx: torch.Tensor) -> float | None:
        self.optimizer.zero_grad(set_to_none=True)
        if len(batch_idx) == 0:
            # An empty Poisson batch is still a step of the mechanism: the noise is
            # added to a zero sum, as the accountant counts it.
            for p in self.model.parameters():
                if p.requires_grad:
                    if self.grad_sample_mode == "ghost":
                        p.grad = torch.zeros_like(p)
                    else:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            self.optimizer.step()
            return None
        x, y = self.dataset.batch(batch_idx)
        x, y = x.to(self.device), y.to(self.device)
        if self.objective.custom_data_term():
            if self._ctx is None:  # set for every client before its first step
                raise RuntimeError("a custom data term before the client's context was set")
            params = dict(self.model.named_parameters())
            loss = self.objective.objective(params, (x, y), self._ctx).mean()
        else:  # the built-in cross-entropy, on Opacus' path (ghost clipping's criterion)
            loss = self._criterion(self.forward_module(x), y)  # type: ignore[operator]
        loss.backward()
        if not self.dp:
            self._add_regulariser_grad()
        self.optimizer.step()
        return float(loss.detach())

    def _set_context(self, config: Mapping[str, object] | None) -> None:
        """The client's objective and its context, from the weights just loaded."""
        self.objective = resolve_objective(self.scenario, config)
        anchor = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        ctx = client_context(self.objective, anchor, config)
        ctx.state = {
            k: ctx.state[k].to(self.device, anchor[k].dtype) for k in anchor if k in ctx.state
        }
        # the forward pass through the (Opacus-wrapped) module, whose weights are params
        ctx.forward = lambda _params, x: self.forward_module(x)
        self._ctx = ctx

    def _add_regulariser_grad(self, *_: object) -> None:
        """The gradient of the objective's data-free term, added to the step's gradient.

        FedProx: mu (w - w_global); SCAFFOLD: c - c_i; FedDyn: alpha (w - w_global) - g_i.
        Under DP-SGD this runs after clipping and noise (as the DPOptimizer's step hook):
        the terms do not depend on the data, so adding them costs no privacy, while
        adding them to the loss would put them inside every per-example clip.
        """
        if self._ctx is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            grads = self.objective.regulariser_grad(
                {k: p.detach() for k, p in params.items()}, self._ctx
            )
            if grads is None:
                return
            for k, p in params.items():
                if p.grad is not None:
                    p.grad.add_(grads[k])

    def _configure_dp(self, plan: LocalPlan, shard_len: int, client: int, round: int) -> None:
        opt = self.optimizer
        opt.noise_multiplier = plan.noise_multiplier  # type: ignore[attr-defined]
        opt.max_grad_norm = plan.max_grad_norm  # type: ignore[attr-defined]
        # Mean over the *expected* Poisson batch q * n = min(n, batch_size), as
        # Opacus' DPDataLoader does; dividing by the realised size would leak it.
        opt.expected_batch_size = max(  # type: ignore[attr-defined]
            1, min(shard_len, self.scenario.train.batch_size)
        )
        opt.generator = noise_generator(  # type: ignore[attr-defined]
            self.scenario, round, client, self.device
        )

    def _fault_step(self, client: int, round: int, n: int) -> int | None:
        return fault_step(self.scenario, client, round, n)

    # ----------------------------------------------------------------- cohorts
    chunk_size = 1 << 30  # clients one after the other: chunks change nothing here

    def train_cohort(self, jobs: Sequence[ClientJob]) -> list[JobOutcome]:
        """Train the jobs one after the other (the CohortTrainer interface)."""
        outcomes = []
        for job in jobs:
            progress = [0]
            try:
                res = self.train(
                    client=job.client,
                    round=job.round,
                    indices=job.indices,
                    global_state=job.global_state,
                    progress=progress,
                    config=job.config,
                )
            except Exception as exc:  # noqa: BLE001 - a client's failure is data, not a crash
                outcomes.append(
                    JobOutcome(job.client, error=exc, steps_done=progress[0], event=self.spent())
                )
                continue
            outcomes.append(
                JobOutcome(job.client, result=res, steps_done=res.steps, event=self.spent())
            )
        return outcomes


class BatchSampler:
    """The batches of one participation, drawn from its own generator.

    DP-SGD (``sample_rate`` given): Poisson sampling, each example joins a batch
    independently with probability q, the sampling the accountant assumes. Without
    DP: shuffled epochs cut into batches of ``batch_size``. Both engines draw their
    batches here, so a client's batches do not depend on the engine.
    """

    def __init__(
        self,
        indices: np.ndarray,
        generator: torch.Generator,
        batch_size: int,
        sample_rate: float | None,
    ) -> None:
        self.idx = torch.as_tensor(indices, dtype=torch.long)
        self.gen = generator
        self.batch_size = batch_size
        self.sample_rate = sample_rate
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def next(self) -> torch.Tensor:
        """Indices (into the dataset) of the next batch; may be empty under DP."""
        n = len(self.idx)
        if self.sample_rate is not None:
            return self.idx[torch.rand(n, generator=self.gen) < self.sample_rate]
        if self._cursor >= len(self._order):
            self._order = self.idx[torch.randperm(n, generator=self.gen)]
            self._cursor = 0
        batch = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return batch


def noise_generator(
    scenario: Scenario, round: int, client: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of a participation's DP-SGD noise.

    With dp.secure_rng: fresh OS entropy per participation (torchcsprng has no build
    for this Python/torch); Opacus' secure_mode adds its floating-point mitigation.
    Otherwise seeded per (round, client): reproducible experiments; the audit says so.
    """
    if scenario.dp.secure_rng:
        return secure_torch_generator(device)
    return torch_generator(scenario.seed, "noise", round, client)


def injected_failure(client: int, step: int) -> ClientFailure:
    """The error of a client failing by `faults.fail_probability` at `step`."""
    return ClientFailure(f"injected failure of client {client} at step {step}")


def fault_step(scenario: Scenario, client: int, round: int, n: int) -> int | None:
    """The step at which a client fails this round (faults.fail_probability), or None."""
    p = scenario.faults.fail_probability
    if p <= 0.0:
        return None
    rng = numpy_rng(scenario.seed, "fault", round, client)
    if rng.random() >= p:
        return None
    steps = local_steps(scenario, n, client, round)
    return steps // 2  # mid-training: some privacy already spent




def _make_optimizer(scenario: Scenario, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    tr = scenario.train
    if tr.optimizer == "adam":
        return torch.optim.Adam(params, lr=tr.lr)
    return torch.optim.SGD(params, lr=tr.lr, momentum=tr.momentum)
