"""PubSubStream against the emulator's Pub/Sub API (gRPC) and, side by side, its CometD endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sfclient_support import Control, password_settings

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.emulator.state import STATE
from bridge.errors import ConfigurationError
from bridge.records.inbound import ChangeType, Heartbeat, ReplayPosition, SalesforceChange, WindowLost
from bridge.salesforce.auth import TokenManager, make_ssl_context
from bridge.salesforce.pubsub import PubSubStream, PubSubTiming, channel_credentials
from bridge.salesforce.pubsub_positions import replay_bytes, replay_number
from bridge.salesforce.streaming import ChangeStream, StreamItem, StreamTiming

EVENTS = "/data/EventChangeEvent"
# A liveness bound for one item: events are pushed at once, this only stops a hang.
RECEIVE_BOUND_SECONDS = 30
FAST = PubSubTiming(batch=20, check_seconds=0.2, backoff_base_seconds=0.05, backoff_max_seconds=0.2)
COMETD_FAST = StreamTiming(
    check_seconds=0.5, stall_seconds=5.0, backoff_base_seconds=0.05, backoff_max_seconds=0.2
)


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    """The default org with 1-second CometD long polls and the Pub/Sub API, serving in this test's loop."""
    text = resources.files("bridge.emulator").joinpath("default_org.toml").read_text("utf-8")
    org = tmp_path / "org.toml"
    org.write_text(text.replace("long_poll_timeout_seconds = 110.0", "long_poll_timeout_seconds = 1.0"))
    running = await start_emulator(host="127.0.0.1", port=0, org_file=org, grpc_port=0)
    try:
        yield running
    finally:
        await running.stop()


def _stream(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    positions: dict[str, ReplayPosition] | None = None,
    timing: PubSubTiming = FAST,
) -> PubSubStream:
    return PubSubStream(
        tokens,
        settings,
        positions or {},
        target=f"127.0.0.1:{emulator.grpc_port}",
        tenant_id=emulator.app[STATE].org.org_id,
        channels=[EVENTS],
        timing=timing,
    )


