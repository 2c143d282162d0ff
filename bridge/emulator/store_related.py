"""Rules between related records: what a delete takes with it, and the caps on an Event's relations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ApiError
from bridge.emulator.store_rows import Row, RowTable

_MAX_INVITEES = 1000
_MAX_CONTACT_WHOS = 50


def check_invitee_caps(table: RowTable, values: Mapping[str, Any]) -> None:
    """Reference §3.3: one row per person, at most 1,000 invitees and 50 contacts or one lead as whos."""
    relations = [
        r
        for r in table.referrers(values["EventId"])
        if r.sobject == "EventRelation" and not r.deleted and r.values["EventId"] == values["EventId"]
    ]
    same = [r.id for r in relations if r.values["RelationId"] == values["RelationId"]]
    if same:
        raise ApiError(
            400,
            "DUPLICATE_VALUE",
            f"duplicate value found: RelationId duplicates value on record with id: {same[0]}",
            ["RelationId"],
        )
    prefix = str(values["RelationId"])[:3]
    if values.get("IsInvitee") and sum(bool(r.values.get("IsInvitee")) for r in relations) >= _MAX_INVITEES:
        raise ApiError(400, "LIMIT_EXCEEDED", f"An event can't have more than {_MAX_INVITEES} invitees")
    whos = [r.values["RelationId"][:3] for r in relations if r.values.get("IsParent")]
    if values.get("IsParent") and prefix in (sfid.CONTACT_PREFIX, sfid.LEAD_PREFIX):
        if prefix == sfid.LEAD_PREFIX and whos:
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", "An event can be related to only one lead")
        if sfid.LEAD_PREFIX in whos or whos.count(sfid.CONTACT_PREFIX) >= _MAX_CONTACT_WHOS:
            raise ApiError(
                400,
                "LIMIT_EXCEEDED",
                f"An event can be related to up to {_MAX_CONTACT_WHOS} contacts or one lead",
            )


def cascade_targets(table: RowTable, root: Row) -> list[Row]:
    """What Salesforce deletes with `root` (reference §3.4): activities, account contacts, relations."""
    out: dict[str, Row] = {}
    queue = [root]
    while queue:
        parent = queue.pop()
        for child in table.referrers(parent.id):
            if child.deleted or child.id in out or child.id == root.id:
                continue
            if _cascades(parent, child):
                out[child.id] = child
                queue.append(child)
    return list(out.values())


def _cascades(parent: Row, child: Row) -> bool:
    """True when deleting `parent` deletes `child`."""
    v = child.values
    if child.sobject == "Event":
        return parent.id in (v.get("WhatId"), v.get("WhoId"), v.get("AccountId"))
    if child.sobject == "EventRelation":
        return parent.id in (v.get("EventId"), v.get("RelationId"))
    if parent.sobject == "Account" and child.sobject in ("Contact", "Opportunity"):
        return bool(v.get("AccountId") == parent.id)
    return False
