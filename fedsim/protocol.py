"""How a cohort of virtual clients travels in one Flower message, and back.

Request (server -> worker), one RecordDict per cohort:
  "fedsim.cohort"   ConfigRecord: clients, content index per client, round, kind, scenario
  "<j>/<key>"       the records of the j-th distinct content among the clients' messages;
                    a record shared by every client (the global model) is sent once.
Reply (worker -> server):
  "fedsim.cohort"   ConfigRecord: clients, worker pid, seconds
  "c<id>/arrays"    ArrayRecord of client id's update (train only)
  "c<id>/metrics"   MetricRecord (num-examples, losses, accuracy)
  "c<id>/privacy"   ConfigRecord: the client's privacy event (DP runs)
  "c<id>/error"     ConfigRecord: reason and steps trained before the failure
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

COHORT_KEY = "fedsim.cohort"

Record = ArrayRecord | ConfigRecord | MetricRecord


@dataclass
class CohortRequest:
    """What a worker needs to run one cohort."""

    round: int
    kind: str  # "train" | "evaluate"
    scenario_json: str
    clients: list[int]
    contents: list[dict[str, Record]]  # distinct contents
    content_of: list[int]  # index into contents, per client

    def content_for(self, position: int) -> dict[str, Record]:
        return self.contents[self.content_of[position]]


@dataclass
class ClientOutcome:
    """One client's part of a cohort reply."""

    client: int
    arrays: ArrayRecord | None = None
    metrics: MetricRecord | None = None
    privacy: dict[str, Any] | None = None
    error: str | None = None
    steps_before_error: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def pack_request(
    *,
    round: int,
    kind: str,
    scenario_json: str,
    clients: list[int],
    contents: list[RecordDict],
) -> RecordDict:
    """Pack the per-client contents of one cohort, sending shared records once."""
    distinct: dict[int, int] = {}
    content_of: list[int] = []
    rd = RecordDict()
    for content in contents:
        # Flower strategies hand every client the same RecordDict object when the
        # content is shared (the global model): identity finds what to send once.
        if id(content) not in distinct:
            j = distinct[id(content)] = len(distinct)
            for key, record in content.items():
                rd[f"{j}/{key}"] = record
        content_of.append(distinct[id(content)])
    rd[COHORT_KEY] = ConfigRecord(
        {
            "round": round,
            "kind": kind,
            "scenario": scenario_json,
            "clients": [int(c) for c in clients],
            "content_of": content_of,
        }
    )
    return rd


def unpack_request(rd: RecordDict) -> CohortRequest:
    """Inverse of `pack_request` (runs on the worker)."""
    meta = rd[COHORT_KEY]
    content_of = [int(j) for j in meta["content_of"]]
    contents: list[dict[str, Record]] = [{} for _ in range(max(content_of, default=-1) + 1)]
    for key, record in rd.items():
        if key == COHORT_KEY:
            continue
        j, _, name = key.partition("/")
        contents[int(j)][name] = record
    return CohortRequest(
        round=int(meta["round"]),
        kind=str(meta["kind"]),
        scenario_json=str(meta["scenario"]),
        clients=[int(c) for c in meta["clients"]],
        contents=contents,
        content_of=content_of,
    )


def pack_reply(outcomes: list[ClientOutcome], *, worker: int, seconds: float) -> RecordDict:
    """Pack the outcomes of a cohort into one reply."""
    rd = RecordDict()
    for out in outcomes:
        prefix = f"c{out.client}/"
        if out.arrays is not None:
            rd[prefix + "arrays"] = out.arrays
        if out.metrics is not None:
            rd[prefix + "metrics"] = out.metrics
        if out.privacy is not None:
            rd[prefix + "privacy"] = ConfigRecord(out.privacy)
        if out.error is not None:
            rd[prefix + "error"] = ConfigRecord(
                {"reason": out.error, "steps": int(out.steps_before_error)}
            )
        if out.extra:
            rd[prefix + "extra"] = ConfigRecord(out.extra)
    rd[COHORT_KEY] = ConfigRecord(
        {"clients": [o.client for o in outcomes], "worker": int(worker), "seconds": seconds}
    )
    return rd


def unpack_reply(rd: RecordDict) -> tuple[list[ClientOutcome], dict[str, Any]]:
    """Inverse of `pack_reply` (runs on the server)."""
    meta = rd[COHORT_KEY]
    outcomes = []
    for cid in meta["clients"]:
        prefix = f"c{int(cid)}/"
        out = ClientOutcome(client=int(cid))
        if prefix + "arrays" in rd:
            out.arrays = rd[prefix + "arrays"]
        if prefix + "metrics" in rd:
            out.metrics = rd[prefix + "metrics"]
        if prefix + "privacy" in rd:
            out.privacy = dict(rd[prefix + "privacy"])
        if prefix + "error" in rd:
            err = rd[prefix + "error"]
            out.error = str(err["reason"])
            out.steps_before_error = int(err["steps"])
        if prefix + "extra" in rd:
            out.extra = dict(rd[prefix + "extra"])
        outcomes.append(out)
    return outcomes, {"worker": int(meta["worker"]), "seconds": float(meta["seconds"])}
