"""Salesforce JSON in and out: request bodies from records, records from responses (pure).

Raw Salesforce JSON stops here; the rest of the bridge sees `WriteResult`, `ApiUsage` and
`ObjectDescription`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.config import SalesforceObjectNames
from bridge.errors import ErrorKind, SalesforceUnavailable
from bridge.records.outbound import ApiUsage, EventFields, MogliEventFields, RecordError, WriteResult
from bridge.salesforce.errors import ALREADY_DELETED_CODES, classify_record_errors

COLLECTION_LIMIT = 200  # records per sObject Collections call (Salesforce rejects more)
_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ObjectDescription:
    """What `describe` says about an sObject: its API name, field names and External ID fields."""

    name: str
    fields: frozenset[str]
    external_id_fields: frozenset[str]


def chunked(items: Sequence[_T], size: int = COLLECTION_LIMIT) -> Iterator[Sequence[_T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def parse_limit_info(header: str | None) -> ApiUsage | None:
    """`api-usage=18/15000[; per-app-api-usage=...]` -> ApiUsage(18, 15000); None when absent or odd."""
    if not header:
        return None
    match = _API_USAGE.search(header)
    if match is None:
        return None
    used, limit = int(match.group(1)), int(match.group(2))
    return ApiUsage(used=used, limit=limit) if limit > 0 else None


def format_datetime(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and `Z`; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def mogli_event_record(item: MogliEventFields, names: SalesforceObjectNames) -> dict[str, Any]:
    """The collections-upsert body entry of one Mogli Event (External ID value included)."""
    return {
        "attributes": {"type": names.mogli_event_object},
        names.link_external_id_field: item.link_id,
        "Name": item.name,
        names.link_type_field: item.link_type,
        names.mogli_description_field: item.description,
        "OwnerId": item.owner_id,
    }


def event_record(item: EventFields, names: SalesforceObjectNames) -> dict[str, Any]:
    """The collections-upsert body entry of one Event; None values are sent as null to clear fields."""
    return {
        "attributes": {"type": "Event"},
        names.booking_external_id_field: item.booking_id,
        "OwnerId": item.owner_id,
        "WhoId": item.who_id,
        "WhatId": item.what_id,
        names.event_mogli_event_field: item.mogli_event_id,
        "Subject": item.subject,
        "Description": item.description,
        "StartDateTime": format_datetime(item.start_at),
        "EndDateTime": format_datetime(item.end_at),
        "IsAllDayEvent": False,
    }


def _results(body: Any, expected: int) -> list[Mapping[str, Any]]:
    """The per-record result list of a collections response, checked against the request size."""
    if not isinstance(body, list) or len(body) != expected or not all(isinstance(r, dict) for r in body):
        got = len(body) if isinstance(body, list) else type(body).__name__
        raise SalesforceUnavailable(f"collections response has {got} results for {expected} records")
    return body


def decode_upsert_results(
    keys: Sequence[str], body: Any, configured_fields: frozenset[str] = frozenset()
) -> list[WriteResult]:
    """WriteResults of a collections upsert, result i for key i (see errors.record_kind for the fields)."""
    out = []
    for key, result in zip(keys, _results(body, len(keys)), strict=True):
        record_id = result.get("id") or None
        created = result.get("created")
        if result.get("success"):
            out.append(WriteResult(key, record_id, created if isinstance(created, bool) else None))
        else:
            error = classify_record_errors(result.get("errors") or [], configured_fields=configured_fields)
            out.append(WriteResult(key, record_id, None, error))
    return out


def decode_delete_results(ids: Sequence[str], body: Any) -> list[WriteResult]:
    """WriteResults of a collections delete; an already-deleted or missing record counts as deleted."""
    out = []
    for record_id, result in zip(ids, _results(body, len(ids)), strict=True):
        if result.get("success"):
            out.append(WriteResult(record_id, record_id))
            continue
        error = classify_record_errors(result.get("errors") or [])
        if error.code in ALREADY_DELETED_CODES:
            out.append(WriteResult(record_id, record_id, None, None))
        else:
            out.append(WriteResult(record_id, record_id, None, error))
    return out


def malformed_id_result(record_id: str) -> WriteResult:
    """The result for an id that is not a Salesforce id at all (never sent)."""
    error = RecordError("MALFORMED_ID", "not a 15- or 18-character Salesforce id", ErrorKind.PERMANENT)
    return WriteResult(record_id, None, None, error)


def soql_literal(value: str) -> str:
    """A quoted SOQL string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def soql_in_list(values: Sequence[str]) -> str:
    """`('a','b')` for a WHERE ... IN clause."""
    return "(" + ",".join(soql_literal(v) for v in values) + ")"


def decode_describe(body: Any) -> ObjectDescription:
    """An ObjectDescription from a `/sobjects/X/describe` response."""
    if not isinstance(body, dict) or not isinstance(body.get("fields"), list):
        raise SalesforceUnavailable("describe response lacks a fields list")
    fields = [f for f in body["fields"] if isinstance(f, dict) and isinstance(f.get("name"), str)]
    return ObjectDescription(
        name=str(body.get("name") or ""),
        fields=frozenset(f["name"] for f in fields),
        external_id_fields=frozenset(f["name"] for f in fields if f.get("externalId")),
    )


def decode_limits(body: Any) -> ApiUsage:
    """ApiUsage from `/limits` (`DailyApiRequests: {Max, Remaining}`)."""
    daily = body.get("DailyApiRequests") if isinstance(body, dict) else None
    if not isinstance(daily, dict) or not isinstance(daily.get("Max"), int):
        raise SalesforceUnavailable("limits response lacks DailyApiRequests")
    limit = int(daily["Max"])
    remaining = int(daily.get("Remaining") or 0)
    return ApiUsage(used=max(limit - remaining, 0), limit=limit)


def soql_select_in(fields: Sequence[str], sobject: str, key_field: str, values: Sequence[str]) -> str:
    """`SELECT fields FROM sobject WHERE key_field IN (...)` with every value quoted."""
    # Every value goes through soql_literal; the names are API names from validated settings.
    return f"SELECT {', '.join(fields)} FROM {sobject} WHERE {key_field} IN {soql_in_list(values)}"  # noqa: S608
