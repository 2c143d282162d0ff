"""PubSubStream and the delivered-event allocation, against the emulator's Pub/Sub API: the allocation watch
reads `allocation_exhausted` from either transport (one port), so the Pub/Sub stream must set it when the org
refuses delivery for the allocation, and clear it once events flow again."""

from __future__ import annotations

from sfclient_support import Control
from test_pubsub_subscriber import Consumer, Person, _open_streams, _stream, _until, emulator, person

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator
from bridge.records.inbound import SalesforceChange, WindowLost
from bridge.salesforce.auth import TokenManager

__all__ = ["emulator", "person"]


async def test_a_used_up_allocation_is_reported_and_cleared_when_events_flow_again(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """With the day's delivered events used up the org ends every Subscribe call; the stream says the
    allocation is exhausted (as CometD's does). Once the allocation is back, the next call (which the org no
    longer refuses) clears it, in a quiet org too, and a person's change is delivered."""
    limit = 10_000  # the default org's daily delivered-event allocation (default_org.toml)
    stream = _stream(emulator, tokens, settings)
    consumer = Consumer(stream)
    try:
        await _open_streams(control, 1)
        assert not stream.allocation_exhausted
        await control.post("streaming/delivered", {"used": limit})
        await _until(lambda: stream.allocation_exhausted)
        assert stream.rebuilds >= 1  # the refusal ended a call: the fault hit
        await control.post("streaming/delivered", {"used": 0})
        await _until(lambda: not stream.allocation_exhausted)
        await _open_streams(control, 1)
        event_id = await person.create("booking-after-reset")
        (change,) = await consumer.take(1)
        while isinstance(change, WindowLost):  # the channel has no id: each new call reports what it skips
            (change,) = await consumer.take(1)
    finally:
        await consumer.stop()
    assert isinstance(change, SalesforceChange) and change.record_ids == (event_id,)
