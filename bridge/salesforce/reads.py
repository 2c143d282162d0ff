"""Reads reconciliation needs: Events and Mogli Events by External ID, deleted ones included (queryAll).

queryAll returns records in the recycle bin and archived activities too, so an old Event is never reported
missing and a record deleted by a person is told apart from one that never existed. Raw JSON stops here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.config import SalesforceObjectNames
from bridge.rules.drift import EventSnapshot, MogliSnapshot
from bridge.salesforce.payloads import chunked, soql_in_list
from bridge.salesforce.rest import LOOKUP_CHUNK, SalesforceClient


def _parse_datetime(value: Any) -> datetime | None:
    """`2024-06-12T15:00:00.000+0000` or ISO-8601 with Z; None when absent."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text)


def _literal(value: datetime) -> str:
    """A SOQL datetime literal (UTC, whole seconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(field: str, since: datetime, until: datetime | None) -> list[str]:
    """SOQL conditions for [since, until) at whole seconds, widened rather than narrowed."""
    where = [f"{field} >= {_literal(since)}"]
    if until is not None:
        end = until if until.microsecond == 0 else until.replace(microsecond=0) + timedelta(seconds=1)
        where.append(f"{field} < {_literal(end)}")
    return where


def _str(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    return str(value) if value is not None else None


class SalesforceReads:
    """Snapshot reads over a SalesforceClient; every query goes through its budget and retries."""

    def __init__(self, client: SalesforceClient, names: SalesforceObjectNames) -> None:
        self._client = client
        self._names = names

    @property
    def _event_fields(self) -> str:
        n = self._names
        return (
            f"Id, IsDeleted, CreatedDate, OwnerId, WhoId, WhatId, Subject, Description, StartDateTime, "
            f"EndDateTime, {n.booking_external_id_field}, {n.event_mogli_event_field}"
        )

    @property
    def _mogli_fields(self) -> str:
        n = self._names
        return (
            f"Id, IsDeleted, CreatedDate, Name, OwnerId, {n.link_external_id_field}, {n.link_type_field}, "
            f"{n.mogli_description_field}"
        )

    def _event(self, r: Mapping[str, Any]) -> EventSnapshot:
        n = self._names
        return EventSnapshot(
            id=str(r["Id"]),
            booking_id=_str(r, n.booking_external_id_field),
            deleted=bool(r.get("IsDeleted")),
            created_at=str(r.get("CreatedDate") or ""),
            owner_id=_str(r, "OwnerId"),
            who_id=_str(r, "WhoId"),
            what_id=_str(r, "WhatId"),
            mogli_event_id=_str(r, n.event_mogli_event_field),
            subject=_str(r, "Subject"),
            description=_str(r, "Description"),
            start_at=_parse_datetime(r.get("StartDateTime")),
            end_at=_parse_datetime(r.get("EndDateTime")),
        )

    def _mogli(self, r: Mapping[str, Any]) -> MogliSnapshot:
        n = self._names
        return MogliSnapshot(
            id=str(r["Id"]),
            link_id=_str(r, n.link_external_id_field),
            deleted=bool(r.get("IsDeleted")),
            created_at=str(r.get("CreatedDate") or ""),
            name=_str(r, "Name"),
            owner_id=_str(r, "OwnerId"),
            link_type=_str(r, n.link_type_field),
            description=_str(r, n.mogli_description_field),
        )

    async def events_by_booking(self, booking_ids: Sequence[str]) -> list[EventSnapshot]:
        """Every Event (deleted ones too) whose booking External ID is one of these."""
        ext = self._names.booking_external_id_field
        out: list[EventSnapshot] = []
        for chunk in chunked(booking_ids, LOOKUP_CHUNK):
            soql = f"SELECT {self._event_fields} FROM Event WHERE {ext} IN {soql_in_list(chunk)}"  # noqa: S608
            out += [self._event(r) for r in await self._client.query(soql, include_deleted=True)]
        return out

    async def mogli_events_by_link(self, link_ids: Sequence[str]) -> list[MogliSnapshot]:
        """Every Mogli Event (deleted ones too) whose link External ID is one of these."""
        n = self._names
        out: list[MogliSnapshot] = []
        for chunk in chunked(link_ids, LOOKUP_CHUNK):
            soql = (
                f"SELECT {self._mogli_fields} FROM {n.mogli_event_object} "  # noqa: S608
                f"WHERE {n.link_external_id_field} IN {soql_in_list(chunk)}"
            )
            out += [self._mogli(r) for r in await self._client.query(soql, include_deleted=True)]
        return out

    async def booking_keys(self, since: datetime | None, until: datetime | None) -> set[str]:
        """Booking External IDs of live Events (optionally starting in [since, until))."""
        ext = self._names.booking_external_id_field
        where = [f"{ext} != null"]
        if since is not None:
            where.append(f"StartDateTime >= {_literal(since)}")
        if until is not None:
            where.append(f"StartDateTime < {_literal(until)}")
        soql = f"SELECT {ext} FROM Event WHERE {' AND '.join(where)}"  # noqa: S608
        return {str(r[ext]) for r in await self._client.query(soql) if r.get(ext)}

    async def booking_keys_of_links(self, mogli_event_ids: Sequence[str]) -> set[str]:
        """Booking External IDs of live Events pointing at these Mogli Events."""
        n = self._names
        ext, field = n.booking_external_id_field, n.event_mogli_event_field
        keys: set[str] = set()
        for chunk in chunked(mogli_event_ids, LOOKUP_CHUNK):
            soql = f"SELECT {ext} FROM Event WHERE {field} IN {soql_in_list(chunk)}"  # noqa: S608
            keys |= {str(r[ext]) for r in await self._client.query(soql) if r.get(ext)}
        return keys

    async def link_keys(self) -> set[str]:
        """Link External IDs of every live Mogli Event."""
        n = self._names
        soql = (
            f"SELECT {n.link_external_id_field} FROM {n.mogli_event_object} "  # noqa: S608
            f"WHERE {n.link_external_id_field} != null"
        )
        field = n.link_external_id_field
        return {str(r[field]) for r in await self._client.query(soql) if r.get(field)}

    async def changed_keys(self, since: datetime, until: datetime | None) -> tuple[set[str], set[str]]:
        """Booking External IDs of Events and link External IDs of Mogli Events changed in [since, until).

        By SystemModstamp (it moves with every change, LastModifiedDate only with a user's), through queryAll
        so that records deleted in the window are in it too.
        """
        n = self._names
        keys: list[set[str]] = []
        for sobject, ext in (
            ("Event", n.booking_external_id_field),
            (n.mogli_event_object, n.link_external_id_field),
        ):
            where = " AND ".join([f"{ext} != null", *_window("SystemModstamp", since, until)])
            soql = f"SELECT {ext} FROM {sobject} WHERE {where}"  # noqa: S608
            records = await self._client.query(soql, include_deleted=True)
            keys.append({str(r[ext]) for r in records if r.get(ext)})
        return keys[0], keys[1]

    async def delete(self, ids: Sequence[str]) -> set[str]:
        """Delete records; returns the ids deleted (already gone counts as deleted)."""
        results = await self._client.delete_records(list(ids))
        return {record_id for record_id, r in zip(ids, results, strict=True) if r.ok}
