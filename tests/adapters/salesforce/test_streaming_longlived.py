"""A long-lived change stream: kept while quiet, repaired when a channel silently drops, over a private CA.

Defects 2, 9 and 13 of issue 11, against the emulator's Streaming API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from sfclient_support import Control, password_settings
from test_streaming import (
    EVENTS,
    FAST,
    RECEIVE_BOUND_SECONDS,
    _next,
    _next_change,
    _person_creates_event,
    _subscribed,
    emulator,
)

from bridge.config import SalesforceSettings
from bridge.emulator.server import start_emulator
from bridge.records.inbound import Heartbeat, ReplayPosition, SalesforceChange, WindowLost
from bridge.salesforce.auth import TokenManager, make_ssl_context
from bridge.salesforce.cometd import connect_task as _connect_task
from bridge.salesforce.streaming import ChangeStream, StreamItem, StreamTiming

__all__ = ["emulator"]

# FAST's hang limit is stall_seconds * silence_factor = 25 s: an idle stream must outlive it untouched.
IDLE_SECONDS = 31.0


async def _next_change_after_idle(items: AsyncIterator[StreamItem]) -> SalesforceChange:
    """The next change, waiting through the idle period plus the usual receive bound."""
    async with asyncio.timeout(IDLE_SECONDS + RECEIVE_BOUND_SECONDS):
        item = await anext(items)
        while isinstance(item, Heartbeat):
            item = await anext(items)
    assert isinstance(item, SalesforceChange), item
    return item


async def _stop(items: AsyncIterator[StreamItem]) -> None:
    await items.aclose()  # type: ignore[attr-defined]


@pytest.mark.timeout(120)
async def test_an_idle_stream_is_not_rebuilt_and_logs_no_traceback(
    http: aiohttp.ClientSession,
    tokens: TokenManager,
    control: Control,
    settings: SalesforceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream with nothing to deliver for longer than the old silence limit keeps its one client (no
    rebuild, no asyncio traceback), and still delivers the next person's edit."""
    caplog.set_level(logging.WARNING)
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_next_change_after_idle(items))
        await _subscribed(control)
        await asyncio.sleep(IDLE_SECONDS)
        assert not consumer.done()
        assert stream.rebuilds == 0
        event_id = await _person_creates_event(http, tokens, control, "booking-idle")
        change = await consumer
    finally:
        await _stop(items)
    assert change.record_ids == (event_id,)
    assert stream.rebuilds == 0
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records]


async def test_a_closed_stream_leaves_no_traceback(
    tokens: TokenManager, control: Control, settings: SalesforceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a stream while its long poll is pending cancels the connect quietly (no asyncio traceback)."""
    caplog.set_level(logging.WARNING)
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    consumer = asyncio.ensure_future(_next_change(items))
    await _subscribed(control)
    await asyncio.sleep(0.3)  # a connect request is in flight
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    await _stop(items)
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records]


# Production pacing (60 s before an unconnected transport is rebuilt), checked often: only the subscription
# check can repair a dropped channel within the receive bound.
PRODUCTION = replace(StreamTiming(), check_seconds=0.5, backoff_base_seconds=0.05, backoff_max_seconds=0.2)


@pytest.mark.timeout(120)
async def test_a_channel_dropped_by_a_failed_resubscribe_is_noticed_and_rebuilt(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """With 1 s of latency on /cometd, the client forgotten, and its successor forgotten right after its
    handshake, aiocometd's re-subscription inside /meta/connect fails and drops the channel while the
    transport says CONNECTED; the stream notices the missing channel and rebuilds, resubscribing from the
    committed id: the edit made meanwhile is delivered."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=PRODUCTION)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        await _person_creates_event(http, tokens, control, "booking-before")
        before = await consumer
        assert before.replay_id is not None
        stream.committed(EVENTS, before.replay_id)  # as the consumer does after its ledger commit
        consumer = asyncio.ensure_future(_next_change(items))
        await control.fault(path="^/cometd/", latency_ms=1000)
        first = (await control.post("streaming/forget-clients"))["forgotten"]
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            # The re-handshaken client, forgotten before its connect-with-subscribe (1 s late) is answered.
            while True:
                if (await control.post("streaming/forget-clients"))["forgotten"]:
                    break
                await asyncio.sleep(0.1)
        event_id = await _person_creates_event(http, tokens, control, "booking-forgotten")
        change = await consumer
    finally:
        await _stop(items)
    assert first == 1
    assert (await control.stats())["faults_fired"] >= 3  # the /cometd requests really were slowed
    assert change.record_ids == (event_id,)
    assert stream.rebuilds >= 1


async def test_stream_over_tls_trusts_the_configured_ca_bundle(tmp_path: Path) -> None:
    """With `salesforce.ca_bundle` naming a private CA, the stream connects over verified TLS and delivers."""
    running = await start_emulator(host="127.0.0.1", port=0, tls=True, ca_out=tmp_path / "ca.pem")
    try:
        assert running.ca_file is not None
        settings = password_settings(running.url, ca_bundle=str(running.ca_file))
        context = make_ssl_context(settings.ca_bundle)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as tls_http:
            tokens = TokenManager(tls_http, settings)
            control = Control(tls_http, running.url)
            stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST, ssl_context=context)
            items = stream.changes()
            try:
                consumer = asyncio.ensure_future(_next_change(items))
                await _subscribed(control)
                event_id = await _person_creates_event(tls_http, tokens, control, "booking-tls")
                change = await consumer
            finally:
                await _stop(items)
    finally:
        await running.stop()
    assert change.record_ids == (event_id,)
    assert stream.rebuilds == 0


