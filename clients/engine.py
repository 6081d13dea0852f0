"""Which engine trains a worker's clients, and how many clients a vectorised chunk holds.

`backend.engine = "auto"` runs a one-batch probe on the scenario's model: the
per-example and batch gradients computed by ``vmap`` over ``functional_call`` must
equal those of ordinary autograd. A model that fails (BatchNorm updating running
statistics, data-dependent control flow, randomness in the forward pass) is
trained by the sequential engine, and the reason is recorded. Server and workers
apply the same rule to the same model and data, so they agree.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.config import Scenario
from fedsim.data import ArrayDataset
from fedsim.errors import FedsimError
from fedsim.protocol import ENGINE_FIELDS

#: bytes of working memory a vectorised chunk may use (auto V), per worker
CHUNK_MEMORY = 1 << 30
#: most clients in an automatic chunk: beyond this the step time grows with V on CPU
MAX_AUTO_CLIENTS = 32
#: examples in the probe batch
PROBE_EXAMPLES = 4


class EngineError(FedsimError, ValueError):
    """backend.engine = "vectorised" for a model the vectorised engine cannot train."""

    bad_input = True  # backend.engine = "vectorised" for a model it cannot run


@dataclass(frozen=True)
class EngineChoice:
    """The engine a run uses, why, and the chunk size V of the vectorised engine."""

    engine: str  # "vectorised" | "sequential"
    reason: str
    vector_clients: int | None  # None for the sequential engine

    def summary(self) -> dict[str, object]:
        """The fields summary.json records (`fedsim.protocol.ENGINE_FIELDS`)."""
        values = (self.engine, self.reason, self.vector_clients)
        return dict(zip(ENGINE_FIELDS, values, strict=True))


def vector_clients(scenario: Scenario, model: nn.Module) -> int:
    """V: backend.vector_clients, or automatic from the model size.

    A client in a chunk holds its parameters, gradient, anchor and optimizer state
    (about 6 copies) and, under DP-SGD, per-example gradients for a Poisson batch
    (about 2 x batch_size copies with margin); V is what fits in CHUNK_MEMORY,
    capped at MAX_AUTO_CLIENTS. It depends on the scenario and the model only, so
    server and workers agree and chunks do not depend on the machine.
    """
    setting = scenario.backend.vector_clients
    if setting != "auto":
        return int(setting)
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    copies = 6 + (2 * scenario.train.batch_size if scenario.dp.mode == "sample" else 0)
    fit = CHUNK_MEMORY // max(1, 4 * numel * copies)
    return int(max(1, min(MAX_AUTO_CLIENTS, fit)))


def choose_engine(scenario: Scenario, model: nn.Module, dataset: ArrayDataset) -> EngineChoice:
    """The engine for this scenario and model (see the module docstring).

    Raises:
        EngineError: backend.engine = "vectorised" and the model fails the probe.
    """
    setting = scenario.backend.engine
    if setting == "sequential":
        return EngineChoice("sequential", "backend.engine = 'sequential'", None)
    failure = _objective_failure(scenario) or probe(model, dataset)
    if failure is None:
        why = "set by backend.engine" if setting == "vectorised" else "the model passed the probe"
        return EngineChoice("vectorised", why, vector_clients(scenario, model))
    if setting == "vectorised":
        raise EngineError(
            f"backend.engine = 'vectorised' but model {scenario.model.name!r} fails the "
            f"vmap probe ({failure}); use backend.engine = 'sequential' or 'auto'"
        )
    return EngineChoice("sequential", f"vmap probe failed: {failure}", None)


def _objective_failure(scenario: Scenario) -> str | None:
    """Why the vectorised engine cannot train the scenario's objective, or None.

    It vmaps the built-in cross-entropy; a custom data term trains sequentially.
    """
    if scenario.train.objective == "auto":
        return None  # "auto" picks built-ins only
    from fedsim.clients.objectives import resolve_objective

    if resolve_objective(scenario).custom_data_term():
        return f"objective {scenario.train.objective!r} has its own data term"
    return None


def probe(model: nn.Module, dataset: ArrayDataset) -> str | None:
    """None if vmapped gradients equal autograd's on one small batch, else why not."""
    from fedsim.clients.vectorised import make_grad_fns

    n = min(PROBE_EXAMPLES, len(dataset))
    if n == 0:
        return None  # nothing to train on: either engine does nothing
    x, y = dataset.batch(torch.arange(n))
    model = copy.deepcopy(model)  # the probe's steps must not touch the caller's buffers
    model.train()
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    stacked = {k: torch.stack([p, p]) for k, p in params.items()}
    before = {k: b.clone() for k, b in model.named_buffers()}
    try:
        plain, per_example = make_grad_fns(model, names)
        got_batch, _ = plain(stacked, x.expand(2, *x.shape), y.expand(2, n), torch.ones(2, n))
        got_ex, _ = per_example(stacked, x.expand(2, *x.shape), y.expand(2, n))
    except Exception as exc:  # noqa: BLE001 - any failure under vmap is the answer
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if any(not torch.equal(b, before[k]) for k, b in model.named_buffers()):
        return "the forward pass changes buffers (e.g. BatchNorm statistics)"
    want_ex = [_autograd(model, names, x[i : i + 1], y[i : i + 1]) for i in range(n)]
    want_batch = _autograd(model, names, x, y)
    for k in names:
        want = torch.stack([w[k] for w in want_ex])
        for got, ref in ((got_ex[k][1], want), (got_batch[k][1], want_batch[k])):
            if not torch.allclose(got, ref, rtol=1e-4, atol=1e-6):
                diff = float((got - ref).abs().max())
                return f"vmapped gradient of {k} differs from autograd by {diff:.2e}"
    return None


def _autograd(
    model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The mean cross-entropy gradient of `model` on (x, y), by ordinary autograd."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if k in names}  # type: ignore[union-attr]
    model.zero_grad(set_to_none=True)
    return grads
