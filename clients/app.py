"""The cohort ClientApp: one Flower message trains (or evaluates) K virtual clients."""

from __future__ import annotations

import os
import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedsim.clients.worker import worker_state
from fedsim.protocol import pack_reply, unpack_request

app = ClientApp()


def handle_cohort(msg: Message) -> Message:
    """Unpack a cohort request, run its clients on this worker, reply with K outcomes."""
    start = time.perf_counter()
    req = unpack_request(msg.content)
    outcomes = worker_state(req.scenario_json).run_cohort(req)
    node, actor = _ray_identity()
    reply = pack_reply(
        outcomes,
        worker=os.getpid(),
        node=node,
        actor=actor,
        seconds=time.perf_counter() - start,
    )
    return Message(reply, reply_to=msg)


def _ray_identity() -> tuple[str, str]:
    """The Ray node and actor this worker runs as (("local", "") outside Ray).

    The node says where the work ran; the actor id, with the process id, lets the
    server notice a worker that Ray restarted after its process died.
    """
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return str(ctx.get_node_id()), str(ctx.get_actor_id() or "")
    except Exception:  # noqa: BLE001 - bookkeeping only; never fail a cohort for it
        pass
    return "local", ""


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the cohort's clients."""
    return handle_cohort(msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global model on the cohort's clients' held-out data."""
    return handle_cohort(msg)
