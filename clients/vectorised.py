"""Vectorised cohorts: the V clients of a chunk trained as one batched computation.

The chunk's parameters are stacked into a leading client dimension,
``params[name]: (V, *shape)``, and one local step of all V clients is one call of
``vmap(grad(loss))`` over ``torch.func.functional_call`` of the scenario's model.
Per-client differences are stacked tensors and masks: shard sizes (each client's
batch padded to the chunk's largest with weight 0), local steps (a client whose
steps are done, or that failed, is left out of later steps: nothing changes and no
privacy is spent), learning rate, the objective's inputs (FedProx mu, SCAFFOLD
corrections, FedDyn's state: its regulariser's gradient is vmapped over the
clients, fedsim.clients.objectives) and optimizer state (SGD with momentum, Adam).

DP-SGD is what the accountant assumes and what the sequential engine does with
Opacus: each client's Poisson batch comes from its own generator (the same
:class:`~fedsim.clients.trainer.BatchSampler` the sequential engine draws from),
per-example gradients by a second vmap over examples, each clipped to
max_grad_norm, summed, plus Gaussian noise of std z*C drawn from the client's own
noise generator by Opacus' own noise function, divided by the expected batch size.
An empty batch is still a noisy step. With the same seeds the two engines draw the
same batches and the same noise; they agree to float rounding, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedsim.clients.cohort import ClientJob, JobOutcome
from fedsim.clients.dp import LocalPlan, SpentPrivacy, local_steps, plan_participation
from fedsim.clients.objectives import Context, Objective, resolve_objective
from fedsim.clients.trainer import (
    BatchSampler,
    TrainResult,
    build_global_model,
    fault_step,
    injected_failure,
    noise_generator,
)
from fedsim.config import Scenario
from fedsim.data import ArrayDataset
from fedsim.privacy.events import PrivacyEvent
from fedsim.seeding import dp_torch_generator

Params = dict[str, torch.Tensor]


@dataclass
class _Client:
    """One client of a chunk: its sampler, generators, plan and bookkeeping.

    ``spent`` records the noisy steps `_privatise` ran for it, with the noise
    multiplier and clip it applied: the client's privacy report.
    """

    job: ClientJob
    steps: int
    fail_at: int | None
    sampler: BatchSampler
    plan: LocalPlan | None
    noise_gen: torch.Generator | None
    expected_batch: int
    losses: list[float] = field(default_factory=list)
    spent: SpentPrivacy | None = None

    def __post_init__(self) -> None:
        if self.plan is not None and self.spent is None:
            self.spent = SpentPrivacy(
                noise_multiplier=self.plan.noise_multiplier,
                max_grad_norm=self.plan.max_grad_norm,
                sample_rate=float(self.sampler.sample_rate),  # type: ignore[arg-type]
                delta=self.plan.delta,
            )

    def event(self) -> PrivacyEvent | None:
        """The privacy event of the steps run so far; None without DP."""
        return self.spent.event() if self.spent is not None else None

    def active(self, step: int) -> bool:
        """Whether the client takes `step` (not finished, not failed before it)."""
        return step < self.steps and (self.fail_at is None or step < self.fail_at)


class VectorisedTrainer:
    """Trains chunks of up to ``chunk_size`` clients with torch.func (DP-SGD or plain)."""

    def __init__(
        self,
        scenario: Scenario,
        dataset: ArrayDataset,
        input_shape: tuple[int, ...],
        num_classes: int,
        device: torch.device | None = None,
        chunk_size: int | None = None,
    ) -> None:
        from fedsim.clients.engine import vector_clients

        self.scenario = scenario
        self.dataset = dataset
        self.device = device or torch.device("cpu")
        self.model = build_global_model(scenario, input_shape, num_classes).to(self.device)
        self.dp = scenario.dp.mode == "sample"
        self.grad_sample_mode = "vectorised" if self.dp else "none"
        self.chunk_size = chunk_size or vector_clients(scenario, self.model)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        # state_dict key -> parameter name (aliased parameters, e.g. DPLSTM's, share one)
        by_id = {id(p): n for n, p in self.model.named_parameters() if p.requires_grad}
        self.key_to_param = {
            k: by_id[id(t)]
            for k, t in self.model.state_dict(keep_vars=True).items()
            if id(t) in by_id
        }
        self._plain, self._per_example = make_grad_fns(self.model, self.names)

    # ----------------------------------------------------------------- weights
    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the global weights into the cached model in place (for evaluation)."""
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                tensor.copy_(state[name])

    # ----------------------------------------------------------------- training
    def train_cohort(self, jobs: Sequence[ClientJob]) -> list[JobOutcome]:
        """Train the jobs in chunks of ``chunk_size`` (the CohortTrainer interface)."""
        outcomes: list[JobOutcome] = []
        for start in range(0, len(jobs), self.chunk_size):
            outcomes += self.train_chunk(jobs[start : start + self.chunk_size])
        return outcomes

    def train_chunk(self, jobs: Sequence[ClientJob]) -> list[JobOutcome]:
        """Train the clients of one chunk together; one outcome per job, in order."""
        if not jobs:
            return []
        clients = [self._client(job) for job in jobs]
        params = self._stack([job.global_state for job in jobs])
        anchor = {k: v.clone() for k, v in params.items()}
        groups = self._objective_groups(jobs, params)
        lr = torch.full((len(jobs),), self.scenario.train.lr, device=self.device)
        opt_state = optimizer_state(self.scenario, params)
        for step in range(max(c.steps for c in clients)):
            act = [v for v, c in enumerate(clients) if c.active(step)]
            if not act:
                break  # everyone finished or failed
            sel = torch.tensor(act, device=self.device)
            full = len(act) == len(clients)
            sub = params if full else {k: t[sel] for k, t in params.items()}
            grads = self._gradients(sub, [clients[v] for v in act])
            # data-free terms, after clipping and noise (as the sequential step hook)
            for objective, rows, state, config in groups:
                self._add_regulariser(objective, rows, act, sub, anchor, state, config, grads)
            new = optimizer_step(self.scenario, sub, grads, opt_state, sel, full, step + 1, lr)
            for k, t in new.items():
                _put(params, k, t, sel, full)
        return [self._outcome(v, c, params) for v, c in enumerate(clients)]

    def _client(self, job: ClientJob) -> _Client:
        sc = self.scenario
        n = len(job.indices)
        plan = plan_participation(sc, n) if self.dp else None
        gen = dp_torch_generator(
            self.dp and sc.dp.secure_rng, sc.seed, "batches", job.round, job.client
        )
        return _Client(
            job=job,
            steps=local_steps(sc, n, job.client, job.round),
            fail_at=fault_step(sc, job.client, job.round, n),
            sampler=BatchSampler(
                job.indices, gen, sc.train.batch_size, plan.sample_rate if plan else None
            ),
            plan=plan,
            # noise on the CPU from the client's generator, as the sequential engine
            noise_gen=noise_generator(sc, job.round, job.client) if plan else None,
            expected_batch=max(1, min(n, sc.train.batch_size)),
        )

    def _stack(self, states: Sequence[Mapping[str, torch.Tensor]]) -> Params:
        """The chunk's starting parameters, (V, *shape) per parameter name."""
        keys = {name: key for key, name in self.key_to_param.items()}
        return {
            name: torch.stack([s[keys[name]] for s in states]).to(self.device, torch.float32)
            for name in self.names
        }

    def _objective_groups(self, jobs: Sequence[ClientJob], params: Params) -> list[tuple]:
        """(objective, chunk rows, stacked state, stacked config) per objective with a
        regulariser: a round's strategy gives one, tests and "auto" may mix them."""
        by_type: dict[type, tuple[Objective, list[int]]] = {}
        for v, job in enumerate(jobs):
            obj = resolve_objective(self.scenario, job.config)
            by_type.setdefault(type(obj), (obj, []))[1].append(v)
        groups = []
        for obj, rows in by_type.values():
            if obj.has_regulariser():
                picked = [jobs[v] for v in rows]
                sub = {k: t[rows] for k, t in params.items()}
                state = self._states(picked, sub, obj.state_key)
                groups.append((obj, rows, state, self._configs(picked)))
        return groups

    def _add_regulariser(
        self,
        objective: Objective,
        rows: list[int],
        act: list[int],
        sub: Params,
        anchor: Params,
        state: Params,
        config: Params,
        grads: Params,
    ) -> None:
        """grads += the regulariser's gradient, for the active clients of one group.

        `sub` and `grads` hold the active clients `act`; `anchor` the whole chunk;
        `state` and `config` the group's `rows`.
        """
        pos = {v: i for i, v in enumerate(act)}
        mine = [j for j, v in enumerate(rows) if v in pos]  # group rows still active
        if not mine:
            return
        at = [pos[rows[j]] for j in mine]  # their positions among the active clients
        whole = len(at) == len(act)
        pick = torch.tensor(mine, device=self.device)
        idx = torch.tensor(at, device=self.device)
        reg = regulariser_grads(
            objective,
            sub if whole else {k: t[idx] for k, t in sub.items()},
            {k: t[[rows[j] for j in mine]] for k, t in anchor.items()},
            {k: t[pick] for k, t in state.items()},
            {k: t[pick] for k, t in config.items()},
        )
        for k, g in grads.items():
            if whole:
                g += reg[k]
            else:
                g.index_add_(0, idx, reg[k])

    def _states(self, jobs: Sequence[ClientJob], params: Params, key: str | None) -> Params:
        """Each client's state record (SCAFFOLD's c - c_i, ...), zero where none was sent."""
        given = [job.config.get(key) if job.config and key else None for job in jobs]
        if all(c is None for c in given):
            return {}
        keys = {name: key for key, name in self.key_to_param.items()}
        out = {}
        for name in self.names:
            rows = [
                torch.zeros_like(params[name][0]) if c is None else c[keys[name]]  # type: ignore[index]
                for c in given
            ]
            out[name] = torch.stack(rows).to(self.device, torch.float32)
        return out

    def _configs(self, jobs: Sequence[ClientJob]) -> Params:
        """The numeric config values the chunk's clients share, stacked (V,) (0 if absent)."""
        keys = {
            k
            for job in jobs
            for k, v in (job.config or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return {
            k: torch.tensor(
                [float((job.config or {}).get(k, 0.0) or 0.0) for job in jobs],  # type: ignore[arg-type]
                device=self.device,
            )
            for k in sorted(keys)
        }

    def _gradients(self, params: Params, clients: list[_Client]) -> Params:
        """One step's gradient of every active client: plain, or DP-SGD's noisy mean."""
        batches = [c.sampler.next() for c in clients]
        x, y, w = self._gather(batches)
        if not self.dp:
            grads, loss = self._plain(params, x, y, w)
            for c, b, value in zip(clients, batches, loss.tolist(), strict=True):
                if len(b):
                    c.losses.append(value)
            return grads
        per_ex, ex_loss = self._per_example(params, x, y)
        means = ((ex_loss * w).sum(1) / w.sum(1).clamp(min=1.0)).tolist()  # one device sync
        for c, b, value in zip(clients, batches, means, strict=True):
            if len(b):
                c.losses.append(value)
        return self._privatise(per_ex, w, clients)

    def _gather(self, batches: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The batches padded to the largest: x (V, B, ...), y (V, B), weights w (V, B)."""
        sizes = [len(b) for b in batches]
        width = max(1, *sizes)
        flat = torch.cat(batches)
        if len(flat) == 0:  # every batch empty: shapes from one sample, all weight 0
            flat_x, flat_y = self.dataset.batch(torch.zeros(1, dtype=torch.long))
            flat_x, flat_y = flat_x[:0], flat_y[:0]
        else:
            flat_x, flat_y = self.dataset.batch(flat)
        pos = torch.cat([torch.arange(s) + v * width for v, s in enumerate(sizes)])
        x = flat_x.new_zeros((len(batches) * width, *flat_x.shape[1:]))
        y = flat_y.new_zeros(len(batches) * width)
        w = torch.zeros(len(batches) * width)
        x[pos], y[pos], w[pos] = flat_x, flat_y, 1.0
        shape = (len(batches), width)
        dev = self.device
        return x.view(*shape, *x.shape[1:]).to(dev), y.view(shape).to(dev), w.view(shape).to(dev)

    def _privatise(self, per_ex: Params, w: torch.Tensor, clients: list[_Client]) -> Params:
        """Clip each example to C, sum, add N(0, (zC)^2) per client, divide by E|batch|.

        The order of operations and the noise calls are Opacus' (DPOptimizer's
        clip_and_accumulate, add_noise, scale_grad), so the same generator gives the
        same noise as the sequential engine.
        """
        from opacus.optimizers.optimizer import _generate_noise

        # the values applied, read once: the same numbers clip, noise and the report use
        zs = [c.plan.noise_multiplier for c in clients]  # type: ignore[union-attr]
        clips = [c.plan.max_grad_norm for c in clients]  # type: ignore[union-attr]
        clip = torch.tensor(clips, device=w.device)
        norms = torch.stack(
            [g.flatten(start_dim=2).norm(2, dim=-1) for g in per_ex.values()], dim=-1
        ).norm(2, dim=-1)  # (V, B): each example's gradient norm over all parameters
        factor = (clip[:, None] / (norms + 1e-6)).clamp(max=1.0) * w
        summed = {k: torch.einsum("vb,vb...->v...", factor, g) for k, g in per_ex.items()}
        secure = self.scenario.dp.secure_rng
        out: Params = {}
        for k, s in summed.items():
            ref = torch.empty(s.shape[1:], dtype=s.dtype)
            noise = [
                _generate_noise(z * c_norm, ref, generator=c.noise_gen, secure_mode=secure)
                for c, z, c_norm in zip(clients, zs, clips, strict=True)
            ]
            eb = torch.tensor([float(c.expected_batch) for c in clients], device=s.device)
            out[k] = (s + torch.stack(noise).to(s.device)) / _per_client(eb, s)
        for c, z, c_norm in zip(clients, zs, clips, strict=True):
            c.spent.step(z, c_norm)  # type: ignore[union-attr]
        return out

    def _outcome(self, v: int, c: _Client, params: Params) -> JobOutcome:
        """Client v's result, or its injected failure after the steps it took."""
        if c.fail_at is not None and c.fail_at < c.steps:
            return JobOutcome(
                c.job.client,
                error=injected_failure(c.job.client, c.fail_at),
                steps_done=c.fail_at,
                event=c.event(),
            )
        state = {
            key: (
                params[self.key_to_param[key]][v].detach().to("cpu", copy=True)
                if key in self.key_to_param
                else tensor.detach().to("cpu", copy=True)
            )
            for key, tensor in c.job.global_state.items()
        }
        result = TrainResult(
            state=state,
            num_examples=len(c.job.indices),
            train_loss=float(np.mean(c.losses)) if c.losses else float("nan"),
            steps=c.steps,
            plan=c.plan,
        )
        return JobOutcome(c.job.client, result=result, steps_done=c.steps, event=c.event())


def make_grad_fns(model: nn.Module, names: list[str]) -> tuple[Callable, Callable]:
    """Vmapped gradients over the client dimension: (plain, per_example).

    plain(params, x, y, w) -> (grads (V, ...), loss (V,)): the gradient of each
    client's mean loss over its realised batch (padding has weight 0).
    per_example(params, x, y) -> (grads (V, B, ...), losses (V, B)): each example's
    gradient, for DP-SGD's per-example clipping.
    """
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    frozen.update({n: b.detach() for n, b in model.named_buffers()})

    def logits(params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (params, frozen), (x,))

    def batch_loss(params: Params, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor):  # type: ignore[no-untyped-def]
        per = F.cross_entropy(logits(params, x), y, reduction="none")
        return (per * w).sum() / w.sum().clamp(min=1.0)

    def example_loss(params: Params, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
        return F.cross_entropy(logits(params, x.unsqueeze(0)), y.unsqueeze(0))

    plain = vmap(grad_and_value(batch_loss))
    per_example = vmap(vmap(grad_and_value(example_loss), in_dims=(None, 0, 0)))
    return plain, per_example


def regulariser_grads(
    objective: Objective, params: Params, anchor: Params, state: Params, config: Params
) -> Params:
    """The objective's regulariser gradient of every client, vmapped: (V, *shape) each.

    `anchor` is each client's global parameters, `state` its state record ({} if no
    client has one), `config` its numeric config values as (V,) tensors.
    """

    def one(p: Params, g: Params, st: Params, cf: Params) -> Params:
        out = objective.regulariser_grad(p, Context(g, st, cf))
        return out if out is not None else {k: torch.zeros_like(t) for k, t in p.items()}

    return vmap(one)(params, anchor, state, config)


def optimizer_state(scenario: Scenario, params: Params) -> dict[str, Params]:
    """Zero optimizer state stacked for a chunk, (V, *shape) per parameter.

    Zero momentum equals torch's first-step ``buf = grad``: 0 * m + g == g exactly.
    """
    tr = scenario.train
    kinds = ["exp_avg", "exp_avg_sq"] if tr.optimizer == "adam" else []
    if tr.optimizer == "sgd" and tr.momentum > 0:
        kinds = ["momentum"]
    return {kind: {k: torch.zeros_like(p) for k, p in params.items()} for kind in kinds}


def optimizer_step(
    scenario: Scenario,
    params: Params,
    grads: Params,
    state: dict[str, Params],
    sel: torch.Tensor,
    full: bool,
    step: int,
    lr: torch.Tensor,
) -> Params:
    """One step of the scenario's optimizer for the active clients `sel`.

    `params` and `grads` hold the active clients only; `state` (from
    :func:`optimizer_state`) the whole chunk, of which only rows `sel` change. The
    rules are torch.optim.SGD's (momentum, no dampening) and torch.optim.Adam's
    (default betas and eps); `step` is the active clients' 1-based step.
    """
    tr = scenario.train
    new: Params = {}
    for k, p in params.items():
        g = grads[k]
        lr_k = _per_client(_take(lr, sel, full), g)
        if tr.optimizer == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            m = _take(state["exp_avg"][k], sel, full).lerp(g, 1 - b1)
            s = _take(state["exp_avg_sq"][k], sel, full) * b2 + (1 - b2) * g * g
            _put(state["exp_avg"], k, m, sel, full)
            _put(state["exp_avg_sq"], k, s, sel, full)
            denom = s.sqrt() / (1 - b2**step) ** 0.5 + eps
            new[k] = p - (lr_k / (1 - b1**step)) * m / denom
        elif "momentum" in state:
            buf = _take(state["momentum"][k], sel, full) * tr.momentum + g
            _put(state["momentum"], k, buf, sel, full)
            new[k] = p - lr_k * buf
        else:
            new[k] = p - lr_k * g
    return new


def _take(t: torch.Tensor, sel: torch.Tensor, full: bool) -> torch.Tensor:
    """Rows `sel` of a chunk-stacked tensor (all rows when the whole chunk is active)."""
    return t if full else t[sel]


def _put(bucket: Params, k: str, value: torch.Tensor, sel: torch.Tensor, full: bool) -> None:
    bucket[k] = value if full else bucket[k].index_copy(0, sel, value)


def _per_client(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (V,) tensor shaped to broadcast against a (V, *shape) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))
