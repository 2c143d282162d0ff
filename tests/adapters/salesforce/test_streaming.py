"""ChangeStream (aiosfstream-ng with the bridge's work-arounds) against the emulator's Streaming API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sfclient_support import Control

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.records.inbound import (
    ChangeEntity,
    ChangeType,
    Heartbeat,
    ReplayPosition,
    SalesforceChange,
    WindowLost,
)
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.streaming import ChangeStream, StreamItem, StreamTiming

EVENTS = "/data/EventChangeEvent"
# A liveness bound for one event: far above the 1-second long poll, far below the test timeout.
RECEIVE_BOUND_SECONDS = 30
FAST = StreamTiming(check_seconds=0.5, stall_seconds=5.0, backoff_base_seconds=0.05, backoff_max_seconds=0.2)


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    """The default org with 1-second long polls, serving in this test's loop."""
    text = resources.files("bridge.emulator").joinpath("default_org.toml").read_text("utf-8")
    org = tmp_path / "org.toml"
    org.write_text(text.replace("long_poll_timeout_seconds = 110.0", "long_poll_timeout_seconds = 1.0"))
    running = await start_emulator(host="127.0.0.1", port=0, org_file=org)
    try:
        yield running
    finally:
        await running.stop()


async def _person_creates_event(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, booking_id: str
) -> str:
    """An Event created through plain REST as a person (no client name); returns its id."""
    token = await tokens.get()
    person = await control.first_id("User", Username="owner1@example.com")
    start = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)
    body = {
        "Subject": "Call",
        "StartDateTime": start.isoformat(),
        "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
        "Scheduling_Booking_Id__c": booking_id,
    }
    headers = {"Authorization": token.authorization(), "X-Emulator-User": person}
    url = f"{token.instance_url}/services/data/v60.0/sobjects/Event/"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 201, await response.text()
        created: dict[str, Any] = await response.json()
    return str(created["id"])


async def _next(items: AsyncIterator[StreamItem]) -> StreamItem:
    """The next change or lost window (heartbeats of a channel without a replay id are skipped)."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while True:
            item = await anext(items)
            if not isinstance(item, Heartbeat):
                return item


async def _next_change(items: AsyncIterator[StreamItem]) -> SalesforceChange:
    item = await _next(items)
    assert isinstance(item, SalesforceChange), item
    return item


async def _subscribed(control: Control) -> None:
    """Wait until the stream's client is connected (subscriptions go out with the first connect)."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while True:
            if (await control.stats())["streaming_clients"] >= 1:
                return
            await asyncio.sleep(0.05)


async def test_stream_uses_the_configured_api_version_and_decodes_events(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """The CometD URL carries salesforce.api_version (never the library's 45.0); a person's Event arrives
    decoded with its header and values."""
    await control.fault(path="^/cometd/45", status=500)
    stream = ChangeStream(tokens, replace(settings, api_version="58.0"), {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        event_id = await _person_creates_event(http, tokens, control, "booking-1")
        change = await consumer
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert (await control.stats())["faults_fired"] == 0
    assert (change.entity, change.change_type, change.record_ids) == (
        ChangeEntity.EVENT,
        ChangeType.CREATE,
        (event_id,),
    )
    assert change.external_id == "booking-1"
    assert change.start_at == datetime(2031, 3, 4, 10, 0, tzinfo=UTC)
    assert "client=" not in change.change_origin and change.replay_id is not None


async def test_stream_is_rebuilt_after_failed_opens(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """Handshakes failing with HTTP 503 make the stream rebuild its client with backoff until it connects."""
    await control.fault(path="^/cometd/", status=503, times=3)
    stream = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        event_id = await _person_creates_event(http, tokens, control, "booking-2")
        change = await consumer
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert change.record_ids == (event_id,)
    assert stream.rebuilds == 3
    assert (await control.stats())["faults_fired"] == 3


async def test_replay_id_outside_retention_reports_the_lost_window(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A purged replay id yields WindowLost (with the stored commit time) and the channel replays from -2."""
    first = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = first.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        await _person_creates_event(http, tokens, control, "booking-3")
        seen = await consumer
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    await control.post("streaming/purge", {"older_than_seconds": 0})
    assert seen.replay_id is not None
    position = ReplayPosition(seen.replay_id, seen.commit_time)

    second = ChangeStream(tokens, settings, {EVENTS: position}, channels=[EVENTS], timing=FAST)
    items = second.changes()
    try:
        lost = await _next(items)
        assert lost == WindowLost(EVENTS, seen.commit_time)
        later = await _person_creates_event(http, tokens, control, "booking-4")
        change = await _next_change(items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert change.record_ids == (later,)


async def test_committed_id_is_where_a_new_client_resumes(
    http: aiohttp.ClientSession, tokens: TokenManager, control: Control, settings: SalesforceSettings
) -> None:
    """A stream started from a committed position gets exactly the events after it."""
    first = ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=FAST)
    items = first.changes()
    try:
        consumer = asyncio.ensure_future(_next_change(items))
        await _subscribed(control)
        await _person_creates_event(http, tokens, control, "booking-5")
        done = await consumer
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    missed = await _person_creates_event(http, tokens, control, "booking-6")
    assert done.replay_id is not None

    resumed = ChangeStream(
        tokens, settings, {EVENTS: ReplayPosition(done.replay_id)}, channels=[EVENTS], timing=FAST
    )
    items = resumed.changes()
    try:
        change = await _next_change(items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert change.record_ids == (missed,)
