"""Salesforce wire formats: request bodies, result decoding, Sforce-Limit-Info, SOQL quoting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.config import SalesforceObjectNames
from bridge.errors import ErrorKind, SalesforceUnavailable
from bridge.records.outbound import ApiUsage, EventFields, MogliEventFields, WriteResult
from bridge.salesforce.payloads import (
    chunked,
    decode_delete_results,
    decode_describe,
    decode_limits,
    decode_upsert_results,
    event_record,
    format_datetime,
    malformed_id_result,
    mogli_event_record,
    parse_limit_info,
    soql_literal,
    soql_select_in,
)

NAMES = SalesforceObjectNames()
PLUS_ONE = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("api-usage=18/15000", ApiUsage(18, 15000)),
        ("api-usage=18/15000; per-app-api-usage=17/250(appName=sample)", ApiUsage(18, 15000)),
        ("per-app-api-usage=17/250(appName=x); api-usage=90/100", ApiUsage(90, 100)),
        ("api-usage=0/0", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_limit_info(header: str | None, expected: ApiUsage | None) -> None:
    """The org-wide `api-usage=used/limit` pair is read; the per-app figure is not mistaken for it."""
    assert parse_limit_info(header) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 11, 24, 15, 0, tzinfo=UTC), "2026-11-24T15:00:00.000Z"),
        (datetime(2026, 11, 24, 16, 30, 5, 123456, tzinfo=PLUS_ONE), "2026-11-24T15:30:05.123Z"),
        (datetime(2026, 1, 1, 0, 0), "2026-01-01T00:00:00.000Z"),
    ],
)
def test_format_datetime_is_utc_with_z(value: datetime, text: str) -> None:
    """Datetimes go out as ISO-8601 UTC with milliseconds and Z (naive means UTC)."""
    assert format_datetime(value) == text


def make_event(**changes: Any) -> EventFields:
    """An EventFields with plausible values."""
    values: dict[str, Any] = {
        "booking_id": "b-1",
        "owner_id": "005xx0000000001AAA",
        "who_id": "003xx0000000001AAA",
        "what_id": "a00xx0000000001AAA",
        "mogli_event_id": "a00xx0000000001AAA",
        "subject": "Intro call",
        "description": "Talk",
        "start_at": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        "end_at": datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
    }
    values.update(changes)
    return EventFields(**values)


def test_event_record_carries_every_field() -> None:
    """The Event body has the External ID value, the configured Mogli Event field and UTC times."""
    assert event_record(make_event(), NAMES) == {
        "attributes": {"type": "Event"},
        "Scheduling_Booking_Id__c": "b-1",
        "OwnerId": "005xx0000000001AAA",
        "WhoId": "003xx0000000001AAA",
        "WhatId": "a00xx0000000001AAA",
        "Mogli_Event_Id__c": "a00xx0000000001AAA",
        "Subject": "Intro call",
        "Description": "Talk",
        "StartDateTime": "2026-12-01T09:00:00.000Z",
        "EndDateTime": "2026-12-01T09:30:00.000Z",
        "IsAllDayEvent": False,
    }


def test_event_record_sends_explicit_nulls() -> None:
    """None values are sent as null so an update clears WhoId/WhatId/Description."""
    record = event_record(make_event(who_id=None, what_id=None, description=None), NAMES)
    assert record["WhoId"] is None
    assert record["WhatId"] is None
    assert record["Description"] is None
    assert "WhoId" in record and "WhatId" in record


def test_event_record_follows_configured_names() -> None:
    """Custom API names from settings are used for the External ID and Mogli Event fields."""
    names = SalesforceObjectNames(booking_external_id_field="Ext__c", event_mogli_event_field="ME__c")
    record = event_record(make_event(), names)
    assert record["Ext__c"] == "b-1"
    assert record["ME__c"] == "a00xx0000000001AAA"
    assert "Scheduling_Booking_Id__c" not in record


def test_mogli_event_record() -> None:
    """The Mogli Event body carries the link id, name, type, description and owner."""
    item = MogliEventFields("l-1", "Demo link", "round_robin", None, "005xx0000000001AAA")
    assert mogli_event_record(item, NAMES) == {
        "attributes": {"type": "Mogli_Event__c"},
        "Scheduling_Link_Id__c": "l-1",
        "Name": "Demo link",
        "Link_Type__c": "round_robin",
        "Description__c": None,
        "OwnerId": "005xx0000000001AAA",
    }


def test_decode_upsert_results_in_order() -> None:
    """Result i belongs to key i: ids, created flags and classified errors."""
    body = [
        {"id": "00Uxx0000000001AAA", "success": True, "errors": [], "created": True},
        {"id": None, "success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}]},
        {"id": "00Uxx0000000003AAA", "success": True, "errors": [], "created": False},
    ]
    results = decode_upsert_results(["a", "b", "c"], body)
    assert [r.key for r in results] == ["a", "b", "c"]
    assert results[0] == WriteResult("a", "00Uxx0000000001AAA", True)
    assert results[1].error is not None and results[1].error.kind is ErrorKind.TRANSIENT
    assert results[1].record_id is None
    assert results[2].created is False and results[2].ok


@pytest.mark.parametrize("body", [[], {"oops": 1}, None, [{"success": True}, "x"]])
def test_decode_upsert_results_rejects_wrong_shapes(body: Any) -> None:
    """A response that does not hold one result object per record is treated as a broken answer."""
    with pytest.raises(SalesforceUnavailable):
        decode_upsert_results(["a", "b"], body)


def test_decode_delete_results_treats_gone_records_as_deleted() -> None:
    """ENTITY_IS_DELETED and NOT_FOUND are success for deletes (idempotent), other errors are kept."""
    ids = ["00Uxx0000000001AAA", "00Uxx0000000002AAA", "00Uxx0000000003AAA", "00Uxx0000000004AAA"]
    body = [
        {"id": ids[0], "success": True, "errors": []},
        {"id": ids[1], "success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "gone"}]},
        {"id": ids[2], "success": False, "errors": [{"statusCode": "NOT_FOUND", "message": "nope"}]},
        {"id": ids[3], "success": False, "errors": [{"statusCode": "INSUFFICIENT_ACCESS_OR_READONLY"}]},
    ]
    results = decode_delete_results(ids, body)
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[1] == WriteResult(ids[1], ids[1], None, None)
    assert results[3].error is not None and results[3].error.code == "INSUFFICIENT_ACCESS_OR_READONLY"


def test_malformed_id_result_is_permanent() -> None:
    """An id that is not an id is failed locally and permanently."""
    result = malformed_id_result("not-an-id")
    assert result.error is not None
    assert (result.error.code, result.error.kind) == ("MALFORMED_ID", ErrorKind.PERMANENT)


@pytest.mark.parametrize(
    ("value", "literal"),
    [("abc", "'abc'"), ("o'brien", "'o\\'brien'"), ("back\\slash", "'back\\\\slash'"), ("a\nb", "'a\\nb'")],
)
def test_soql_literal_escapes(value: str, literal: str) -> None:
    """Quotes, backslashes and newlines cannot break out of a SOQL string literal."""
    assert soql_literal(value) == literal


def test_soql_select_in() -> None:
    """The IN query lists every value quoted."""
    soql = soql_select_in(("Id", "Ext__c"), "Event", "Ext__c", ["a", "b'c"])
    assert soql == "SELECT Id, Ext__c FROM Event WHERE Ext__c IN ('a','b\\'c')"


def test_chunked_splits_at_200() -> None:
    """450 items become chunks of 200, 200 and 50, in order."""
    chunks = list(chunked(list(range(450))))
    assert [len(c) for c in chunks] == [200, 200, 50]
    assert [x for c in chunks for x in c] == list(range(450))


def test_decode_describe() -> None:
    """Field names and the External ID fields come out of a describe body."""
    body = {
        "name": "Event",
        "fields": [
            {"name": "Id", "externalId": False},
            {"name": "Scheduling_Booking_Id__c", "externalId": True},
            {"name": "Subject"},
        ],
    }
    description = decode_describe(body)
    assert description.name == "Event"
    assert description.fields == {"Id", "Scheduling_Booking_Id__c", "Subject"}
    assert description.external_id_fields == {"Scheduling_Booking_Id__c"}


def test_decode_limits() -> None:
    """DailyApiRequests {Max, Remaining} becomes ApiUsage(used, limit)."""
    usage = decode_limits({"DailyApiRequests": {"Max": 15000, "Remaining": 14000}})
    assert usage == ApiUsage(used=1000, limit=15000)
    assert usage.remaining == 14000
