"""VirtualClientGrid: Flower strategies see clients, Ray workers see cohorts.

Flower's simulation engine costs a Ray task, serialisation and polling per message.
This grid keeps Flower's strategies unchanged and changes what a node is: the
strategy addresses one node per virtual client; the grid packs the messages of a
round into one message per cohort of K clients for a real supernode, and unpacks
each cohort reply into one `Message(reply_to=original)` per client.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedsim.errors import FedsimError
from fedsim.failures import short_reason
from fedsim.protocol import ClientOutcome, pack_request, unpack_reply

# Error code Flower uses for an exception raised inside a ClientApp.
CLIENT_ERROR_CODE = 3


@dataclass
class RoundReport:
    """What the grid saw in one exchange, for the ledger and the metrics.

    `outcomes` holds one entry per client and cohort attempt: a cohort whose worker
    failed and that was sent again appears once with `extra["resent"]` (it may have
    trained: the ledger charges it) and once more with the outcome of the re-send.
    """

    kind: str
    round: int
    outcomes: list[ClientOutcome]
    cohorts: int
    cohort_errors: list[str]
    nodes: list[str] = field(default_factory=list)  # Ray node of each answered cohort
    cohorts_resent: int = 0  # cohort attempts sent again after their worker failed
    worker_restarts: int = 0  # workers first seen in a new process (restarted actors)


# Cohorts refused because their worker was restarting are sent again (with backoff).
RETRIES = 3
RETRY_WAIT = 1.0

# How Flower's engine reports an exception raised while a worker ran a message:
# Error(code=UNKNOWN, reason=str(type(exc)) + ":<'" + str(exc) + "'>").
_FLOWER_EXCEPTION = re.compile(r"^<class '(?P<qualname>[A-Za-z_][\w.]*)'>:<'")


def worker_error(error: Error) -> type[BaseException] | None:
    """The Ray actor error class behind a cohort's error reply, or None for any other error.

    Flower passes only the exception's class name and text; the class is looked up
    in `ray.exceptions` and checked with issubclass against `RayActorError` (worker
    process dead or restarting), not matched as text.
    """
    if error.code != ErrorCode.UNKNOWN:
        return None
    match = _FLOWER_EXCEPTION.match(error.reason or "")
    if match is None:
        return None
    module, _, name = match["qualname"].rpartition(".")
    if module != "ray.exceptions":
        return None
    import ray.exceptions

    cls = getattr(ray.exceptions, name, None)
    if isinstance(cls, type) and issubclass(cls, ray.exceptions.RayActorError):
        return cls
    return None


def worker_restarting(error: Error) -> bool:
    """The cohort's worker was unavailable (restarting after a crash): worth sending again.

    Ray's ActorUnavailableError says the task "may or may not have executed", so the
    lost attempt is still charged for privacy (RoundReport); only the retry is safe.
    """
    import ray.exceptions

    cls = worker_error(error)
    return cls is not None and issubclass(cls, ray.exceptions.ActorUnavailableError)


class RunStopped(FedsimError, RuntimeError):
    """A signal stopped the run while a round was in flight."""


def cohort_size(n_clients: int, workers: int, setting: int | str, chunk: int = 1) -> int:
    """K: clients per message. 'auto' gives each worker one cohort per round.

    K is rounded up to a multiple of `chunk` (the vectorised engine's clients per
    chunk): cohorts then start at multiples of the chunk in the round's sorted
    clients, so every chunk holds the same clients whatever K and the worker count.
    """
    k = max(1, int(setting)) if setting != "auto" else math.ceil(n_clients / max(1, workers))
    return max(1, chunk * math.ceil(k / max(1, chunk)))


class VirtualClientGrid(Grid):
    """A Grid whose nodes are virtual clients, batched onto the nodes of `inner`.

    Args:
        inner: the real grid of Flower's simulation engine.
        population: number of virtual clients; their node ids are 0..population-1.
        workers: number of Ray workers (for automatic K).
        clients_per_message: K, or "auto".
        scenario_json: the resolved scenario, sent with each cohort so workers can
            build (and cache) everything from it.
        available: optional callable giving the clients that may be sampled now
            (e.g. those within their privacy budget); default all.
        poll_interval: seconds between polls for cohort replies.
        chunk: clients per vectorised chunk (1 for the sequential engine); K is a
            multiple of it.
        stop_event: set on SIGINT/SIGTERM: stop waiting for cohort replies
            (`RunStopped`).
    """

    def __init__(
        self,
        inner: Grid,
        *,
        population: int,
        workers: int,
        clients_per_message: int | str,
        scenario_json: str,
        available: Callable[[], Sequence[int]] | None = None,
        poll_interval: float = 0.005,
        chunk: int = 1,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.inner = inner
        self.chunk = chunk
        self.population = population
        self.workers = workers
        self.clients_per_message = clients_per_message
        self.scenario_json = scenario_json
        self.available = available
        self.poll_interval = poll_interval
        self.current_round = 0
        self.stop_event = stop_event
        self._pending: dict[str, Message] = {}
        self._replies: dict[str, Message] = {}
        self._worker_pids: dict[str, int] = {}  # Ray actor id -> its process id

    # ------------------------------------------------------------ Grid basics
    def set_run(self, run) -> None:  # type: ignore[no-untyped-def]
        self.inner.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self.inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Virtual client ids that may be sampled, in ascending order."""
        if self.available is not None:
            return sorted(int(c) for c in self.available())
        return list(range(self.population))

    def real_node_ids(self) -> list[int]:
        return sorted(self.inner.get_node_ids())

    # ------------------------------------------------------------ messaging
    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Register messages; they are sent as cohorts by `pull_messages`/`send_and_receive`."""
        ids = []
        for msg in messages:
            msg_id = str(uuid.uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            self._pending[msg_id] = msg
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = [m for m in message_ids]
        to_send = [self._pending.pop(m) for m in wanted if m in self._pending]
        if to_send:
            for reply in self._exchange(to_send, timeout=None)[0]:
                self._replies[reply.metadata.reply_to_message_id] = reply
        return [self._replies.pop(m) for m in wanted if m in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send the messages as cohorts and return one reply per message, by client id.

        Flower's Grid API, for strategies that exchange messages themselves; the
        round loop uses `exchange`, which also returns what happened to each client.
        """
        return self.exchange(messages, timeout=timeout)[0]

    def exchange(
        self,
        messages: Iterable[Message],
        *,
        round: int | None = None,
        timeout: float | None = None,
    ) -> tuple[list[Message], RoundReport]:
        """`send_and_receive` with the round's report: the replies and every outcome.

        Args:
            messages: the strategy's messages, one per virtual client.
            round: the server round they belong to (default: the current one).
            timeout: seconds to wait for the cohorts' replies.
        """
        if round is not None:
            self.current_round = round
        msgs = list(messages)
        for msg in msgs:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        return self._exchange(msgs, timeout=timeout)

    def _exchange(
        self, msgs: list[Message], timeout: float | None
    ) -> tuple[list[Message], RoundReport]:
        if not msgs:
            return [], RoundReport("none", self.current_round, [], 0, [])
        # Fixed order by client id: the strategy then sums updates in the same order
        # whatever K, worker count or scheduling, so results are bit-identical.
        msgs.sort(key=lambda m: m.metadata.dst_node_id)
        kind = "train" if msgs[0].metadata.message_type.startswith("train") else "evaluate"
        k = cohort_size(len(msgs), self.workers, self.clients_per_message, self.chunk)
        cohorts = [msgs[i : i + k] for i in range(0, len(msgs), k)]
        nodes = self.real_node_ids()
        if len(cohorts) > len(nodes):
            raise RuntimeError(
                f"{len(cohorts)} cohorts but only {len(nodes)} supernodes; "
                "the simulation was started with too few supernodes"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(zip(cohorts, nodes, strict=False))
        by_id, replies, lost, resent = self._send_with_retries(kind, pending, nodes, deadline)
        return self._unpack(kind, by_id, replies, len(cohorts), lost, resent)

    def _send_with_retries(
        self,
        kind: str,
        pending: list[tuple[list[Message], int]],
        nodes: list[int],
        deadline: float | None,
    ) -> tuple[dict[str, list[Message]], dict[str, Message], list[ClientOutcome], int]:
        """Send the cohorts; send again those whose worker was restarting.

        Returns the cohorts by message id, their last replies, one outcome per client
        of each attempt that was sent again (it may have run, Ray cannot tell: it stays
        on record as a failure and the ledger charges it), and the re-sends' count.
        """
        by_id: dict[str, list[Message]] = {}
        replies: dict[str, Message] = {}
        lost: list[ClientOutcome] = []
        resent = 0
        for attempt in range(RETRIES + 1):
            sent = self._send(kind, pending)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            got = self._collect(set(sent), left)
            by_id.update(sent)
            replies.update(got)
            again = [
                mid
                for mid in sent
                if mid in got and got[mid].has_error() and worker_restarting(got[mid].error)
            ]
            if not again or attempt == RETRIES:
                break
            for mid in again:
                reason = replies.pop(mid).error.reason
                for msg in by_id.pop(mid):
                    lost.append(
                        ClientOutcome(
                            client=int(msg.metadata.dst_node_id),
                            error=f"cohort failed: {reason} (sent again)",
                            extra={"resent": 1},
                        )
                    )
            resent += len(again)
            time.sleep(RETRY_WAIT * (attempt + 1))
            pending = [(sent[mid], nodes[i % len(nodes)]) for i, mid in enumerate(again)]
        return by_id, replies, lost, resent

    def _send(
        self, kind: str, pending: list[tuple[list[Message], int]]
    ) -> dict[str, list[Message]]:
        outgoing = []
        for cohort, node in pending:
            content = pack_request(
                round=self.current_round,
                kind=kind,
                scenario_json=self.scenario_json,
                clients=[m.metadata.dst_node_id for m in cohort],
                contents=[m.content for m in cohort],
            )
            outgoing.append(
                Message(
                    content, node, cohorts_message_type(cohort[0]), group_id=str(self.current_round)
                )
            )
        sent_ids = list(self.inner.push_messages(outgoing))
        return dict(zip(sent_ids, [c for c, _ in pending], strict=True))

    def _collect(self, ids: set[str], timeout: float | None) -> dict[str, Message]:
        deadline = None if timeout is None else time.monotonic() + timeout
        got: dict[str, Message] = {}
        while ids:
            for reply in self.inner.pull_messages(ids):
                got[reply.metadata.reply_to_message_id] = reply
                ids.discard(reply.metadata.reply_to_message_id)
            if not ids or (deadline is not None and time.monotonic() > deadline):
                break
            if self.stop_event is not None and self.stop_event.is_set():
                raise RunStopped("stopped by a signal while waiting for cohort replies")
            time.sleep(self.poll_interval)
        return got

    def _unpack(
        self,
        kind: str,
        by_id: dict[str, list[Message]],
        replies: dict[str, Message],
        n_cohorts: int,
        lost: list[ClientOutcome],
        resent: int,
    ) -> tuple[list[Message], RoundReport]:
        out: list[Message] = []
        # Lost attempts first: with the stable sort below, a client's lost attempt
        # precedes its re-sent outcome (the ledger's lines keep that order).
        outcomes: list[ClientOutcome] = list(lost)
        cohort_errors: list[str] = []
        nodes: list[str] = []
        restarts = 0
        for cohort_id, cohort in by_id.items():
            reply = replies.get(cohort_id)
            if reply is None or reply.has_error():
                reason = (
                    "no reply before the round timeout" if reply is None else reply.error.reason
                )
                cohort_errors.append(reason)
                _answer_failed_cohort(cohort, reason, outcomes, out)
                continue
            client_outcomes, info = unpack_reply(reply.content)
            nodes.append(info["node"])
            restarts += self._note_worker(info)
            _answer_cohort(cohort, client_outcomes, outcomes, out)
        outcomes.sort(key=lambda o: o.client)
        out.sort(key=lambda m: m.metadata.src_node_id)
        report = RoundReport(
            kind,
            self.current_round,
            outcomes,
            n_cohorts,
            cohort_errors,
            nodes,
            cohorts_resent=resent,
            worker_restarts=restarts,
        )
        return out, report

    def _note_worker(self, info: dict[str, Any]) -> int:
        """1 if this reply's worker (Ray actor) now runs in a new process: it restarted."""
        actor, pid = str(info.get("actor") or ""), int(info["worker"])
        if not actor:
            return 0
        before = self._worker_pids.get(actor)
        self._worker_pids[actor] = pid
        return int(before is not None and before != pid)


def cohorts_message_type(msg: Message) -> str:
    """A cohort is routed like its clients' messages (train / evaluate)."""
    return msg.metadata.message_type


def _answer_failed_cohort(
    cohort: list[Message], reason: str, outcomes: list[ClientOutcome], out: list[Message]
) -> None:
    """Append an error outcome and an error reply for each client of a failed cohort."""
    # The ledger and metrics keep one line; errors.log the full reason.
    short = f"cohort failed: {short_reason(reason)}"
    for msg in cohort:
        cid = int(msg.metadata.dst_node_id)
        outcomes.append(ClientOutcome(client=cid, error=short, extra={"cohort_failed": 1}))
        out.append(Message(Error(code=CLIENT_ERROR_CODE, reason=reason), reply_to=msg))


def _answer_cohort(
    cohort: list[Message],
    client_outcomes: list[ClientOutcome],
    outcomes: list[ClientOutcome],
    out: list[Message],
) -> None:
    """Append each client's outcome and its reply (an error reply for a failed client)."""
    by_client = {o.client: o for o in client_outcomes}
    for msg in cohort:
        cid = int(msg.metadata.dst_node_id)
        o = by_client.get(cid) or ClientOutcome(client=cid, error="missing from reply")
        outcomes.append(o)
        if o.error is not None:
            out.append(Message(Error(code=CLIENT_ERROR_CODE, reason=o.error), reply_to=msg))
            continue
        content = RecordDict()
        if o.arrays is not None:
            content["arrays"] = o.arrays
        if o.metrics is not None:
            content["metrics"] = o.metrics
        out.append(Message(content, reply_to=msg))
