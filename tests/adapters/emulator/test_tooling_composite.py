"""The Tooling API's Composite resource (`POST .../tooling/composite`) over the channel objects: one API
request for several writes, references to earlier results, all or none."""

from __future__ import annotations

from typing import Any

from tests.adapters.emulator.conftest import EmulatorClient

CHANNEL, MEMBER = "Bridge__chn", "Bridge_chn_ContactChangeEvent"
SOBJECTS = "/services/data/v60.0/tooling/sobjects"


def _channel(reference: str = "channel") -> dict[str, Any]:
    body = {"FullName": CHANNEL, "Metadata": {"channelType": "data", "label": "Bridge"}}
    return {
        "method": "POST",
        "url": f"{SOBJECTS}/PlatformEventChannel",
        "referenceId": reference,
        "body": body,
    }


def _member(filter_expression: str, reference: str = "member") -> dict[str, Any]:
    metadata = {
        "eventChannel": CHANNEL,
        "selectedEntity": "ContactChangeEvent",
        "filterExpression": filter_expression,
    }
    body = {"FullName": MEMBER, "Metadata": metadata}
    return {
        "method": "POST",
        "url": f"{SOBJECTS}/PlatformEventChannelMember",
        "referenceId": reference,
        "body": body,
    }


async def _composite(emulator: EmulatorClient, all_or_none: bool, *subrequests: dict[str, Any]) -> list[Any]:
    body = {"allOrNone": all_or_none, "compositeRequest": list(subrequests)}
    reply = await emulator.rest("POST", "/tooling/composite", json=body)
    assert reply.status == 200, reply.body
    return list(reply.body["compositeResponse"])


async def _records(emulator: EmulatorClient, type_name: str) -> list[dict[str, Any]]:
    reply = await emulator.rest("GET", f"/tooling/query?q=SELECT Id, FullName FROM {type_name}")
    return list(reply.body["records"])


async def _requests(emulator: EmulatorClient) -> int:
    return int((await emulator.control("GET", "/stats"))["api_requests"]["total"])


async def test_a_channel_and_its_member_in_one_counted_request(emulator: EmulatorClient) -> None:
    """Both are created (201 each, with their ids), and the org counts one API request."""
    before = await _requests(emulator)
    created = await _composite(emulator, True, _channel(), _member("Title = 'VIP'"))
    assert await _requests(emulator) - before == 1
    assert [(r["referenceId"], r["httpStatusCode"]) for r in created] == [("channel", 201), ("member", 201)]
    ids = {r["Id"] for r in await _records(emulator, "PlatformEventChannel")}
    assert ids == {created[0]["body"]["id"]}
    assert [r["FullName"] for r in await _records(emulator, "PlatformEventChannelMember")] == [MEMBER]


async def test_all_or_none_undoes_every_write_before_a_failure(emulator: EmulatorClient) -> None:
    """A member with an invalid filter after its channel: the member's own error, the channel's answer
    PROCESSING_HALTED, and no channel left behind; without allOrNone the channel stays."""
    answers = await _composite(emulator, True, _channel(), _member("NoSuchField__x = 'x'"))
    assert answers[1]["httpStatusCode"] == 400 and answers[1]["body"][0]["errorCode"] != "PROCESSING_HALTED"
    assert answers[0]["httpStatusCode"] == 400 and answers[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert await _records(emulator, "PlatformEventChannel") == []
    partial = await _composite(emulator, False, _channel(), _member("NoSuchField__x = 'x'"))
    assert [r["httpStatusCode"] for r in partial] == [201, 400]
    assert len(await _records(emulator, "PlatformEventChannel")) == 1


async def test_an_undone_filter_change_is_the_old_filter_again(emulator: EmulatorClient) -> None:
    """A member's filter changed, then a duplicate channel refused, all or none: the old filter stays."""
    created = await _composite(emulator, True, _channel(), _member("Title = 'VIP'"))
    member_id = created[1]["body"]["id"]
    patch = {
        "method": "PATCH",
        "url": f"{SOBJECTS}/PlatformEventChannelMember/{member_id}",
        "referenceId": "patch",
        "body": {"Metadata": {"filterExpression": "Title = 'CEO'"}},
    }
    answers = await _composite(emulator, True, patch, _channel("again"))
    assert [r["httpStatusCode"] for r in answers] == [400, 400]
    assert answers[1]["body"][0]["errorCode"] == "DUPLICATE_DEVELOPER_NAME"
    read = await emulator.rest("GET", f"/tooling/sobjects/PlatformEventChannelMember/{member_id}")
    assert read.body["FilterExpression"] == "Title = 'VIP'"


async def test_an_unsupported_subrequest_and_a_reference_to_nothing(emulator: EmulatorClient) -> None:
    """A subrequest outside the channel objects' writes is 404 (even a read: the emulator serves no more
    than the bridge uses); `@{ref.id}` naming no earlier result halts its subrequest."""
    created = await _composite(emulator, False, _channel())
    channel_id = created[0]["body"]["id"]
    read = {"method": "GET", "url": f"{SOBJECTS}/PlatformEventChannel/{channel_id}", "referenceId": "read"}
    other = {
        "method": "POST",
        "url": "/services/data/v60.0/tooling/sobjects/ApexClass",
        "referenceId": "apex",
    }
    answers = await _composite(emulator, False, read, other)
    assert [r["httpStatusCode"] for r in answers] == [404, 404]
    missing = {**_member("Title = 'VIP'"), "url": f"{SOBJECTS}/PlatformEventChannelMember/@{{nothing.id}}"}
    [answer] = await _composite(emulator, True, missing)
    assert answer["body"][0]["errorCode"] == "PROCESSING_HALTED" and "nothing" in answer["body"][0]["message"]
