"""An inactive User as OwnerId is refused on every write form (reference salesforce-events-2.md).

Observed Salesforce answer: errorCode/statusCode `INACTIVE_OWNER_OR_USER`, message "operation performed with
inactive user [<id>] as owner of <object>" (salesforce-events-2.md, "Inactive owner" [obs]).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adapters.emulator.conftest import EmulatorClient

CODE = "INACTIVE_OWNER_OR_USER"
MESSAGE = "operation performed with inactive user"


def _inactive(emulator: EmulatorClient) -> str:
    user = emulator.store.user_by_username("inactive@example.com")
    assert user is not None and not user.is_active
    return user.id


def _mogli(key: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Mogli_Event__c"}, "Scheduling_Link_Id__c": key, "Name": key, **fields}


def _refused_whole(reply: Any) -> None:
    assert reply.status == 400, reply.body
    assert reply.body[0]["errorCode"] == CODE
    assert reply.body[0]["message"].startswith(MESSAGE)
    assert reply.body[0]["fields"] == ["OwnerId"]


def _refused_record(result: dict[str, Any]) -> None:
    assert result["success"] is False
    assert result["errors"][0]["statusCode"] == CODE
    assert result["errors"][0]["message"].startswith(MESSAGE)


async def _existing(emulator: EmulatorClient, key: str) -> str:
    reply = await emulator.rest("POST", "/sobjects/Mogli_Event__c", json=_mogli(key))
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def test_single_sobject_writes_refuse_an_inactive_owner(emulator: EmulatorClient) -> None:
    """sObject create, update and upsert by External ID with an inactive OwnerId answer 400
    INACTIVE_OWNER_OR_USER and change nothing."""
    inactive = _inactive(emulator)
    existing = await _existing(emulator, "single")
    created = await emulator.rest("POST", "/sobjects/Mogli_Event__c", json=_mogli("new", OwnerId=inactive))
    updated = await emulator.rest("PATCH", f"/sobjects/Mogli_Event__c/{existing}", json={"OwnerId": inactive})
    upserted = await emulator.rest(
        "PATCH",
        "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/single",
        json={"Name": "x", "OwnerId": inactive},
    )
    for reply in (created, updated, upserted):
        _refused_whole(reply)
    records = emulator.store.records("Mogli_Event__c")
    assert [(r["Scheduling_Link_Id__c"], r["Name"]) for r in records] == [("single", "single")]
    assert records[0]["OwnerId"] != inactive


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/composite/sobjects"),
        ("PATCH", "/composite/sobjects"),
        ("PATCH", "/composite/sobjects/Mogli_Event__c/Scheduling_Link_Id__c"),
    ],
)
async def test_collections_writes_refuse_an_inactive_owner(
    emulator: EmulatorClient, method: str, path: str
) -> None:
    """Collections create, update and upsert: the record with an inactive OwnerId fails alone with
    INACTIVE_OWNER_OR_USER; the record beside it succeeds."""
    inactive = _inactive(emulator)
    existing = await _existing(emulator, "coll")
    if path.endswith("sobjects") and method == "PATCH":
        records = [
            {"attributes": {"type": "Mogli_Event__c"}, "Id": existing, "OwnerId": inactive},
            {"attributes": {"type": "Mogli_Event__c"}, "Id": existing, "Name": "renamed"},
        ]
    else:
        records = [_mogli("coll" if "Link" in path else "bad", OwnerId=inactive), _mogli("good")]
    reply = await emulator.rest(method, path, json={"allOrNone": False, "records": records})
    assert reply.status == 200
    _refused_record(reply.body[0])
    assert reply.body[1]["success"] is True
    assert all(r["OwnerId"] != inactive for r in emulator.store.records("Mogli_Event__c"))


async def test_composite_subrequest_refuses_an_inactive_owner(emulator: EmulatorClient) -> None:
    """A Composite subrequest creating a record owned by an inactive user answers 400
    INACTIVE_OWNER_OR_USER in its subresponse; with allOrNone the other subrequest is rolled back."""
    inactive = _inactive(emulator)
    composite = {
        "allOrNone": True,
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v60.0/sobjects/Mogli_Event__c",
                "referenceId": "good",
                "body": _mogli("good"),
            },
            {
                "method": "POST",
                "url": "/services/data/v60.0/sobjects/Mogli_Event__c",
                "referenceId": "bad",
                "body": _mogli("bad", OwnerId=inactive),
            },
        ],
    }
    reply = await emulator.rest("POST", "/composite", json=composite)
    assert reply.status == 200
    bad = reply.body["compositeResponse"][1]
    assert bad["httpStatusCode"] == 400
    assert bad["body"][0]["errorCode"] == CODE
    assert bad["body"][0]["message"].startswith(MESSAGE)
    assert emulator.store.records("Mogli_Event__c") == []
