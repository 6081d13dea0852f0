"""Client objectives: what a client minimises locally, as pure functions of tensors.

An objective is a class with three methods (see /work/shared/DESIGN.md)::

    objective(params, batch, ctx) -> Tensor            # data term, per example: clipped
    regulariser(params, ctx) -> Tensor | None          # data-free term: added after noise
    after_round(ctx, new_params) -> dict[str, Tensor]  # the client's next state

``params`` maps parameter names to tensors; ``ctx`` (:class:`Context`) holds the
global parameters the round started from, the client's state record (the
per-client record the strategy sent under the objective's ``state_key``:
SCAFFOLD's c - c_i, FedDyn's gradient term) and the strategy's scalar config for
that client. Both engines use the same objective: the sequential engine (Opacus)
calls it on the model's live parameters, the vectorised engine vmaps it over the
clients of a chunk. Under DP-SGD only ``objective`` is clipped and noised; the
regulariser's gradient is added to the noisy gradient (it does not read the data,
so it costs no privacy, and inside the loss it would be clipped with every example).

Simulated clients are stateless (a worker trains whichever clients it is handed),
so per-client state is held by the server strategy, keyed by client id, sent with
the client's message and advanced by calling the objective's ``after_round`` on
the parameters the client returned (strategies/feddyn.py): the same function a
stateful client would run, with the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fedsim.protocol import FEDDYN_ALPHA, FEDDYN_STATE

Params = dict[str, torch.Tensor]
#: ctx.forward(params, x) -> logits of the scenario's model at `params`
Forward = Callable[[Params, torch.Tensor], torch.Tensor]


@dataclass
class Context:
    """What an objective may read besides the parameters and the batch.

    Attributes:
        global_params: the global model's parameters (the round's starting point).
        state: the client's state record, by parameter name ({} if none was sent).
        config: the strategy's scalar config for the client ("proximal-mu", ...).
        forward: the model's forward pass at given parameters (data terms only).
    """

    global_params: Params
    state: Params = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    forward: Forward | None = None


def _number(config: Mapping[str, Any], key: str) -> float | torch.Tensor:
    """A scalar config value (a float, or a 0-d tensor inside the vectorised engine)."""
    value = config.get(key, 0.0)
    return value if isinstance(value, torch.Tensor) else float(value or 0.0)


class Objective:
    """Empirical risk minimisation: the mean cross-entropy, nothing else ("erm").

    Subclass it and override what your algorithm changes. ``state_key`` names the
    per-client record of the strategy's message that becomes ``ctx.state``.
    """

    state_key: str | None = None

    def objective(
        self, params: Params, batch: tuple[torch.Tensor, ...], ctx: Context
    ) -> torch.Tensor:
        """Per-example losses (shape (B,)) of the batch; the engines take their mean."""
        x, y = batch[0], batch[1]
        if ctx.forward is None:
            raise RuntimeError("Objective.objective needs ctx.forward (the engines set it)")
        return F.cross_entropy(ctx.forward(params, x), y, reduction="none")

    def regulariser(self, params: Params, ctx: Context) -> torch.Tensor | None:
        """The data-free term of the loss, or None (no term)."""
        return None

    def regulariser_grad(self, params: Params, ctx: Context) -> Params | None:
        """The regulariser's gradient by parameter name (None: no regulariser).

        By autograd of :meth:`regulariser`; built-ins give the closed form, which is
        what the engines computed before objectives existed (same float operations).
        """
        if type(self).regulariser is Objective.regulariser:
            return None
        names = list(params)

        def term(*values: torch.Tensor) -> torch.Tensor:
            out = self.regulariser(dict(zip(names, values, strict=True)), ctx)
            return torch.zeros(()) if out is None else out

        grads = torch.func.grad(term, argnums=tuple(range(len(names))))(*params.values())
        return dict(zip(names, grads, strict=True))

    def after_round(self, ctx: Context, new_params: Params) -> Params:
        """The client's next state record (by parameter name); {} when stateless."""
        return {}

    def next_state(
        self,
        global_params: Params,
        state: Params,
        config: Mapping[str, Any],
        new_params: Params,
    ) -> Params:
        """:meth:`after_round` on plain inputs, for a server that holds the clients' state.

        Simulated clients are stateless, so a strategy such as FedDyn's advances each
        client's state itself, with the client objective's own rule.
        """
        ctx = Context(global_params=global_params, state=state, config=config)
        return self.after_round(ctx, new_params)

    @classmethod
    def has_regulariser(cls) -> bool:
        """Whether the objective has a data-free term (its gradient is ever non-zero)."""
        return (
            cls.regulariser is not Objective.regulariser
            or cls.regulariser_grad is not Objective.regulariser_grad
        )

    @classmethod
    def custom_data_term(cls) -> bool:
        """Whether the data term differs from the built-in cross-entropy.

        The engines compute the built-in term on their fastest path (Opacus' ghost
        clipping, a fused loss); a custom one through :meth:`objective`.
        """
        return cls.objective is not Objective.objective


