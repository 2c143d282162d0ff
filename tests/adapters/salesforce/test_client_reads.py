"""Reads against the emulator: booking lookups, SOQL paging, describe, limits, and the request headers."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest
from sfclient_support import Control, Seed, event_item

from bridge.config import SalesforceObjectNames, SalesforceSettings
from bridge.emulator.contracts import change_event_channel
from bridge.emulator.server import RunningEmulator
from bridge.errors import ConfigurationError
from bridge.records.outbound import MogliEventFields
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import LOOKUP_CHUNK, SalesforceClient


async def test_find_events_by_booking_across_chunks(client: SalesforceClient, seed: Seed) -> None:
    """450 bookings are looked up in IN-list chunks; unknown bookings are simply absent."""
    written = await client.upsert_events([event_item(seed, f"find-{i:03d}") for i in range(450)])
    wanted = [r.key for r in written] + ["no-such-booking", "o'quote"]
    calls = client.calls
    found = await client.find_events_by_booking(wanted)
    assert found == {r.key: r.record_id for r in written}
    assert client.calls - calls == -(-len(wanted) // LOOKUP_CHUNK)


async def test_find_events_ignores_deleted_events(client: SalesforceClient, seed: Seed) -> None:
    """A deleted Event no longer maps its booking."""
    [kept, gone] = await client.upsert_events([event_item(seed, "kept"), event_item(seed, "gone")])
    assert gone.record_id
    await client.delete_records([gone.record_id])
    assert await client.find_events_by_booking(["kept", "gone"]) == {"kept": kept.record_id}


async def test_query_follows_next_records_url(
    http: aiohttp.ClientSession, tokens: TokenManager, settings: SalesforceSettings, seed: Seed
) -> None:
    """A 450-row result in batches of 200 takes three requests and returns every row once."""
    client = SalesforceClient(http, tokens, settings, query_batch_size=200)
    await client.upsert_events([event_item(seed, f"page-{i:03d}") for i in range(450)])
    calls = client.calls
    rows = await client.query("SELECT Id, Scheduling_Booking_Id__c FROM Event")
    assert client.calls - calls == 3
    assert sorted(r["Scheduling_Booking_Id__c"] for r in rows) == [f"page-{i:03d}" for i in range(450)]


async def test_query_all_includes_deleted(client: SalesforceClient, seed: Seed) -> None:
    """include_deleted=True reads through /queryAll and sees recycled records."""
    [result] = await client.upsert_events([event_item(seed, "recycled")])
    assert result.record_id
    await client.delete_records([result.record_id])
    soql = "SELECT Id, IsDeleted FROM Event WHERE Scheduling_Booking_Id__c = 'recycled'"
    assert await client.query(soql) == []
    rows = await client.query(soql, include_deleted=True)
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(result.record_id, True)]


async def test_describe_reports_external_id_fields(client: SalesforceClient) -> None:
    """describe() lists the fields and External ID fields the bridge relies on."""
    event = await client.describe("Event")
    assert {"Scheduling_Booking_Id__c", "Mogli_Event_Id__c", "WhoId", "WhatId"} <= event.fields
    assert "Scheduling_Booking_Id__c" in event.external_id_fields
    mogli = await client.describe("Mogli_Event__c")
    assert mogli.name == "Mogli_Event__c"
    assert "Scheduling_Link_Id__c" in mogli.external_id_fields


async def test_describe_of_missing_object_names_the_setting(
    http: aiohttp.ClientSession, tokens: TokenManager, settings: SalesforceSettings
) -> None:
    """Describing a configured object that does not exist is a configuration error naming its key."""
    wrong = replace(settings, objects=SalesforceObjectNames(mogli_event_object="Missing__c"))
    client = SalesforceClient(http, tokens, wrong)
    with pytest.raises(ConfigurationError) as info:
        await client.describe("Missing__c")
    assert info.value.key == "salesforce.objects.mogli_event_object"


async def test_limits_reports_the_daily_allocation(client: SalesforceClient, control: Control) -> None:
    """limits() reads DailyApiRequests; the figures agree with the org's counter."""
    await control.post("limits", {"allocation": 5000, "used": 1234})
    usage = await client.limits()
    assert usage.limit == 5000
    assert usage.used >= 1234


async def test_every_write_names_the_client(
    http: aiohttp.ClientSession,
    tokens: TokenManager,
    settings: SalesforceSettings,
    control: Control,
    emulator: RunningEmulator,
) -> None:
    """Writes carry Sforce-Call-Options client=<salesforce.client_name>, seen as changeOrigin by an org that
    passes it on for Collections writes (undocumented: the emulator's switch, off by default)."""
    await control.post("streaming/switches", {"collections_client_origin": True})
    named = replace(settings, client_name="bridge-under-test")
    client = SalesforceClient(http, tokens, named)
    owner = await control.first_id("User", Username="owner1@example.com")
    [result] = await client.upsert_mogli_events([MogliEventFields("origin", "Origin", "rsvp", None, owner)])
    assert result.ok
    log = emulator.state.bus.channel_log(change_event_channel("Mogli_Event__c"))
    assert log is not None
    origins = [stored.event.change_origin for stored in log.after(-1, 100)]
    assert origins and all(origin.endswith(";client=bridge-under-test") for origin in origins)
