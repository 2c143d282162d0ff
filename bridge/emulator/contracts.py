"""The seams between the emulator's parts: the data store, the CDC event bus and the HTTP layers.

The store describes each committed DML transaction as ChangeEvents and hands them to a ChangePublisher
(the streaming service's event bus). The streaming service asks a TokenValidator whether a bearer token
is good. Both sides import only this module from each other.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One Change Data Capture event, before the bus gives it a replay id.

    `fields` is the CometD JSON body per change type (CREATE and UNDELETE: every non-null field plus
    system fields; UPDATE: only the changed fields plus LastModifiedDate; DELETE and gap events: empty).
    Datetimes in `fields` are already rendered as ISO-8601 UTC strings with `Z`.
    """

    entity: str  # "Event", "Lead", "Mogli_Event__c", ...
    change_type: str  # CREATE | UPDATE | DELETE | UNDELETE | GAP_CREATE | ... | GAP_OVERFLOW
    record_ids: tuple[str, ...]
    fields: Mapping[str, Any]
    changed_fields: tuple[str, ...]
    change_origin: str  # "com/salesforce/api/rest/60.0;client=mogli-bridge" or without ";client="
    commit_user: str
    transaction_key: str
    sequence_number: int
    commit_timestamp_ms: int
    commit_number: int = 0
    # Per record id: the record's rendered field values after the change (before it, for a DELETE). Never
    # sent; filters of channel members read it, and enrich the fields they name from it.
    record_values: tuple[Mapping[str, Any], ...] = ()

    def scalar_header(self) -> dict[str, Any]:
        """The scalar ChangeEventHeader fields (what a filter may test; every transport sends them)."""
        return {
            "entityName": self.entity,
            "changeType": self.change_type,
            "changeOrigin": self.change_origin,
            "transactionKey": self.transaction_key,
            "sequenceNumber": self.sequence_number,
            "commitTimestamp": self.commit_timestamp_ms,
            "commitNumber": self.commit_number,
            "commitUser": self.commit_user,
        }


class ChangePublisher(Protocol):
    """Accepts the change events of one committed transaction, in order."""

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Store the events, give them replay ids and wake subscribers."""


class TokenCheck(enum.Enum):
    """Result of checking an `Authorization` header."""

    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"  # unknown, expired or revoked


class TokenValidator(Protocol):
    """Checks the `Authorization: Bearer ...` header of a request."""

    def __call__(self, authorization: str | None) -> TokenCheck:
        """VALID, MISSING or INVALID."""


@dataclass(frozen=True, slots=True)
class StreamingSettings:
    """Org-file `[streaming]` section: timing and allocations of the Streaming API."""

    long_poll_timeout_seconds: float = 110.0
    retention_seconds: float = 72 * 3600.0
    client_expiry_seconds: float = 40.0  # after a delivery, or past the long poll, without a new connect
    max_concurrent_clients: int = 20
    daily_delivered_events: int = 10_000
    cdc_entities: tuple[str, ...] = ("Event", "Lead", "Contact", "Mogli_Event__c")
    emit_event_updates_on_lead_convert: bool = True
    # Sforce-Call-Options is documented only for sObject Basic Information, Rows, Rows by External ID, Query,
    # QueryAll, Search and Bulk API: by default writes through Collections and Composite carry no `client=`.
    collections_client_origin: bool = False
    # The same change to several records of one object in one transaction may come as one event.
    merge_same_changes: bool = True
    # Whether a channel member's filter sees a deleted record's field values (undocumented: off by default).
    filter_deleted_values: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


def change_event_channel(entity: str) -> str:
    """`Event` -> `/data/EventChangeEvent`; `Mogli_Event__c` -> `/data/Mogli_Event__ChangeEvent`."""
    if entity.endswith("__c"):
        return f"/data/{entity[:-3]}__ChangeEvent"
    return f"/data/{entity}ChangeEvent"


class ApiError(Exception):
    """A Salesforce REST error: rendered as HTTP `status` with body `[{"message","errorCode","fields"}]`."""

    def __init__(self, status: int, error_code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = list(fields)

    def body(self) -> list[dict[str, Any]]:
        """The REST error array."""
        return [{"message": self.message, "errorCode": self.error_code, "fields": self.fields}]

    def record_error(self) -> dict[str, Any]:
        """The per-record error object used inside sObject Collections results (key `statusCode`)."""
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True, slots=True)
class DmlContext:
    """Who makes a change and through what: becomes commitUser, LastModifiedById and changeOrigin."""

    user_id: str
    change_origin: str  # e.g. "com/salesforce/api/rest/60.0;client=mogli-bridge", "" for UI/seed
