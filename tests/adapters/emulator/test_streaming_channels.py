"""Custom change-event channels with filter expressions over the Tooling API, and what they deliver over
CometD (salesforce-events-2.md, "Filtered custom channels"; cdc-filter-tooling-api-add-filter.html,
cdc-filters.html, cdc-filter-event-allocations.html)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiosfstream_ng import Client, ReplayMarker, ReplayMarkerStoragePolicy
from streaming_support import LocalAuthenticator

from tests.adapters.emulator.conftest import EmulatorClient

CHANNEL = "Bridge__chn"
CHANNEL_PATH = "/data/Bridge__chn"
MEMBER = "Bridge_chn_ContactChangeEvent"
TOOLING = "/tooling/sobjects"


class Subscriber:
    """A raw Bayeux long-polling client of the whole emulator."""

    def __init__(self, emulator: EmulatorClient, token: str) -> None:
        self.emulator, self.token = emulator, token
        self.client_id: str | None = None
        self._ids = itertools.count(1)

    async def post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one message (with client id and message id); answers the reply array."""
        message = {**message, "id": str(next(self._ids))}
        if self.client_id is not None:
            message["clientId"] = self.client_id
        headers = {"Authorization": f"Bearer {self.token}"}
        reply = await self.emulator.request("POST", "/cometd/60.0", json=[message], headers=headers)
        assert reply.status == 200, reply.body
        return list(reply.body)

    async def open(self, channel: str) -> dict[str, Any]:
        """Handshake, first connect, subscribe for new events; answers the subscribe reply."""
        handshake = await self.post(
            {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
        )
        self.client_id = handshake[0]["clientId"]
        await self.connect()
        [subscribed] = await self.post(
            {"channel": "/meta/subscribe", "subscription": channel, "ext": {"replay": {channel: -1}}}
        )
        return subscribed

    async def connect(self) -> list[dict[str, Any]]:
        """One connect; answers the event messages it carried (call it when events are waiting)."""
        replies = await self.post({"channel": "/meta/connect", "connectionType": "long-polling"})
        return [r for r in replies if not r["channel"].startswith("/meta/")]


async def _create(emulator: EmulatorClient, type_name: str, full_name: str, **metadata: Any) -> Any:
    return await emulator.rest(
        "POST", f"{TOOLING}/{type_name}", json={"FullName": full_name, "Metadata": metadata}
    )


async def _channel_with_member(emulator: EmulatorClient, filter_expression: str | None) -> str:
    reply = await _create(emulator, "PlatformEventChannel", CHANNEL, channelType="data", label="Bridge")
    assert reply.status == 201, reply.body
    metadata: dict[str, Any] = {"eventChannel": CHANNEL, "selectedEntity": "ContactChangeEvent"}
    if filter_expression is not None:
        metadata["filterExpression"] = filter_expression
    reply = await _create(emulator, "PlatformEventChannelMember", MEMBER, **metadata)
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def _write(emulator: EmulatorClient, method: str, path: str, user: str, body: Any = None) -> Any:
    reply = await emulator.rest(method, path, json=body, headers={"X-Emulator-User": user})
    assert reply.status < 300, reply.body
    return reply.body


async def _contact(emulator: EmulatorClient, user: str, last_name: str, title: str) -> str:
    body = {"LastName": last_name, "Title": title}
    return str((await _write(emulator, "POST", "/sobjects/Contact", user, body))["id"])


def _user(emulator: EmulatorClient, username: str) -> str:
    user = emulator.store.user_by_username(username)
    assert user is not None
    return user.id


async def test_creating_a_channel_answers_201_with_id_success_and_errors(emulator: EmulatorClient) -> None:
    """Tooling API create (cdc-filter-tooling-api-add-filter.html): 201 with `{id, success, errors}`."""
    reply = await _create(emulator, "PlatformEventChannel", CHANNEL, channelType="data", label="Bridge")
    assert reply.status == 201
    assert reply.body["success"] is True and reply.body["errors"] == []
    assert reply.body["id"].startswith("0YL") and len(reply.body["id"]) == 18


async def test_a_duplicate_full_name_is_refused(emulator: EmulatorClient) -> None:
    """A second channel or member with a FullName already taken answers 400 DUPLICATE_DEVELOPER_NAME."""
    await _channel_with_member(emulator, None)
    again = await _create(emulator, "PlatformEventChannel", CHANNEL, channelType="data", label="Bridge")
    member = await _create(
        emulator,
        "PlatformEventChannelMember",
        MEMBER,
        eventChannel=CHANNEL,
        selectedEntity="ContactChangeEvent",
    )
    assert (again.status, again.body[0]["errorCode"]) == (400, "DUPLICATE_DEVELOPER_NAME")
    assert (member.status, member.body[0]["errorCode"]) == (400, "DUPLICATE_DEVELOPER_NAME")


async def test_query_get_and_delete_let_a_setup_be_idempotent(emulator: EmulatorClient) -> None:
    """Tooling query finds a member by FullName with its filter, GET reads it, DELETE removes it (204), and
    deleting the channel makes `/data/Name__chn` unknown to CometD."""
    member_id = await _channel_with_member(emulator, "Title = 'VIP'")
    soql = (
        f"SELECT Id, FullName, FilterExpression FROM PlatformEventChannelMember WHERE FullName = '{MEMBER}'"
    )
    found = await emulator.rest("GET", "/tooling/query?q=" + soql)
    assert found.status == 200, found.body
    assert [(r["Id"], r["FilterExpression"]) for r in found.body["records"]] == [(member_id, "Title = 'VIP'")]
    read = await emulator.rest("GET", f"{TOOLING}/PlatformEventChannelMember/{member_id}")
    assert read.body["Metadata"]["eventChannel"] == CHANNEL
    assert (await emulator.rest("DELETE", f"{TOOLING}/PlatformEventChannelMember/{member_id}")).status == 204
    found = await emulator.rest("GET", "/tooling/query?q=" + soql)
    assert found.body["totalSize"] == 0
    channels = await emulator.rest("GET", "/tooling/query?q=SELECT Id FROM PlatformEventChannel")
    [channel] = channels.body["records"]
    assert (await emulator.rest("DELETE", f"{TOOLING}/PlatformEventChannel/{channel['Id']}")).status == 204
    subscriber = Subscriber(emulator, await emulator.token())
    assert (await subscriber.open(CHANNEL_PATH))["successful"] is False


@pytest.mark.parametrize(
    "expression",
    [
        "ChangeEventHeader.changedFields = 'Title'",  # array header fields are refused (cdc-filters.html)
        "ChangeEventHeader.recordIds = '003000000000001AAA'",
        "ChangeEventHeader.noSuchField = 'x'",
        "No_Such_Field__c = 'x'",
        "Title = ",
        "Title = 'a' AND (LastName = 'b'",
        "Title LIKE 5",
    ],
)
async def test_an_invalid_filter_expression_is_refused_at_creation(
    emulator: EmulatorClient, expression: str
) -> None:
    """A filter naming an array header field, an unknown field, or malformed is refused with 400."""
    await _create(emulator, "PlatformEventChannel", CHANNEL, channelType="data", label="Bridge")
    reply = await _create(
        emulator,
        "PlatformEventChannelMember",
        MEMBER,
        eventChannel=CHANNEL,
        selectedEntity="ContactChangeEvent",
        filterExpression=expression,
    )
    assert reply.status == 400
    assert reply.body[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


async def test_a_filter_expression_needs_api_56(emulator: EmulatorClient) -> None:
    """Filter expressions on channel members are available in API version 56.0 and later."""
    await _create(emulator, "PlatformEventChannel", CHANNEL, channelType="data", label="Bridge")
    body = {
        "FullName": MEMBER,
        "Metadata": {
            "eventChannel": CHANNEL,
            "selectedEntity": "ContactChangeEvent",
            "filterExpression": "Title = 'VIP'",
        },
    }
    reply = await emulator.rest("POST", f"{TOOLING}/PlatformEventChannelMember", json=body, version="v55.0")
    assert reply.status == 400


async def test_filtered_channel_delivers_only_passing_events_with_filtered_fields_enriched(
    emulator: EmulatorClient,
) -> None:
    """cdc-filters.html: a member's filter on header fields (commitUser) and entity fields decides what
    `/data/Name__chn` delivers; entity fields named in the filter are enriched into update and delete events
    even when unchanged (EnrichedField: "added to an update or delete change event even when not changed").
    A DELETE offers the filter no field values by default, so it passes only through a change-type clause."""
    bridge, owner = emulator.store.integration_user_id, _user(emulator, "owner1@example.com")
    expression = (
        f"ChangeEventHeader.commitUser != '{bridge}'"
        " AND (Title = 'VIP' OR ChangeEventHeader.changeType = 'DELETE')"
    )
    await _channel_with_member(emulator, expression)
    subscriber = Subscriber(emulator, await emulator.token())
    assert (await subscriber.open(CHANNEL_PATH))["successful"]
    await _write(emulator, "POST", "/sobjects/Contact", bridge, {"LastName": "Own", "Title": "VIP"})
    vip = await _contact(emulator, owner, "Vip", "VIP")
    await _contact(emulator, owner, "Other", "Other")
    await _write(emulator, "PATCH", f"/sobjects/Contact/{vip}", owner, {"LastName": "Vip2"})
    await _write(emulator, "DELETE", f"/sobjects/Contact/{vip}", owner)
    delivered = [m["data"]["payload"] for m in await subscriber.connect()]
    headers = [(p["ChangeEventHeader"]["changeType"], p["ChangeEventHeader"]["recordIds"]) for p in delivered]
    assert headers == [("CREATE", [vip]), ("UPDATE", [vip]), ("DELETE", [vip])]
    update, delete = delivered[1], delivered[2]
    assert update["Title"] == "VIP" and "Title" not in update["ChangeEventHeader"]["changedFields"]
    assert delete["Title"] == "VIP"
    assert {p["ChangeEventHeader"]["commitUser"] for p in delivered} == {owner}


async def test_a_delete_offers_an_entity_field_filter_no_values_unless_switched(
    emulator: EmulatorClient,
) -> None:
    """Salesforce does not document whether a filter sees a deleted record's fields (a CometD DELETE body has
    none, cdc_event_fields_body.htm): by default a DELETE fails `Title = 'VIP'`; with the
    `filter_deleted_values` switch it passes on the deleted record's values."""
    owner = _user(emulator, "owner1@example.com")
    await _channel_with_member(emulator, "Title = 'VIP'")
    first = await _contact(emulator, owner, "First", "VIP")
    await _write(emulator, "DELETE", f"/sobjects/Contact/{first}", owner)
    await emulator.control("POST", "/streaming/switches", json={"filter_deleted_values": True})
    second = await _contact(emulator, owner, "Second", "VIP")
    await _write(emulator, "DELETE", f"/sobjects/Contact/{second}", owner)
    log = emulator.state.bus.channel_log(CHANNEL_PATH)
    assert log is not None
    deletes = [s.event.record_ids for s in log.after(0, 10) if s.event.change_type == "DELETE"]
    assert deletes == [(second,)]


async def test_gap_events_carry_no_fields_so_an_entity_field_filter_drops_them(
    emulator: EmulatorClient,
) -> None:
    """Gap events carry header fields only (cdc_other_events_gap.htm): a filter on an entity field sees null
    and drops them, while a filter on header fields alone can let them through."""
    await _channel_with_member(emulator, "Title != null")
    await _create(emulator, "PlatformEventChannel", "Header__chn", channelType="data", label="Header")
    await _create(
        emulator,
        "PlatformEventChannelMember",
        "Header_chn_ContactChangeEvent",
        eventChannel="Header__chn",
        selectedEntity="ContactChangeEvent",
        filterExpression="ChangeEventHeader.changeType LIKE 'GAP_%'",
    )
    contact = emulator.store.records("Contact")[0]["Id"]
    gap = {"entity": "Contact", "record_ids": [contact], "change_type": "GAP_UPDATE"}
    await emulator.control("POST", "/gap", json=gap)
    by_field, by_header = (emulator.state.bus.channel_log(p) for p in (CHANNEL_PATH, "/data/Header__chn"))
    assert by_field is not None and by_header is not None
    assert len(by_field) == 0
    assert [s.event.change_type for s in by_header.after(0, 10)] == ["GAP_UPDATE"]


async def test_a_member_of_the_standard_channel_filters_change_events(emulator: EmulatorClient) -> None:
    """A member may sit on the standard ChangeEvents channel: `/data/ChangeEvents` then carries only the
    member entity's events that pass, while the entity's own channel still carries every event."""
    reply = await _create(
        emulator,
        "PlatformEventChannelMember",
        "ChangeEvents_ContactChangeEvent",
        eventChannel="ChangeEvents",
        selectedEntity="ContactChangeEvent",
        filterExpression="Title = 'VIP'",
    )
    assert reply.status == 201, reply.body
    user = emulator.store.integration_user_id
    await _write(emulator, "POST", "/sobjects/Contact", user, {"LastName": "Vip", "Title": "VIP"})
    await _write(emulator, "POST", "/sobjects/Contact", user, {"LastName": "Other", "Title": "Other"})
    every, own = (
        emulator.state.bus.channel_log(p) for p in ("/data/ChangeEvents", "/data/ContactChangeEvent")
    )
    assert every is not None and own is not None
    assert [s.event.fields.get("Title") for s in every.after(0, 10)] == ["VIP"]
    assert len(own) == 2


async def test_the_delivered_allocation_counts_events_after_the_filter_per_subscriber(
    emulator: EmulatorClient,
) -> None:
    """cdc-filter-event-allocations.html: only events delivered after the filter count, once per subscriber;
    `/limits` DailyDeliveredPlatformEvents and the delivered_events stat move together."""
    owner = _user(emulator, "owner1@example.com")
    await _channel_with_member(emulator, "Title = 'VIP'")
    subscribers = [Subscriber(emulator, await emulator.token()) for _ in range(2)]
    for subscriber in subscribers:
        assert (await subscriber.open(CHANNEL_PATH))["successful"]
    before = (await emulator.rest("GET", "/limits")).body["DailyDeliveredPlatformEvents"]
    await _write(emulator, "POST", "/sobjects/Contact", owner, {"LastName": "Vip", "Title": "VIP"})
    for n in range(3):
        await _write(emulator, "POST", "/sobjects/Contact", owner, {"LastName": f"O{n}", "Title": "Other"})
    assert [len(await subscriber.connect()) for subscriber in subscribers] == [1, 1]
    after = (await emulator.rest("GET", "/limits")).body["DailyDeliveredPlatformEvents"]
    assert after["Max"] == before["Max"] == 10_000
    assert before["Remaining"] - after["Remaining"] == 2
    assert (await emulator.control("GET", "/stats"))["delivered_events"] == 2


async def test_patching_a_members_filter_changes_what_the_channel_carries(emulator: EmulatorClient) -> None:
    """PlatformEventChannelMember supports PATCH (tooling-platformeventchannelmember): a new
    filterExpression takes effect for later changes; an invalid one is refused and the old one stays."""
    member_id = await _channel_with_member(emulator, "Title = 'VIP'")
    path = f"{TOOLING}/PlatformEventChannelMember/{member_id}"
    bad = await emulator.rest("PATCH", path, json={"Metadata": {"filterExpression": "Nope__c = 1"}})
    assert bad.status == 400
    reply = await emulator.rest("PATCH", path, json={"Metadata": {"filterExpression": "Title = 'Other'"}})
    assert reply.status == 204, reply.body
    user = emulator.store.integration_user_id
    await _write(emulator, "POST", "/sobjects/Contact", user, {"LastName": "Vip", "Title": "VIP"})
    await _write(emulator, "POST", "/sobjects/Contact", user, {"LastName": "Other", "Title": "Other"})
    log = emulator.state.bus.channel_log(CHANNEL_PATH)
    assert log is not None
    assert [s.event.fields.get("Title") for s in log.after(0, 10)] == ["Other"]
    read = await emulator.rest("GET", path)
    assert read.body["FilterExpression"] == "Title = 'Other'"


async def test_the_channel_objects_need_api_47(emulator: EmulatorClient) -> None:
    """PlatformEventChannel and PlatformEventChannelMember exist from API version 47.0: below, 404."""
    body = {"FullName": CHANNEL, "Metadata": {"channelType": "data", "label": "Bridge"}}
    reply = await emulator.rest("POST", f"{TOOLING}/PlatformEventChannel", json=body, version="v46.0")
    assert reply.status == 404


async def test_an_org_reset_keeps_channel_definitions_and_empties_their_events(
    emulator: EmulatorClient,
) -> None:
    """Channels and members are setup metadata, not data: the control API's reset empties their logs and
    keeps them subscribable with their filters."""
    await _channel_with_member(emulator, "Title = 'VIP'")
    user = emulator.store.integration_user_id
    await _write(emulator, "POST", "/sobjects/Contact", user, {"LastName": "Vip", "Title": "VIP"})
    await emulator.control("POST", "/reset")
    log = emulator.state.bus.channel_log(CHANNEL_PATH)
    assert log is not None and len(log) == 0
    found = await emulator.rest(
        "GET", "/tooling/query?q=SELECT Id, FilterExpression FROM PlatformEventChannelMember"
    )
    assert [r["FilterExpression"] for r in found.body["records"]] == ["Title = 'VIP'"]


async def test_the_control_api_sets_todays_deliveries_and_limits_follow(emulator: EmulatorClient) -> None:
    """POST /__emulator/streaming/delivered moves DailyDeliveredPlatformEvents' Remaining, and at the
    maximum a connect fails with the documented daily-limit error."""
    await emulator.control("POST", "/streaming/delivered", json={"used": 9_990})
    limits = (await emulator.rest("GET", "/limits")).body["DailyDeliveredPlatformEvents"]
    assert limits == {"Max": 10_000, "Remaining": 10}
    await emulator.control("POST", "/streaming/delivered", json={"used": 10_000})
    subscriber = Subscriber(emulator, await emulator.token())
    await subscriber.open("/data/ContactChangeEvent")
    replies = await subscriber.post({"channel": "/meta/connect", "connectionType": "long-polling"})
    assert replies[-1]["error"] == "403::Organization total events daily limit exceeded"


async def test_an_unmodified_cometd_client_receives_a_custom_channel(emulator: EmulatorClient) -> None:
    """aiosfstream-ng subscribes to `/data/Name__chn` as to any CDC channel and receives the passing events,
    with replay ids it can store (cdc-filter-tooling-api-add-filter.html: "Subscribe to /data/Name__chn")."""
    owner = _user(emulator, "owner1@example.com")
    await _channel_with_member(emulator, "Title = 'VIP'")
    storage: dict[str, ReplayMarker] = {}
    client = Client(
        LocalAuthenticator(emulator.url + "/services/oauth2/token"),
        replay=storage,
        replay_storage_policy=ReplayMarkerStoragePolicy.AUTOMATIC,
        connection_timeout=0,
    )
    await client.open()
    try:
        await client.subscribe(CHANNEL_PATH)
        await _write(emulator, "POST", "/sobjects/Contact", owner, {"LastName": "Other", "Title": "Other"})
        vip = (
            await _write(emulator, "POST", "/sobjects/Contact", owner, {"LastName": "Vip", "Title": "VIP"})
        )["id"]
        async with asyncio.timeout(30):  # a liveness bound only: the event wakes the long poll at once
            message = dict(await client.receive())
    finally:
        await client.close()
    assert message["channel"] == CHANNEL_PATH
    assert message["data"]["payload"]["ChangeEventHeader"]["recordIds"] == [vip]
    assert storage[CHANNEL_PATH].replay_id == message["data"]["event"]["replayId"]
