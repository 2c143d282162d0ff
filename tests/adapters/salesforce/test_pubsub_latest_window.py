"""PubSubStream against the emulator's Pub/Sub API: a channel that has no replay id yet can only be subscribed
at LATEST, so a call that ends before anything gave it an id must not let the next LATEST call skip silently
what was published in between (the chaos scenario lost a person's edit this way: a first run's call cut by
a refused token, then LATEST again)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sfclient_support import Control
from test_pubsub_subscriber import EVENTS, FAST, Consumer, Person, _open_streams, _stream, emulator, person

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator
from bridge.records.inbound import WindowLost
from bridge.salesforce.auth import TokenManager

__all__ = ["emulator", "person"]


async def test_a_call_cut_before_the_channel_had_an_id_reports_the_window_it_skips(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """No stored position, so the first call is at LATEST; the server cuts it before any event or keepalive
    named a replay id, and a person creates an Event while the stream backs off. The next call is at LATEST
    again and cannot deliver that Event: the stream reports the window (WindowLost from before the first
    call, which covers the Event), then delivers what comes after."""
    slow_retry = replace(FAST, backoff_base_seconds=1.0, backoff_max_seconds=1.0)
    stream = _stream(emulator, tokens, settings, timing=slow_retry)
    consumer = Consumer(stream)
    try:
        await _open_streams(control, 1)
        assert (await control.post("pubsub/cut"))["cut"] == 1
        made_at = datetime.now(UTC)
        await person.create("booking-while-cut")
        assert (await control.get("pubsub/stats"))["open_streams"] == 0  # still backing off
        lost = await consumer.take(1)
        await _open_streams(control, 1)
        after = await person.create("booking-after")
        got = await consumer.changes(1)
    finally:
        await consumer.stop()
    assert len(lost) == 1 and isinstance(lost[0], WindowLost), lost
    window = lost[0]
    assert window.channel == EVENTS and window.reason == "resubscribed_without_replay_id"
    assert window.since is not None and window.since <= made_at
    assert got[0].record_ids == (after,) and stream.rebuilds == 1
