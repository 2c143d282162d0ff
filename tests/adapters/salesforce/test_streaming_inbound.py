"""The inbound component on a real ledger (SQLite), a real change stream and the in-process emulator.

Covers what a person cannot do over REST (Salesforce's undelete is not a REST call): the emulator's store
deletes and undeletes the Mogli Event as the recycle bin would, and the ledger follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import aiohttp
import pytest
from sfclient_support import password_settings

from bridge.config import SalesforceSettings
from bridge.emulator.contracts import DmlContext
from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.ledger.migrate import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.pipeline.inbound import Inbound, InboundSettings
from bridge.pipeline.push import Pusher, PushSettings
from bridge.records.source import (
    BookingRow,
    ChangeOp,
    IngestBatch,
    LinkRow,
    SourceChange,
    SourceTable,
    SourceTransaction,
    UserRow,
)
from bridge.rules.mapping import MappingOptions
from bridge.rules.policy import PolicyOptions
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.changes import ChangeReader
from bridge.salesforce.rest import SalesforceClient
from bridge.salesforce.streaming import ChangeStream, StreamTiming

BOUND_SECONDS = 30
FAST = StreamTiming(check_seconds=0.5, stall_seconds=5.0, backoff_base_seconds=0.05, backoff_max_seconds=0.2)

LINK_ID = "10000000-0000-4000-8000-00000000000a"
BOOKING_ID = "b0000000-0000-4000-8000-000000000001"


@dataclass
class FakeWriter:
    """Records write-backs instead of touching a scheduling database."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    async def set_times(self, booking_id: str, start_at: datetime, end_at: datetime) -> bool:
        """Record a move."""
        self.calls.append(("times", booking_id))
        return True

    async def set_related_record(self, booking_id: str, related_record_id: str) -> bool:
        """Record a re-point."""
        self.calls.append(("related", booking_id))
        return True

    async def set_assigned_user(self, booking_id: str, user_id: str) -> bool:
        """Record a reassignment."""
        self.calls.append(("assigned", booking_id))
        return True


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


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A migrated SQLite ledger."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    upgrade_to_head(url)
    async_ledger = Ledger.from_url(url)
    try:
        yield async_ledger
    finally:
        await async_ledger.close()


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an async predicate, bounded so a broken pipeline fails instead of hanging."""
    async with asyncio.timeout(BOUND_SECONDS):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.05)


def _source(owner_sf: str, contact: str) -> SourceTransaction:
    start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    rows = [
        (SourceTable.USERS, UserRow("u1", owner_sf)),
        (SourceTable.LINKS, LinkRow(LINK_ID, "one_on_one", "u1", "Intro call", "Talk", 30, True)),
        (
            SourceTable.BOOKINGS,
            BookingRow(BOOKING_ID, LINK_ID, None, start, start + timedelta(minutes=30), "scheduled", contact),
        ),
    ]
    changes = tuple(SourceChange(table, ChangeOp.INSERT, row) for table, row in rows)
    return SourceTransaction(end_lsn=100, commit_time=datetime.now(UTC), changes=changes)


async def test_deleted_then_undeleted_mogli_event_restores_the_link(
    emulator: RunningEmulator, ledger: Ledger
) -> None:
    """Recycle bin round trip: the delete marks link and Event deleted_in_salesforce; the undelete puts the
    Mogli Event id back (link synced) and sends the Event again, which lands on the restored Mogli Event."""
    settings: SalesforceSettings = password_settings(emulator.url)
    store = emulator.store
    owner = store.user_by_username("owner1@example.com")
    assert owner is not None
    contact = next(r["Id"] for r in store.records("Contact"))
    async with aiohttp.ClientSession() as http:
        tokens = TokenManager(http, settings)
        client = SalesforceClient(http, tokens, settings)
        pusher = Pusher(
            ledger, client, options=MappingOptions(), settings=PushSettings(), clock=lambda: datetime.now(UTC)
        )
        await ledger.apply_source_batch(IngestBatch((_source(owner.id, contact),), datetime.now(UTC)))
        while await pusher.push_once():
            pass
        link = await ledger.get_link(LINK_ID)
        assert link is not None and link.state == "synced" and link.mogli_event_id
        mogli_id = link.mogli_event_id

        stream = ChangeStream(tokens, settings, {}, timing=FAST)
        writer = FakeWriter()
        inbound = Inbound(
            stream,
            ledger,
            ChangeReader(client, settings.objects),
            writer,
            PolicyOptions(),
            on_work=pusher.notify,
            settings=InboundSettings(sweep_seconds=0.2),
        )
        stop = asyncio.Event()
        task = asyncio.ensure_future(inbound.run(stop))
        try:
            await until(lambda: _clients(emulator), "a streaming client")
            person = DmlContext(user_id=owner.id, change_origin="")
            with store.transaction(person) as txn:
                txn.delete(mogli_id)

            async def link_state(state: str) -> bool:
                row = await ledger.get_link(LINK_ID)
                return row is not None and row.state == state

            await until(lambda: link_state("deleted_in_salesforce"), "the link marked")
            activity = await ledger.get_activity(BOOKING_ID)
            assert activity is not None and activity.state == "deleted_in_salesforce"

            with store.transaction(person) as txn:
                txn.undelete(mogli_id)
            await until(lambda: link_state("synced"), "the link restored")
            restored = await ledger.get_link(LINK_ID)
            assert restored is not None and restored.mogli_event_id == mogli_id
            pending = await ledger.get_activity(BOOKING_ID)
            assert pending is not None and pending.state == "pending"
            while await pusher.push_once():
                pass
        finally:
            stop.set()
            await task
    activity = await ledger.get_activity(BOOKING_ID)
    assert activity is not None and activity.state == "synced"
    events = [r for r in store.records("Event") if r.get("Scheduling_Booking_Id__c") == BOOKING_ID]
    assert len(events) == 1 and events[0]["WhatId"] == mogli_id
    assert writer.calls == []
    assert inbound.applied == 2  # the delete and the undelete; the bridge's own writes applied nothing


async def _clients(emulator: RunningEmulator) -> bool:
    return emulator.state.streaming.stats()["streaming_clients"] >= 1  # type: ignore[no-any-return]
