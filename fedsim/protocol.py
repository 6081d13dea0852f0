"""How a cohort of virtual clients travels in one Flower message, and back.

Request (server -> worker), one RecordDict per cohort:
  "fedsim.cohort"   ConfigRecord: clients, round, kind, scenario, and per client its
                    layout "key=i;key2=j" naming which records it was addressed
  "r<i>"            each distinct record once: the global model shared by every client is
                    sent once per cohort, a per-client record (SCAFFOLD) once per client.
Reply (worker -> server):
  "fedsim.cohort"   ConfigRecord: clients, worker pid, Ray node id, seconds
  "c<id>/arrays"    ArrayRecord of client id's update (train only)
  "c<id>/metrics"   MetricRecord (num-examples, losses, accuracy)
  "c<id>/privacy"   ConfigRecord: the privacy event the client's DP optimizer ran (DP
                    runs), the fields of `fedsim.privacy.events.PrivacyEvent`
  "c<id>/error"     ConfigRecord: reason and steps trained before the failure
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedsim.privacy.events import PrivacyEvent

COHORT_KEY = "fedsim.cohort"

#: the engine fields of summary.json, filled by the client side's engine choice
#: (`EngineChoice.summary`), None while no engine was chosen
ENGINE_FIELDS = ("engine", "engine_reason", "vector_clients")

#: FedDyn's keys: alpha in the client's config record, its state g_i as an ArrayRecord
FEDDYN_ALPHA = "feddyn-alpha"
FEDDYN_STATE = "feddyn-grad"

Record = ArrayRecord | ConfigRecord | MetricRecord


@dataclass
class CohortRequest:
    """What a worker needs to run one cohort."""

    round: int
    kind: str  # "train" | "evaluate"
    scenario_json: str
    clients: list[int]
    layouts: list[dict[str, int]]  # per client: record key -> index into records
    records: list[Record]

    def content_for(self, position: int) -> dict[str, Record]:
        """The records the strategy addressed to the client at `position`."""
        return {key: self.records[i] for key, i in self.layouts[position].items()}

    def record_index(self, position: int, key: str) -> int:
        """Index of a client's record (equal for clients sharing the same object)."""
        return self.layouts[position][key]


@dataclass
class ClientOutcome:
    """One client's part of a cohort reply."""

    client: int
    arrays: ArrayRecord | None = None
    metrics: MetricRecord | None = None
    privacy: PrivacyEvent | None = None  # what the client's DP-SGD spent (DP runs)
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
    """Pack the per-client contents of one cohort, each distinct record once.

    Flower strategies hand every client the same record objects when they are
    shared (the global model), and their own objects when they differ (e.g. a
    SCAFFOLD correction): record identity decides what is sent once and what is
    sent per client.
    """
    index: dict[int, int] = {}
    layouts: list[str] = []
    rd = RecordDict()
    for content in contents:
        parts = []
        for key, record in content.items():
            if "=" in key or ";" in key:
                raise ValueError(f"record key {key!r} may not contain '=' or ';'")
            if id(record) not in index:
                i = index[id(record)] = len(index)
                rd[f"r{i}"] = record
            parts.append(f"{key}={index[id(record)]}")
        layouts.append(";".join(parts))
    rd[COHORT_KEY] = ConfigRecord(
        {
            "round": round,
            "kind": kind,
            "scenario": scenario_json,
            "clients": [int(c) for c in clients],
            "layouts": layouts,
        }
    )
    return rd


def unpack_request(rd: RecordDict) -> CohortRequest:
    """Inverse of `pack_request` (runs on the worker)."""
    meta = rd[COHORT_KEY]
    records = [rd[f"r{i}"] for i in range(len(rd) - 1)]
    layouts = []
    for text in meta["layouts"]:
        layout = {}
        for part in str(text).split(";") if text else []:
            key, _, i = part.partition("=")
            layout[key] = int(i)
        layouts.append(layout)
    return CohortRequest(
        round=int(meta["round"]),
        kind=str(meta["kind"]),
        scenario_json=str(meta["scenario"]),
        clients=[int(c) for c in meta["clients"]],
        layouts=layouts,
        records=records,
    )


def pack_reply(
    outcomes: list[ClientOutcome],
    *,
    worker: int,
    seconds: float,
    node: str = "local",
    actor: str = "",
) -> RecordDict:
    """Pack the outcomes of a cohort into one reply (`actor`: the Ray actor id, if any)."""
    rd = RecordDict()
    for out in outcomes:
        prefix = f"c{out.client}/"
        if out.arrays is not None:
            rd[prefix + "arrays"] = out.arrays
        if out.metrics is not None:
            rd[prefix + "metrics"] = out.metrics
        if out.privacy is not None:
            rd[prefix + "privacy"] = ConfigRecord(out.privacy.fields())
        if out.error is not None:
            rd[prefix + "error"] = ConfigRecord(
                {"reason": out.error, "steps": int(out.steps_before_error)}
            )
        if out.extra:
            rd[prefix + "extra"] = ConfigRecord(out.extra)
    rd[COHORT_KEY] = ConfigRecord(
        {
            "clients": [o.client for o in outcomes],
            "worker": int(worker),
            "node": node,
            "actor": actor,
            "seconds": seconds,
        }
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
            out.privacy = PrivacyEvent.from_fields(rd[prefix + "privacy"])
        if prefix + "error" in rd:
            err = rd[prefix + "error"]
            out.error = str(err["reason"])
            out.steps_before_error = int(err["steps"])
        if prefix + "extra" in rd:
            out.extra = dict(rd[prefix + "extra"])
        outcomes.append(out)
    info = {
        "worker": int(meta["worker"]),
        "node": str(meta.get("node", "local")),
        "actor": str(meta.get("actor", "")),
        "seconds": float(meta["seconds"]),
    }
    return outcomes, info