class Person:
    """A person changing Events through plain REST (no client name)."""

    def __init__(self, http: aiohttp.ClientSession, tokens: TokenManager, control: Control) -> None:
        self._http, self._tokens, self._control = http, tokens, control

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        token = await self._tokens.get()
        person = await self._control.first_id("User", Username="owner1@example.com")
        headers = {"Authorization": token.authorization(), "X-Emulator-User": person}
        url = f"{token.instance_url}/services/data/v60.0/sobjects/Event{path}"
        async with self._http.request(method, url, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None

    async def create(self, booking_id: str) -> str:
        """A new Event; answers its id."""
        start = datetime(2031, 3, 4, 10, 0, tzinfo=UTC)
        body = {
            "Subject": "Call",
            "StartDateTime": start.isoformat(),
            "EndDateTime": (start + timedelta(minutes=30)).isoformat(),
            "Scheduling_Booking_Id__c": booking_id,
        }
        return str((await self._call("POST", "/", body))["id"])

    async def update(self, event_id: str, **fields: Any) -> None:
        """Change some fields of an Event."""
        await self._call("PATCH", f"/{event_id}", fields)

    async def delete(self, event_id: str) -> None:
        """Delete an Event."""
        await self._call("DELETE", f"/{event_id}")


@pytest.fixture
def person(http: aiohttp.ClientSession, tokens: TokenManager, control: Control) -> Person:
    """Someone working in the org."""
    return Person(http, tokens, control)


class Consumer:
    """Drives a stream like the inbound pipeline: takes one item, commits its replay id, asks for the next."""

    def __init__(self, stream: PubSubStream | ChangeStream) -> None:
        self.stream = stream
        self.items: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.stream.changes():
            if isinstance(item, Heartbeat):
                continue
            if isinstance(item, SalesforceChange) and item.replay_id is not None:
                self.stream.committed(item.channel, item.replay_id)
            await self.items.put(item)

    async def take(self, count: int) -> list[StreamItem]:
        """The next `count` items (bounded in time)."""
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            return [await self.items.get() for _ in range(count)]

    async def changes(self, count: int) -> list[SalesforceChange]:
        """The next `count` items, each a change."""
        items = await self.take(count)
        assert all(isinstance(i, SalesforceChange) for i in items), items
        return [i for i in items if isinstance(i, SalesforceChange)]

    async def stop(self) -> None:
        """End the stream (the generator closes its calls)."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _open_streams(control: Control, count: int) -> None:
    """Wait until the emulator has `count` Subscribe calls open."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while True:
            if (await control.get("pubsub/stats"))["open_streams"] >= count:
                return
            await asyncio.sleep(0.05)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until the condition holds."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def _cometd_subscribed(control: Control) -> None:
    """Wait until the CometD client is connected."""
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while True:
            if (await control.stats())["streaming_clients"] >= 1:
                return
            await asyncio.sleep(0.05)


async def test_changes_decode_as_over_cometd(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """CREATE, UPDATE and DELETE of an Event, received over both transports at once, are the same
    SalesforceChange records; only the replay id's kind differs (the same bus position)."""
    pubsub = Consumer(_stream(emulator, tokens, settings))
    cometd = Consumer(ChangeStream(tokens, settings, {}, channels=[EVENTS], timing=COMETD_FAST))
    try:
        await _open_streams(control, 1)
        await _cometd_subscribed(control)
        event_id = await person.create("booking-1")
        await person.update(event_id, StartDateTime="2031-03-05T09:00:00Z", WhatId=None)
        await person.delete(event_id)
        over_pubsub = await pubsub.changes(3)
        over_cometd = await cometd.changes(3)
    finally:
        await pubsub.stop()
        await cometd.stop()
    assert [c.change_type for c in over_pubsub] == [ChangeType.CREATE, ChangeType.UPDATE, ChangeType.DELETE]
    for p, c in zip(over_pubsub, over_cometd, strict=True):
        assert p.replay_id is not None and c.replay_id is not None
        raw = replay_bytes(p.replay_id)
        assert raw is not None and int.from_bytes(raw, "big") == c.replay_id
        assert replace(p, replay_id=c.replay_id) == c
    assert over_pubsub[0].external_id == "booking-1" and over_pubsub[0].record_ids == (event_id,)
    assert over_pubsub[1].start_at == datetime(2031, 3, 5, 9, 0, tzinfo=UTC)


async def test_a_restart_resumes_after_the_stored_replay_id(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """A new subscriber given the stored position (as the ledger keeps it) gets exactly the events after it,
    including those made while no subscriber ran."""
    first = Consumer(_stream(emulator, tokens, settings))
    await _open_streams(control, 1)
    ids = [await person.create(f"booking-{n}") for n in range(2)]
    seen = await first.changes(2)
    await first.stop()
    later = [await person.create(f"booking-{n}") for n in range(2, 4)]
    stored = ReplayPosition.decode(ReplayPosition(seen[-1].replay_id or 0, seen[-1].commit_time).encode())
    assert stored is not None
    second = Consumer(_stream(emulator, tokens, settings, {EVENTS: stored}))
    try:
        resumed = await second.changes(2)
        await asyncio.sleep(0.5)
    finally:
        await second.stop()
    assert [c.record_ids for c in seen] == [(i,) for i in ids]
    assert [c.record_ids for c in resumed] == [(i,) for i in later]
    assert second.items.empty()


async def test_a_cut_stream_resumes_with_nothing_lost_or_doubled(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """The server cutting the call while events wait unprocessed in the subscriber: it resubscribes after
    the last processed event, drops what the dead call had delivered, and every Event made before, during
    and after the cut arrives exactly once, in order."""
    stream = _stream(emulator, tokens, settings)
    items = stream.changes()
    got: list[SalesforceChange] = []

    async def take() -> None:
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            item = await anext(items)
        assert isinstance(item, SalesforceChange) and item.replay_id is not None
        stream.committed(item.channel, item.replay_id)
        got.append(item)

    try:
        first = asyncio.ensure_future(take())
        await _open_streams(control, 1)
        ids = [await person.create(f"booking-{n}") for n in range(4)]
        await first
        await _until(lambda: stream.buffered >= 3)  # the other three are received, not yet processed
        assert (await control.post("pubsub/cut"))["cut"] == 1
        await _until(lambda: stream.rebuilds >= 1)
        await _open_streams(control, 1)  # the new call is open before anything is processed
        ids += [await person.create(f"booking-{n}") for n in range(4, 6)]
        for _ in range(5):
            await take()
        extra = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.5)
        assert not extra.done(), extra.result()
        extra.cancel()
        await asyncio.gather(extra, return_exceptions=True)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert [c.record_ids[0] for c in got] == ids
    assert stream.rebuilds == 1


async def test_an_expired_token_mid_stream_is_refreshed(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """Sessions expiring ends the call with the auth error; the subscriber takes a new token from the
    shared TokenManager, resubscribes, and loses nothing."""
    stream = _stream(emulator, tokens, settings)
    consumer = Consumer(stream)
    try:
        await _open_streams(control, 1)
        first = await person.create("booking-0")
        got = await consumer.changes(1)
        requests = tokens.token_requests
        assert (await control.post("sessions/expire"))["expired"] >= 1
        await asyncio.sleep(0.5)  # the emulator ends the call at its next session check
        second = await person.create("booking-1")
        got += await consumer.changes(1)
    finally:
        await consumer.stop()
    assert [c.record_ids for c in got] == [(first,), (second,)]
    assert tokens.token_requests > requests


async def test_an_expired_replay_id_reports_the_lost_window(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """A stored replay id the server refuses: WindowLost from the stored commit time (as over CometD), then
    new events only; nothing is replayed from EARLIEST."""
    old = await person.create("booking-old")
    since = datetime(2031, 1, 1, tzinfo=UTC)
    bogus = ReplayPosition(replay_number(b"\x00\x01"), since)  # not an id the org ever issued
    consumer = Consumer(_stream(emulator, tokens, settings, {EVENTS: bogus}))
    try:
        lost = await consumer.take(1)
        await _open_streams(control, 1)
        new = await person.create("booking-new")
        got = await consumer.changes(1)
    finally:
        await consumer.stop()
    assert lost == [WindowLost(EVENTS, since)]
    assert got[0].record_ids == (new,) and old != new


async def test_a_cometd_position_is_never_taken_for_a_pubsub_one(
    emulator: RunningEmulator, tokens: TokenManager, settings: SalesforceSettings, control: Control
) -> None:
    """A channel whose stored position is a CometD replay id (the other transport) is reported as a lost
    window from its time and subscribed at LATEST."""
    since = datetime(2031, 2, 1, tzinfo=UTC)
    consumer = Consumer(_stream(emulator, tokens, settings, {EVENTS: ReplayPosition(18502, since)}))
    try:
        lost = await consumer.take(1)
        await _open_streams(control, 1)
    finally:
        await consumer.stop()
    assert lost == [WindowLost(EVENTS, since, reason="replay_id_of_other_transport")]


async def test_flow_control_holds_a_slow_consumer_to_the_bound(
    emulator: RunningEmulator, tokens: TokenManager, settings: SalesforceSettings, control: Control
) -> None:
    """10,000 events waiting and a consumer slower than the stream: the subscriber never has more than
    `batch` events requested and unprocessed, and the org never delivered more than `batch` beyond what the
    consumer took (counted events, not time)."""
    state = emulator.app[STATE]
    timing = replace(FAST, batch=50)
    stream = _stream(emulator, tokens, settings, timing=timing)
    items = stream.changes()
    taken, worst = 0, 0
    try:
        first = asyncio.ensure_future(anext(items))
        await _open_streams(control, 1)
        for n in range(10_000):  # all published before the subscriber can take any
            state.bus.publish_gap("Event", [f"00U5e00000A{n:05d}AA"], "GAP_UPDATE")
        async with asyncio.timeout(120):
            item = await first
            while True:
                if isinstance(item, Heartbeat):  # the quiet channel's first report, before any event
                    item = await anext(items)
                    continue
                assert isinstance(item, SalesforceChange) and item.replay_id is not None
                taken += 1
                stream.committed(item.channel, item.replay_id)
                for _ in range(20):  # slow: let the stream run as far ahead as it would
                    await asyncio.sleep(0)
                delivered = state.streaming.stats()["delivered_events"]
                worst = max(worst, delivered - taken)
                assert stream.held <= timing.batch
                if taken == 400:
                    break
                item = await anext(items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert stream.peak_held == timing.batch  # the bound is used, never passed
    assert 0 < worst <= timing.batch
    assert state.streaming.stats()["delivered_events"] <= taken + timing.batch


async def test_a_keepalive_moves_a_quiet_channel_s_position(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
) -> None:
    """A channel that has delivered nothing resumes after the latest replay id its keepalives named, not at
    LATEST: an Event made while the stream was cut is delivered after the resubscription."""
    await control.post("pubsub/faults", {"keepalive_seconds": 0.1})
    before = await person.create("booking-before")  # the org's latest event when the stream starts
    slow_retry = replace(FAST, backoff_base_seconds=1.0, backoff_max_seconds=1.0)
    stream = _stream(emulator, tokens, settings, timing=slow_retry)
    consumer = Consumer(stream)
    try:
        await _open_streams(control, 1)
        await asyncio.sleep(0.5)  # keepalives, nothing unprocessed
        assert (await control.post("pubsub/cut"))["cut"] == 1
        made_while_cut = await person.create("booking-cut")
        assert (await control.get("pubsub/stats"))["open_streams"] == 0  # still backing off
        got = await consumer.changes(1)
    finally:
        await consumer.stop()
    assert got[0].record_ids == (made_while_cut,) and stream.rebuilds == 1
    assert consumer.items.empty() and before != made_while_cut


async def test_an_unknown_channel_stops_the_stream_naming_the_key(
    emulator: RunningEmulator, tokens: TokenManager, settings: SalesforceSettings
) -> None:
    """A topic the org does not have is a configuration error (sync.channel), not a retry loop."""
    stream = PubSubStream(
        tokens,
        settings,
        {},
        target=f"127.0.0.1:{emulator.grpc_port}",
        tenant_id=emulator.app[STATE].org.org_id,
        channels=["/data/Nothing__chn"],
        timing=FAST,
    )
    items = stream.changes()
    with pytest.raises(ConfigurationError) as raised:
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            await anext(items)
    assert raised.value.key == "sync.channel" and stream.rebuilds == 0


async def test_a_channel_without_a_replay_id_reports_its_gap_and_heartbeats(
    emulator: RunningEmulator, tokens: TokenManager, settings: SalesforceSettings
) -> None:
    """As over CometD: a channel stored as `-1;<time>` (seen until then, never an id) is reported lost from
    that time when subscribed at LATEST, and while live it reports how far it has seen."""
    since = datetime.now(UTC) - timedelta(days=1)
    timing = replace(FAST, heartbeat_seconds=0.3)
    stream = _stream(emulator, tokens, settings, {EVENTS: ReplayPosition(-1, since)}, timing)
    items = stream.changes()
    try:
        async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
            first = await anext(items)
            beat = await anext(items)
            while not isinstance(beat, Heartbeat):
                beat = await anext(items)
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert first == WindowLost(EVENTS, since, reason="resubscribed_without_replay_id")
    assert beat.channel == EVENTS and beat.seen_until > since


async def test_every_watched_channel_shares_the_bound(
    emulator: RunningEmulator,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    person: Person,
    http: aiohttp.ClientSession,
) -> None:
    """The default channels (Event, Mogli Event, Lead) each get a call; their requests together stay within
    `batch`; an Event and a Lead change both arrive."""
    stream = PubSubStream(
        tokens,
        settings,
        {},
        target=f"127.0.0.1:{emulator.grpc_port}",
        tenant_id=emulator.app[STATE].org.org_id,
        timing=FAST,
    )
    consumer = Consumer(stream)
    try:
        await _open_streams(control, 3)
        event_id = await person.create("booking-1")
        token = await tokens.get()
        url = f"{token.instance_url}/services/data/v60.0/sobjects/Lead/"
        body = {"LastName": "Lead", "Company": "Acme"}
        async with http.post(url, json=body, headers={"Authorization": token.authorization()}) as response:
            assert response.status == 201, await response.text()
            lead_id = str((await response.json())["id"])
        got = await consumer.changes(2)
    finally:
        await consumer.stop()
    assert {c.record_ids[0] for c in got} == {event_id, lead_id}
    assert set(stream.channels) == {EVENTS, "/data/Mogli_Event__ChangeEvent", "/data/LeadChangeEvent"}
    assert stream.peak_held <= FAST.batch


async def test_tls_with_the_ca_bundle(tmp_path: Path) -> None:
    """With salesforce.ca_bundle naming the emulator's CA, the gRPC channel is verified TLS, as REST is, and
    a person's Event arrives over it."""
    emulator = await start_emulator(
        host="127.0.0.1", port=0, tls=True, ca_out=tmp_path / "ca.pem", grpc_port=0
    )
    try:
        assert emulator.ca_file is not None
        settings = password_settings(emulator.url, ca_bundle=str(emulator.ca_file))
        connector = aiohttp.TCPConnector(ssl=make_ssl_context(settings.ca_bundle))
        async with aiohttp.ClientSession(connector=connector) as tls_http:
            tokens = TokenManager(tls_http, settings)
            control = Control(tls_http, emulator.url)
            stream = PubSubStream(
                tokens,
                settings,
                {},
                target=f"localhost:{emulator.grpc_port}",
                tenant_id=emulator.app[STATE].org.org_id,
                channels=[EVENTS],
                timing=FAST,
                credentials=channel_credentials(settings.ca_bundle),
            )
            consumer = Consumer(stream)
            try:
                await _open_streams(control, 1)
                event_id = await Person(tls_http, tokens, control).create("booking-tls")
                got = await consumer.changes(1)
            finally:
                await consumer.stop()
    finally:
        await emulator.stop()
    assert got[0].record_ids == (event_id,)


def test_an_unreadable_ca_bundle_names_the_key(tmp_path: Path) -> None:
    """A CA bundle that cannot be read is a configuration error naming salesforce.ca_bundle."""
    with pytest.raises(ConfigurationError) as raised:
        channel_credentials(str(tmp_path / "missing.pem"))
    assert raised.value.key == "salesforce.ca_bundle"
