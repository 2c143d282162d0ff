"""Lead conversion on the emulated org (reference §3.4), as one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.emulator.schema import ObjectDef
from bridge.emulator.store_txn import Txn, converted_lead

_CONVERTED_STATUS = "Closed - Converted"


def convert(txn: Txn, lead_id: str, create_opportunity: bool, emit_event_updates: bool) -> dict[str, str]:
    """Create Account, Contact (and Opportunity), mark the Lead converted and move its Events to the Contact.

    Change events in order: Account CREATE, Contact CREATE, Opportunity CREATE, Lead UPDATE, then one
    Event UPDATE per moved Event when `emit_event_updates` (otherwise the Events change silently).
    """
    lead = txn.live(lead_id, "Lead")
    v = lead.values
    if v.get("IsConverted"):
        raise converted_lead(["Id"])
    result = _create_records(txn, v, create_opportunity)
    txn.apply(
        lead,
        {
            "IsConverted": True,
            "ConvertedDate": txn.now.date(),
            "ConvertedAccountId": result["accountId"],
            "ConvertedContactId": result["contactId"],
            "ConvertedOpportunityId": result.get("opportunityId"),
            "Status": _CONVERTED_STATUS,
        },
    )
    _move_events(txn, lead.id, result, emit_event_updates)
    return result


def _create_records(txn: Txn, v: Mapping[str, Any], create_opportunity: bool) -> dict[str, str]:
    """The Account, Contact and optional Opportunity a conversion creates, owned by the Lead's owner."""
    owner = v["OwnerId"]
    company = v.get("Company") or v.get("Name") or "Converted lead"
    account_id = _insert(txn, "Account", {"Name": company, "OwnerId": owner})
    contact_id = _insert(
        txn,
        "Contact",
        {
            "FirstName": v.get("FirstName"),
            "LastName": v["LastName"],
            "Email": v.get("Email"),
            "Phone": v.get("Phone"),
            "Title": v.get("Title"),
            "AccountId": account_id,
            "OwnerId": owner,
        },
    )
    result = {"accountId": account_id, "contactId": contact_id}
    if create_opportunity:
        result["opportunityId"] = _insert(
            txn,
            "Opportunity",
            {
                "Name": f"{company}-",
                "AccountId": account_id,
                "StageName": "Prospecting",
                "CloseDate": txn.now.date(),
                "OwnerId": owner,
            },
        )
    return result


def _move_events(txn: Txn, lead_id: str, result: Mapping[str, str], emit: bool) -> None:
    """Re-point the Lead's Events (WhoId -> the Contact, WhatId -> the Opportunity when one was created)
    and its EventRelations (RelationId -> the Contact)."""
    for row in [r for r in txn.referrers(lead_id) if not r.deleted]:
        if row.sobject == "Event" and row.values.get("WhoId") == lead_id:
            moved: dict[str, object] = {"WhoId": result["contactId"]}
            if "opportunityId" in result:
                moved["WhatId"] = result["opportunityId"]
            txn.apply(row, moved, emit=emit)
        elif row.sobject == "EventRelation" and row.values.get("RelationId") == lead_id:
            txn.apply(row, {"RelationId": result["contactId"]}, emit=emit)


def _insert(txn: Txn, sobject: str, values: dict[str, object]) -> str:
    """Create a record from already-typed values (conversion copies the Lead's stored values)."""
    obj: ObjectDef = txn.object(sobject)
    given = {k: val for k, val in values.items() if val is not None}
    return txn.insert(obj, given, txn.new_id(obj.prefix))
