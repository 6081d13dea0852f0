"""PrivacyEvent: one type from the plan, through a client's reply, to the ledger."""

from __future__ import annotations

import pytest

from fedsim.privacy import PrivacyError, PrivacyEvent
from fedsim.privacy.events import EVENT_KEYS
from fedsim.privacy.plan import participation_plan
from fedsim.privacy.records import LINE_KEYS
from fedsim.protocol import ClientOutcome, pack_reply, unpack_reply

EVENT = PrivacyEvent(
    noise_multiplier=1.1, sample_rate=0.05, steps=20, max_grad_norm=1.0, delta=1e-5
)


def test_the_plan_produces_a_privacy_event() -> None:
    plan = participation_plan(
        shard_size=200, batch_size=10, epochs=1, max_steps=None, rounds=3,
        noise_multiplier=1.1, target_epsilon=None, max_grad_norm=1.0, delta=1e-5,
        accountant="rdp",
    )  # fmt: skip
    assert plan.event(20) == EVENT
    assert isinstance(plan.event(20), PrivacyEvent)


def test_a_reply_carries_the_event_and_its_keys() -> None:
    reply = pack_reply([ClientOutcome(client=7, privacy=EVENT)], worker=1, seconds=0.5)
    assert dict(reply["c7/privacy"]) == EVENT.fields()
    (out,), _ = unpack_reply(reply)
    assert out.privacy == EVENT and isinstance(out.privacy, PrivacyEvent)


def test_fields_are_the_ledger_line_keys_in_order() -> None:
    assert list(EVENT.fields()) == list(EVENT_KEYS)
    assert tuple(k for k in LINE_KEYS if k in EVENT_KEYS) == EVENT_KEYS
    assert PrivacyEvent.from_fields({**EVENT.fields(), "round": 3}) == EVENT


def test_from_fields_refuses_missing_and_out_of_range_fields() -> None:
    fields = EVENT.fields()
    del fields["steps"]
    with pytest.raises(PrivacyError, match="steps"):
        PrivacyEvent.from_fields(fields)
    with pytest.raises(PrivacyError, match="sample_rate"):
        PrivacyEvent.from_fields({**EVENT.fields(), "sample_rate": 1.5})
