"""Writes through sObject Collections against the emulator: upserts, per-record errors, deletes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import aiohttp
import pytest
from sfclient_support import START, Control, Seed, event_item

from bridge import sfid
from bridge.config import SalesforceObjectNames, SalesforceSettings
from bridge.errors import ConfigurationError, ErrorKind
from bridge.records.outbound import MogliEventFields
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import SalesforceClient


async def test_upsert_450_events_in_three_calls_in_order(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """450 Events cost 3 collection calls; result i is booking i; a second upsert updates, not creates."""
    items = [event_item(seed, f"booking-{i:03d}") for i in range(450)]
    calls = client.calls
    first = await client.upsert_events(items)
    assert client.calls - calls == 3
    assert [r.key for r in first] == [item.booking_id for item in items]
    assert all(r.ok and r.created is True for r in first)
    stored = {r["Scheduling_Booking_Id__c"]: r["Id"] for r in await control.records("Event")}
    assert stored == {r.key: r.record_id for r in first}

    second = await client.upsert_events(items)
    assert client.calls - calls == 6
    assert all(r.ok and r.created is False for r in second)
    assert [r.record_id for r in second] == [r.record_id for r in first]
    assert len(await control.records("Event")) == 450


async def test_event_fields_are_stored(client: SalesforceClient, seed: Seed, control: Control) -> None:
    """Every Event field lands in Salesforce: owner, who, what, Mogli Event id, subject, times, all-day."""
    [result] = await client.upsert_events([event_item(seed, "booking-fields")])
    [record] = [r for r in await control.records("Event") if r["Id"] == result.record_id]
    assert record["OwnerId"] == seed.owner
    assert record["WhoId"] == seed.contact
    assert record["WhatId"] == seed.mogli_event
    assert record["Mogli_Event_Id__c"] == seed.mogli_event
    assert record["Subject"] == "Intro call"
    assert record["Description"] == "A first conversation"
    assert record["StartDateTime"].startswith("2026-12-01T09:00:00")
    assert record["EndDateTime"].startswith("2026-12-01T09:30:00")
    assert record["IsAllDayEvent"] is False


async def test_explicit_nulls_clear_fields_on_update(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """A booking whose related record went away clears WhoId and Description on the existing Event."""
    item = event_item(seed, "booking-clear")
    [created] = await client.upsert_events([item])
    moved = replace(item, who_id=None, description=None, start_at=START + timedelta(hours=1),
                    end_at=START + timedelta(hours=1, minutes=30))  # fmt: skip
    [updated] = await client.upsert_events([moved])
    assert updated.created is False and updated.record_id == created.record_id
    [record] = [r for r in await control.records("Event") if r["Id"] == created.record_id]
    assert record["WhoId"] is None
    assert record["Description"] is None
    assert record["WhatId"] == seed.mogli_event
    assert record["StartDateTime"].startswith("2026-12-01T10:00:00")


async def test_lead_booking_without_what_id(client: SalesforceClient, seed: Seed, control: Control) -> None:
    """A Lead booking (WhoId Lead, WhatId null, Mogli Event in its own field) is accepted."""
    item = event_item(seed, "booking-lead", who_id=seed.lead, what_id=None)
    [result] = await client.upsert_events([item])
    assert result.ok, result.error
    [record] = [r for r in await control.records("Event") if r["Id"] == result.record_id]
    assert (record["WhoId"], record["WhatId"], record["Mogli_Event_Id__c"]) == (
        seed.lead,
        None,
        seed.mogli_event,
    )


async def test_account_as_who_id_fails_only_that_record(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """WhoId = Account is a permanent error on that record; the good records around it are written."""
    items = [
        event_item(seed, "good-1"),
        event_item(seed, "bad", who_id=seed.account),
        event_item(seed, "good-2"),
    ]
    results = await client.upsert_events(items)
    assert [r.ok for r in results] == [True, False, True]
    error = results[1].error
    assert error is not None
    assert error.code == "FIELD_INTEGRITY_EXCEPTION"
    assert error.kind is ErrorKind.PERMANENT
    assert "WhoId" in error.fields
    stored = {r["Scheduling_Booking_Id__c"] for r in await control.records("Event")}
    assert stored == {"good-1", "good-2"}


async def test_lock_on_one_record_is_returned_not_retried(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """UNABLE_TO_LOCK_ROW inside a 200 collections answer comes back as a TRANSIENT record error, one call."""
    await control.fault(method="PATCH", path="/composite/sobjects/Event", status=400,
                        error_code="UNABLE_TO_LOCK_ROW", per_record=True, times=1)  # fmt: skip
    calls = client.calls
    results = await client.upsert_events([event_item(seed, "locked-1"), event_item(seed, "locked-2")])
    assert client.calls - calls == 1
    failed = [r for r in results if not r.ok]
    assert failed, results
    assert all(r.error is not None and r.error.kind is ErrorKind.TRANSIENT for r in failed)
    assert all(r.error is not None and r.error.code == "UNABLE_TO_LOCK_ROW" for r in failed)


async def test_upsert_mogli_events_creates_then_updates(client: SalesforceClient, control: Control) -> None:
    """Mogli Events are upserted by link id: created once, then updated in place."""
    owner = await control.first_id("User", Username="owner2@example.com")
    item = MogliEventFields("link-a", "Discovery call", "round_robin", "Pick a slot", owner)
    [created] = await client.upsert_mogli_events([item])
    [updated] = await client.upsert_mogli_events(
        [replace(item, name="Discovery call (30 min)", description=None)]
    )
    assert created.created is True and updated.created is False
    assert updated.record_id == created.record_id
    [record] = [r for r in await control.records("Mogli_Event__c") if r["Id"] == created.record_id]
    assert record["Name"] == "Discovery call (30 min)"
    assert record["Scheduling_Link_Id__c"] == "link-a"
    assert record["Link_Type__c"] == "round_robin"
    assert record["Description__c"] is None
    assert record["OwnerId"] == owner


async def test_delete_is_idempotent(client: SalesforceClient, seed: Seed, control: Control) -> None:
    """Deleting twice succeeds twice; an unknown id counts as deleted; a non-id fails locally."""
    [a, b] = await client.upsert_events([event_item(seed, "del-a"), event_item(seed, "del-b")])
    assert a.record_id and b.record_id
    first = await client.delete_records([a.record_id])
    assert first[0].ok and first[0].key == a.record_id
    calls = client.calls
    again = await client.delete_records([a.record_id, b.record_id, "not-an-id"])
    assert client.calls - calls == 1
    assert [r.ok for r in again] == [True, True, False]
    assert again[0].created is None and again[0].error is None
    assert again[2].error is not None and again[2].error.code == "MALFORMED_ID"
    live = {r["Id"] for r in await control.records("Event")}
    assert a.record_id not in live and b.record_id not in live


async def test_delete_of_never_existing_id_counts_as_deleted(client: SalesforceClient, seed: Seed) -> None:
    """A well-formed id that names no record is already 'deleted'."""
    [result] = await client.delete_records(["00U000000000000AAA"])
    assert result.ok


async def test_unknown_object_is_a_configuration_error(
    http: aiohttp.ClientSession, settings: SalesforceSettings, tokens: TokenManager, control: Control
) -> None:
    """A misnamed Mogli Event object stops the bridge with the settings key that names it."""
    wrong = replace(settings, objects=SalesforceObjectNames(mogli_event_object="Mogli_Evnt__c"))
    client = SalesforceClient(http, tokens, wrong)
    owner = await control.first_id("User", Username="owner1@example.com")
    with pytest.raises(ConfigurationError) as info:
        await client.upsert_mogli_events([MogliEventFields("l", "n", "one_on_one", None, owner)])
    assert info.value.key == "salesforce.objects.mogli_event_object"


async def test_unknown_external_id_field_is_a_configuration_error(
    http: aiohttp.ClientSession, settings: SalesforceSettings, tokens: TokenManager, seed: Seed
) -> None:
    """A misnamed External ID field on Event stops the bridge, naming the setting of that field."""
    wrong = replace(settings, objects=SalesforceObjectNames(booking_external_id_field="Booking_Ext__c"))
    client = SalesforceClient(http, tokens, wrong)
    with pytest.raises(ConfigurationError) as info:
        await client.upsert_events([event_item(seed, "x")])
    assert info.value.key == "salesforce.objects.booking_external_id_field"


async def test_data_errors_are_permanent_per_record(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """An inactive owner, an unknown Contact and a Lead with a WhatId each fail only their own record."""
    inactive = await control.first_id("User", Username="inactive@example.com")
    missing_contact = seed.contact[:5] + "9999999999"
    items = [
        event_item(seed, "inactive-owner", owner_id=inactive),
        event_item(seed, "missing-contact", who_id=sfid.to18(missing_contact)),
        event_item(seed, "lead-with-what", who_id=seed.lead),
        event_item(seed, "fine"),
    ]
    results = await client.upsert_events(items)
    assert [r.ok for r in results] == [False, False, False, True]
    codes = [r.error.code for r in results[:3] if r.error is not None]
    assert codes[0] == "INACTIVE_OWNER_OR_USER"
    assert codes[1] in ("INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED")
    assert codes[2] == "FIELD_INTEGRITY_EXCEPTION"
    assert all(r.error is not None and r.error.kind is ErrorKind.PERMANENT for r in results[:3])
