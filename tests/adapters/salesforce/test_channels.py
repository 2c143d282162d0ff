"""The bridge's filtered custom channel against the emulator's Tooling API and Streaming API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
from sfclient_support import Control, Seed, event_item
from test_streaming import FAST, RECEIVE_BOUND_SECONDS, _person_creates_event, _subscribed, emulator

from bridge.config import SalesforceSettings
from bridge.records.inbound import ChangeType, Heartbeat, SalesforceChange
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.channels import check_channel, ensure_channel, member_specs
from bridge.salesforce.rest import SalesforceClient
from bridge.salesforce.streaming import ChangeStream, StreamItem

__all__ = ["emulator"]

CHANNEL = "MogliBridge__chn"
OTHER_USER = "005000000000009AAA"


async def _person(
    http: aiohttp.ClientSession, tokens: TokenManager, user: str, method: str, path: str, body: object = None
) -> None:
    token = await tokens.get()
    headers = {"Authorization": token.authorization(), "X-Emulator-User": user}
    url = f"{token.instance_url}/services/data/v60.0{path}"
    async with http.request(method, url, json=body, headers=headers) as response:
        assert response.status < 300, await response.text()


async def _tooling_calls(control: Control) -> int:
    routes = (await control.stats())["api_requests"]["by_route"]
    return sum(int(n) for route, n in routes.items() if "/tooling/" in route)


async def test_setup_creates_the_channel_once_and_updates_a_changed_filter(
    client: SalesforceClient, tokens: TokenManager, settings: SalesforceSettings, control: Control
) -> None:
    """The channel and its three members are created, found again unchanged, and a member whose filter
    differs (another integration user) is updated in place; the check follows each state. A new channel
    costs one lookup and one Tooling composite (the channel and its members, all or none): 2 calls."""
    names, user = settings.objects, await tokens.user_id()
    assert user is not None
    assert (await check_channel(client, names, CHANNEL, user)).path is None
    before = await _tooling_calls(control)
    first = await ensure_channel(client, names, CHANNEL, user)
    assert await _tooling_calls(control) - before == 2
    assert first == [
        f"channel {CHANNEL} created",
        "member EventChangeEvent created",
        "member Mogli_Event__ChangeEvent created",
        "member LeadChangeEvent created",
    ]
    assert (await check_channel(client, names, CHANNEL, user)).path == f"/data/{CHANNEL}"
    again = await ensure_channel(client, names, CHANNEL, user)
    assert again == [
        f"member {e} up to date" for e in ("EventChangeEvent", "Mogli_Event__ChangeEvent", "LeadChangeEvent")
    ]
    assert (await check_channel(client, names, CHANNEL, OTHER_USER)).path is None
    moved = await ensure_channel(client, names, CHANNEL, OTHER_USER)
    assert moved == [
        f"member {e} filter updated"
        for e in ("EventChangeEvent", "Mogli_Event__ChangeEvent", "LeadChangeEvent")
    ]


def test_filters_exclude_the_integration_user_and_keep_fieldless_change_types(
    settings: SalesforceSettings,
) -> None:
    """Each filter names the integration user and the External ID field, and lets DELETE and gap events
    through by change type (they carry no field a filter could test)."""
    specs = {s.selected_entity: s for s in member_specs(settings.objects, CHANNEL, "005000000000009")}
    event = specs["EventChangeEvent"].filter_expression
    assert event.startswith(
        "ChangeEventHeader.commitUser != '005000000000009AAA' AND (Scheduling_Booking_Id__c != null OR "
    )
    assert "'DELETE'" in event and "'GAP_OVERFLOW'" in event and "'UPDATE'" not in event
    assert "Scheduling_Link_Id__c != null" in specs["Mogli_Event__ChangeEvent"].filter_expression
    assert "IsConverted = true" in specs["LeadChangeEvent"].filter_expression
    assert specs["EventChangeEvent"].full_name == "MogliBridge_chn_EventChangeEvent"


async def _take(items: object, count: int) -> list[SalesforceChange]:
    out: list[SalesforceChange] = []
    async with asyncio.timeout(RECEIVE_BOUND_SECONDS):
        while len(out) < count:
            item: StreamItem = await anext(items)  # type: ignore[call-overload]
            if isinstance(item, Heartbeat):
                continue
            assert isinstance(item, SalesforceChange), item
            out.append(item)
    return out


async def test_the_channel_delivers_a_persons_changes_to_owned_records_only(
    http: aiohttp.ClientSession,
    client: SalesforceClient,
    tokens: TokenManager,
    control: Control,
    settings: SalesforceSettings,
    seed: Seed,
) -> None:
    """Through the filtered channel: the bridge's own writes are never delivered; a person's Event without
    the External ID is not delivered; a person's move and delete of an owned Event are (the delete by its
    change type), and the delivered count grows only by those."""
    user = await tokens.user_id()
    assert user is not None
    await ensure_channel(client, settings.objects, CHANNEL, user)
    stream = ChangeStream(tokens, settings, {}, channels=[f"/data/{CHANNEL}"], timing=FAST)
    items = stream.changes()
    try:
        consumer = asyncio.ensure_future(_take(items, 2))
        await _subscribed(control)
        delivered = (await control.stats())["delivered_events"]
        (own,) = await client.upsert_events([event_item(seed, "booking-own")])
        assert own.record_id is not None
        await _person_creates_event(http, tokens, control, "")  # no External ID: not the bridge's record
        moved = datetime(2031, 1, 2, 9, 0, tzinfo=UTC)
        body = {
            "StartDateTime": moved.isoformat(),
            "EndDateTime": (moved + timedelta(minutes=30)).isoformat(),
        }
        await _person(http, tokens, seed.owner, "PATCH", f"/sobjects/Event/{own.record_id}", body)
        await _person(http, tokens, seed.owner, "DELETE", f"/sobjects/Event/{own.record_id}")
        changes = await consumer
    finally:
        await items.aclose()  # type: ignore[attr-defined]
    assert [(c.change_type, c.record_ids) for c in changes] == [
        (ChangeType.UPDATE, (own.record_id,)),
        (ChangeType.DELETE, (own.record_id,)),
    ]
    assert changes[0].external_id == "booking-own"  # enriched: the filter names the field
    assert all(c.commit_user == seed.owner for c in changes)
    assert (await control.stats())["delivered_events"] - delivered == 2
