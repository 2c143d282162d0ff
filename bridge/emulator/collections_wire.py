"""The forms of sObject Collections calls: their limits, arguments and per-record results (pure).

`collections.py` runs the calls against the store; this module says what a call may carry and how each
record's result reads. https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge import sfid
from bridge.emulator.context import require_object
from bridge.emulator.contracts import ApiError
from bridge.emulator.rest import not_found

MAX_RECORDS = 200
MAX_CHUNKS = 10  # runs of one object type in a create or update call
MAX_RETRIEVE = 2000  # POST retrieve; GET is bounded by the URL's length (about 800 ids)
COLLECTIONS_VERSION = 42.0  # the resource exists from this API version
UPSERT_VERSION = 46.0  # the upsert form exists from this API version
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": (
        "Record rolled back because not all records were valid and the request was using AllOrNone header"
    ),
    "fields": [],
}


def failure(record_id: str | None, error: Mapping[str, Any]) -> dict[str, Any]:
    """A failed per-record result."""
    return {"id": record_id, "success": False, "errors": [dict(error)]}


def too_many(count: int, limit: int = MAX_RECORDS) -> ApiError:
    """The whole-call rejection above 200 records (2,000 ids for a POST retrieve)."""
    return ApiError(
        400,
        "EXCEEDED_ID_LIMIT",
        f"record limit reached. cannot submit more than {limit} records into this call ({count} sent)",
    )


def saved(record_id: str) -> dict[str, Any]:
    """A successful per-record result."""
    return {"id": record_id, "success": True, "errors": []}


def valid_id(raw: str) -> str:
    """The 18-character form of a record id; 400 MALFORMED_ID when it is not one."""
    try:
        return sfid.to18(raw)
    except ValueError as exc:
        raise ApiError(400, "MALFORMED_ID", f"malformed id {raw}", ["Id"]) from exc


def retrieve_arguments(method: str, body: Any, query: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(ids, fields) from the GET query string or the POST body `{"ids": [...], "fields": [...]}`."""
    if method == "GET":
        return listed(query.get("ids", "")), listed(query.get("fields", ""))
    envelope = require_object(body)
    lists = []
    for name in ("ids", "fields"):
        value = envelope.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(400, "JSON_PARSER_ERROR", f"{name}: expected an array of strings")
        lists.append([v.strip() for v in value if v.strip()])
    return lists[0], lists[1]


def listed(text: str) -> list[str]:
    """The non-empty items of a comma-separated query parameter."""
    return [v.strip() for v in text.split(",") if v.strip()]


def require_version(version: str, since: float) -> None:
    """404 NOT_FOUND, as for any unknown resource, when the API version predates the resource."""
    if float(version) < since:
        raise not_found()


def check_size(count: int) -> None:
    """The whole call is refused above 200 records."""
    if count > MAX_RECORDS:
        raise too_many(count)


def flag(value: str | None) -> bool:
    """A `true`/`false` query parameter (anything else is false)."""
    return (value or "").strip().lower() == "true"