class FedProx(Objective):
    """FedProx (Li et al. 2020): + mu/2 ||w - w_global||^2, mu from "proximal-mu"."""

    def regulariser(self, params: Params, ctx: Context) -> torch.Tensor | None:
        mu = _number(ctx.config, "proximal-mu")
        return mu / 2 * sum(((p - ctx.global_params[k]) ** 2).sum() for k, p in params.items())  # type: ignore[return-value]

    def regulariser_grad(self, params: Params, ctx: Context) -> Params | None:
        mu = _number(ctx.config, "proximal-mu")
        if not isinstance(mu, torch.Tensor) and mu <= 0:
            return None
        return {k: mu * (p - ctx.global_params[k]) for k, p in params.items()}


class Scaffold(Objective):
    """SCAFFOLD (Karimireddy et al. 2020): + <c - c_i, w>, whose gradient is c - c_i.

    The control variates themselves are advanced by the server (option II needs
    the server's c; strategies/scaffold.py).
    """

    state_key = "correction"

    def regulariser(self, params: Params, ctx: Context) -> torch.Tensor | None:
        if not ctx.state:
            return None
        return sum((ctx.state[k] * p).sum() for k, p in params.items())  # type: ignore[return-value]

    def regulariser_grad(self, params: Params, ctx: Context) -> Params | None:
        return dict(ctx.state) if ctx.state else None


#: ConfigRecord key of FedDyn's alpha; record key of its per-client gradient term.


class FedDyn(Objective):
    """FedDyn (Acar et al. 2021), the client's dynamic regulariser.

    loss(w) - <g_i, w> + alpha/2 ||w - w_global||^2, with g_i the client's state
    (zero at first) and, after the round, g_i <- g_i - alpha (w_i - w_global).
    """

    state_key = FEDDYN_STATE

    def regulariser(self, params: Params, ctx: Context) -> torch.Tensor | None:
        alpha = _number(ctx.config, FEDDYN_ALPHA)
        total = sum(
            alpha / 2 * ((p - ctx.global_params[k]) ** 2).sum()
            - ((ctx.state[k] * p).sum() if ctx.state else 0.0)
            for k, p in params.items()
        )
        return total  # type: ignore[return-value]

    def regulariser_grad(self, params: Params, ctx: Context) -> Params | None:
        alpha = _number(ctx.config, FEDDYN_ALPHA)
        out = {k: alpha * (p - ctx.global_params[k]) for k, p in params.items()}
        if ctx.state:
            out = {k: g - ctx.state[k] for k, g in out.items()}
        return out

    def after_round(self, ctx: Context, new_params: Params) -> Params:
        alpha = _number(ctx.config, FEDDYN_ALPHA)
        return {
            k: (ctx.state[k] if ctx.state else torch.zeros_like(w))
            - alpha * (w - ctx.global_params[k])
            for k, w in new_params.items()
        }


def resolve_objective(scenario: Any, config: Mapping[str, Any] | None = None) -> Objective:
    """The objective of a client: ``train.objective``, or for "auto" :func:`auto_objective`.

    Raises:
        fedsim.registry.RegistryError: an unknown name or a path that cannot be imported.
    """
    from fedsim import registry

    name = scenario.train.objective
    if name == "auto":
        name = auto_objective(config or {})
    obj = _INSTANCES.get(name)
    if obj is None:
        obj = _INSTANCES[name] = registry.OBJECTIVES.load(name)()
    return obj


_INSTANCES: dict[str, Objective] = {}


def auto_objective(config: Mapping[str, Any]) -> str:
    """The built-in objective whose inputs a strategy sent (the strategies' own keys).

    FedDyn's alpha, SCAFFOLD's correction record, FedProx's "proximal-mu" (Flower's
    FedProx, or any strategy sending it), else "erm": what the engines did before
    objectives were selectable, so existing scenarios train as they did.
    """
    if FEDDYN_ALPHA in config:
        return "feddyn"
    if Scaffold.state_key in config:
        return "scaffold"
    if "proximal-mu" in config:
        return "fedprox"
    return "erm"


def client_context(
    objective: Objective, global_params: Params, config: Mapping[str, Any] | None
) -> Context:
    """The context of one client: its state record and scalar config from `config`.

    `config` is what the worker decoded from the client's message: scalars, and each
    per-client array record as a dict of tensors (keyed as the model's state dict).
    """
    config = config or {}
    state = config.get(objective.state_key) if objective.state_key else None
    scalars = {k: v for k, v in config.items() if isinstance(v, int | float | bool)}
    return Context(global_params, dict(state) if state else {}, scalars)
