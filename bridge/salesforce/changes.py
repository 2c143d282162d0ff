"""Change events as records: decoding CometD CDC messages, and re-reading records as synthetic changes.

Raw CometD JSON stops here. `decode_change` turns one event message into a `SalesforceChange`; `ChangeReader`
re-reads Events and Mogli Events by id (`queryAll`, so deleted and archived records are seen) for gap events
and converted Leads, and describes what it found as changes of the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge import sfid
from bridge.config import SalesforceObjectNames
from bridge.records.inbound import ChangeEntity, ChangeType, Field, SalesforceChange
from bridge.salesforce.payloads import chunked, soql_select_in
from bridge.salesforce.rest import SalesforceClient

LOOKUP_CHUNK = 100
_BODY_FIELDS = {
    "OwnerId": Field.OWNER,
    "WhoId": Field.WHO,
    "WhatId": Field.WHAT,
    "StartDateTime": Field.START,
    "EndDateTime": Field.END,
    "IsConverted": Field.IS_CONVERTED,
}


def parse_datetime(value: Any) -> datetime | None:
    """`2024-06-12T15:00:00.000Z` or `...+0000` as aware UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def utc_from_millis(value: Any) -> datetime:
    """An epoch-milliseconds timestamp as aware UTC (the epoch when unreadable)."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (TypeError, ValueError, OverflowError):
        return datetime.fromtimestamp(0, UTC)


def _id(value: Any) -> str | None:
    """An 18-character id, or None for null and for values that are not ids."""
    if not isinstance(value, str) or not sfid.is_valid(value):
        return None
    return sfid.to18(value)


def entity_of(name: str, names: SalesforceObjectNames) -> ChangeEntity:
    """The watched entity an sObject name stands for."""
    if name == "Event":
        return ChangeEntity.EVENT
    if name.lower() == names.mogli_event_object.lower():
        return ChangeEntity.MOGLI_EVENT
    if name == "Lead":
        return ChangeEntity.LEAD
    return ChangeEntity.OTHER


def _external_field(entity: ChangeEntity, names: SalesforceObjectNames) -> str | None:
    if entity is ChangeEntity.EVENT:
        return names.booking_external_id_field
    if entity is ChangeEntity.MOGLI_EVENT:
        return names.link_external_id_field
    return None


def _values(body: Mapping[str, Any], entity: ChangeEntity, names: SalesforceObjectNames) -> dict[str, Any]:
    """The typed values and the `present` set of a record body (event payload or query row)."""
    present = {f for key, f in _BODY_FIELDS.items() if key in body}
    external_field = _external_field(entity, names)
    external = body.get(external_field) if external_field else None
    if external_field and external_field in body:
        present.add(Field.EXTERNAL_ID)
    converted = body.get("IsConverted")
    return {
        "present": frozenset(present),
        "owner_id": _id(body.get("OwnerId")),
        "who_id": _id(body.get("WhoId")),
        "what_id": _id(body.get("WhatId")),
        "start_at": parse_datetime(body.get("StartDateTime")),
        "end_at": parse_datetime(body.get("EndDateTime")),
        "external_id": str(external) if external else None,
        "is_converted": converted if isinstance(converted, bool) else None,
        "converted_contact_id": _id(body.get("ConvertedContactId")),
    }


def decode_change(message: Mapping[str, Any], names: SalesforceObjectNames) -> SalesforceChange | None:
    """One CometD CDC message as a change; None when it is not a readable change event."""
    data = message.get("data")
    if not isinstance(data, Mapping):
        return None
    payload, event = data.get("payload"), data.get("event")
    header = payload.get("ChangeEventHeader") if isinstance(payload, Mapping) else None
    if not isinstance(header, Mapping) or not isinstance(event, Mapping):
        return None
    try:
        change_type = ChangeType(str(header.get("changeType")))
        replay_id = int(event["replayId"])
    except (KeyError, TypeError, ValueError):
        return None
    entity = entity_of(str(header.get("entityName", "")), names)
    record_ids = tuple(i for i in (_id(r) for r in header.get("recordIds") or ()) if i is not None)
    assert isinstance(payload, Mapping)  # checked above through header
    return SalesforceChange(
        channel=str(message.get("channel", "")),
        replay_id=replay_id,
        entity=entity,
        change_type=change_type,
        record_ids=record_ids,
        commit_time=utc_from_millis(header.get("commitTimestamp")),
        change_origin=str(header.get("changeOrigin") or ""),
        commit_user=_id(header.get("commitUser")),
        **_values(payload, entity, names),
    )


class ChangeReader:
    """Re-reads records by id and describes each as a change (DELETE when deleted, else UNDELETE with values).

    UNDELETE is what a live record looks like to the policy: for a record the ledger holds as deleted it is a
    restore; for a live one it compares every value with what the bridge last wrote.
    """

    def __init__(self, client: SalesforceClient, names: SalesforceObjectNames) -> None:
        self._client = client
        self._names = names

    async def read_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """Events by id, deleted and archived ones included."""
        ext = self._names.booking_external_id_field
        fields = ("Id", "IsDeleted", "OwnerId", "WhoId", "WhatId", "StartDateTime", "EndDateTime", ext)
        return await self._read("Event", fields, ChangeEntity.EVENT, ids, commit_time)

    async def read_mogli_events(self, ids: Sequence[str], commit_time: datetime) -> list[SalesforceChange]:
        """Mogli Events by id, deleted ones included."""
        fields = ("Id", "IsDeleted", self._names.link_external_id_field)
        return await self._read(
            self._names.mogli_event_object, fields, ChangeEntity.MOGLI_EVENT, ids, commit_time
        )

    async def _read(
        self,
        sobject: str,
        fields: Sequence[str],
        entity: ChangeEntity,
        ids: Sequence[str],
        commit_time: datetime,
    ) -> list[SalesforceChange]:
        out: list[SalesforceChange] = []
        for chunk in chunked(sorted({i for i in ids if sfid.is_valid(i)}), LOOKUP_CHUNK):
            soql = soql_select_in(fields, sobject, "Id", chunk)
            for row in await self._client.query(soql, include_deleted=True):
                record_id = _id(row.get("Id"))
                if record_id is None:
                    continue
                deleted = bool(row.get("IsDeleted"))
                values = {} if deleted else _values(row, entity, self._names)
                out.append(
                    SalesforceChange(
                        channel="reread",
                        replay_id=None,
                        entity=entity,
                        change_type=ChangeType.DELETE if deleted else ChangeType.UNDELETE,
                        record_ids=(record_id,),
                        commit_time=commit_time,
                        **values,
                    )
                )
        return out