async def test_a_replay_id_outside_retention_takes_new_events_only(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A purged replay id is reported as WindowLost and the channel resubscribed with -1: a change retained
    from before the subscription is not replayed (the consumer reconciles the window by change time)."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        await _person_creates_event(http, tokens, control, "booking-seen")
        seen = await consumer
    finally:
        await _stop(items)
    await control.post("streaming/purge", {"older_than_seconds": 0})
    await _person_creates_event(http, tokens, control, "booking-retained")  # retained, before the restart
    assert seen.replay_id is not None

    resumed = ChangeStream(
        tokens,
        settings,
        {EVENTS: ReplayPosition(seen.replay_id, seen.commit_time)},
        channels=[EVENTS],
        timing=FAST,
    )
    items = resumed.changes()
    try:
        lost = await _next(items)
        later = await _person_creates_event(http, tokens, control, "booking-later")
        change = await _next_change(items)
    finally:
        await _stop(items)
    assert lost == WindowLost(EVENTS, seen.commit_time)
    assert change.record_ids == (later,)


async def test_a_burst_of_events_does_not_look_like_a_hung_connect(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """Many messages in a row are no reason to rebuild: the hang check measures time, not loop turns."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    burst = 60  # more than FAST's 25 s hang limit in 0.5 s watchdog ticks
    try:
        first = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        created = [
            await _person_creates_event(http, tokens, control, f"booking-burst-{n}") for n in range(burst)
        ]
        received = [(await first).record_ids[0]]
        while len(received) < burst:
            received.append((await _next_change(items)).record_ids[0])
    finally:
        await _stop(items)
    assert received == created
    assert stream.rebuilds == 0


async def test_a_channel_without_replay_id_reports_how_far_it_has_seen_and_the_gap_after(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A quiet channel (no event, so no replay id) reports Heartbeats while live; subscribed again from that
    `-1;<time>` position (a restart), it reports the gap as WindowLost, since a change made meanwhile is
    not replayed by -1."""
    timing = replace(FAST, heartbeat_seconds=1.0)
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=timing)
    items = stream.changes()
    try:
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            beat = await anext(items)
    finally:
        await _stop(items)
    assert isinstance(beat, Heartbeat) and beat.channel == EVENTS
    await _person_creates_event(http, tokens, control, "booking-while-down")

    position = ReplayPosition(-1, beat.seen_until)
    resumed = ChangeStream(tokens, settings, {EVENTS: position}, channels=[EVENTS], timing=timing)
    items = resumed.changes()
    try:
        lost = await _next(items)
    finally:
        await _stop(items)
    assert lost == WindowLost(EVENTS, beat.seen_until, reason="resubscribed_without_replay_id")


async def test_a_connect_cancelled_at_shutdown_leaves_no_traceback(
    tokens: TokenManager, control: Control, settings: SalesforceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """When the daemon stops abruptly, the event loop's shutdown cancels the transport's pending long poll
    before the stream could close it: that cancellation is ignored quietly (no plain-text traceback)."""
    caplog.set_level(logging.WARNING)
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    consumer = asyncio.ensure_future(_next_change(items))
    try:
        await _subscribed(control)
        await asyncio.sleep(0.3)  # a connect request is in flight
        client = stream._client
        assert client is not None
        pending = _connect_task(client)
        assert pending is not None and not pending.done()
        pending.cancel()  # what asyncio.run does to every task left at shutdown
        await asyncio.sleep(0.1)
        complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert not complaints, complaints
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await _stop(items)


async def test_a_stopped_connect_loop_is_rebuilt(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A transport whose connect loop stopped (its long poll cancelled, nothing scheduled after it) still
    says CONNECTED: the stream notices that no connect follows and rebuilds, reports the gap (the channel has
    no replay id yet) and delivers again."""
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()

    async def gap_then_change() -> tuple[StreamItem, StreamItem]:
        return await _next(items), await _next(items)

    consumer = asyncio.ensure_future(gap_then_change())
    try:
        await _subscribed(control)
        await asyncio.sleep(0.3)
        client = stream._client
        assert client is not None
        pending = _connect_task(client)
        assert pending is not None
        pending.cancel()
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            while True:
                if stream.rebuilds >= 1 and stream._client is not None:
                    break
                await asyncio.sleep(0.1)
        await _subscribed(control)
        event_id = await _person_creates_event(http, tokens, control, "booking-after-stop")
        gap, change = await consumer
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await _stop(items)
    assert isinstance(gap, WindowLost) and gap.reason == "resubscribed_without_replay_id"
    assert isinstance(change, SalesforceChange) and change.record_ids == (event_id,)
