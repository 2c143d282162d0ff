"""Object and field names match without regard to case; answers use the describe spelling.

Salesforce: "Field names are not case sensitive" (sObject Collections pages, e.g.
https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-retrieve-post.html
asks for `["id", "name"]`); SOQL keywords, object and field names are case-insensitive (SOQL and SOSL
Reference, "SOQL SELECT Syntax": "SOQL keywords are case-insensitive", object and field names likewise).
"""

from __future__ import annotations

from typing import Any

from tests.adapters.emulator.conftest import EmulatorClient

KEY = "scheduling_link_id__c"


async def _create(emulator: EmulatorClient, key: str) -> str:
    reply = await emulator.rest(
        "POST", "/sobjects/mogli_event__c", json={"NAME": key, KEY: key, "link_TYPE__c": "team"}
    )
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


def _canonical(record: dict[str, Any]) -> None:
    assert record["attributes"]["type"] == "Mogli_Event__c"
    assert "/sobjects/Mogli_Event__c/" in record["attributes"]["url"]


async def test_sobject_urls_and_bodies_ignore_case(emulator: EmulatorClient) -> None:
    """Create, read (with `fields`), update and upsert through lower-case object, field and External ID
    names in URLs and bodies store the values under, and answer with, the canonical names."""
    record_id = await _create(emulator, "k1")
    read = await emulator.rest("GET", f"/sobjects/MOGLI_EVENT__C/{record_id}?fields=id,name,link_type__c")
    assert read.status == 200, read.body
    _canonical(read.body)
    assert {k: v for k, v in read.body.items() if k != "attributes"} == {
        "Id": record_id,
        "Name": "k1",
        "Link_Type__c": "team",
    }
    updated = await emulator.rest("PATCH", f"/sobjects/mogli_event__c/{record_id}", json={"name": "k1b"})
    assert updated.status == 204, updated.body
    upserted = await emulator.rest(
        "PATCH", f"/sobjects/mogli_event__c/{KEY}/k1", json={"description__C": "via upsert"}
    )
    assert upserted.status == 200, upserted.body
    assert upserted.body["id"] == record_id and upserted.body["created"] is False
    by_key = await emulator.rest("GET", f"/sobjects/mogli_event__c/{KEY}/K1?fields=name,description__c")
    assert by_key.status == 200, by_key.body
    _canonical(by_key.body)
    assert (by_key.body["Name"], by_key.body["Description__c"]) == ("k1b", "via upsert")


async def test_describe_ignores_case(emulator: EmulatorClient) -> None:
    """`/sobjects/{name}/describe` and `/sobjects/{name}` take any case and answer the canonical name."""
    described = await emulator.rest("GET", "/sobjects/mogli_event__c/describe")
    basic = await emulator.rest("GET", "/sobjects/EVENT")
    assert described.status == 200 and described.body["name"] == "Mogli_Event__c"
    assert "Scheduling_Link_Id__c" in [f["name"] for f in described.body["fields"]]
    assert basic.status == 200 and basic.body["objectDescribe"]["name"] == "Event"


async def test_soql_ignores_case_in_object_fields_and_where(emulator: EmulatorClient) -> None:
    """SOQL with lower- and upper-case keywords, object, field, WHERE and ORDER BY names answers
    records keyed by the canonical field names."""
    first, second = await _create(emulator, "q1"), await _create(emulator, "q2")
    soql = (
        f"select ID, name, {KEY} From mogli_event__C where {KEY.upper()} IN ('q1', 'Q2') Order By NAME desc"
    )
    reply = await emulator.rest("GET", "/query?q=" + soql.replace(" ", "+"))
    assert reply.status == 200, reply.body
    records = reply.body["records"]
    for record in records:
        _canonical(record)
    rows = [{k: v for k, v in r.items() if k != "attributes"} for r in records]
    assert rows == [
        {"Id": second, "Name": "q2", "Scheduling_Link_Id__c": "q2"},
        {"Id": first, "Name": "q1", "Scheduling_Link_Id__c": "q1"},
    ]


async def test_collections_ignore_case(emulator: EmulatorClient) -> None:
    """Collections upsert, create, retrieve and update take lower-case object names (URL and
    `attributes.type`) and field names, and answer with the canonical names."""
    upsert = [{"attributes": {"type": "mogli_event__c"}, KEY: "c1", "name": "C1"}]
    upserted = await emulator.rest(
        "PATCH", f"/composite/sobjects/MOGLI_EVENT__C/{KEY}", json={"records": upsert}
    )
    assert upserted.body[0]["success"] is True, upserted.body
    contact = [{"attributes": {"type": "contact"}, "LASTNAME": "Lower"}]
    created = await emulator.rest("POST", "/composite/sobjects", json={"records": contact})
    assert created.body[0]["success"] is True, created.body
    contact_id = created.body[0]["id"]
    update = [{"attributes": {"type": "CONTACT"}, "id": contact_id, "firstname": "Ann"}]
    updated = await emulator.rest("PATCH", "/composite/sobjects", json={"records": update})
    assert updated.body[0]["success"] is True, updated.body
    got = await emulator.rest(
        "GET", f"/composite/sobjects/contact?ids={contact_id}&fields=id,lastname,FirstName"
    )
    assert got.status == 200, got.body
    assert got.body[0]["attributes"]["type"] == "Contact"
    assert {k: v for k, v in got.body[0].items() if k != "attributes"} == {
        "Id": contact_id,
        "LastName": "Lower",
        "FirstName": "Ann",
    }


async def test_composite_ignores_case_and_answers_canonical_location(emulator: EmulatorClient) -> None:
    """A Composite create through a lower-case object name succeeds and its `Location` header names
    the object by its canonical spelling."""
    composite = {
        "compositeRequest": [
            {
                "method": "POST",
                "url": "/services/data/v60.0/sobjects/contact",
                "referenceId": "c",
                "body": {"lastname": "Composite"},
            },
            {
                "method": "GET",
                "url": "/services/data/v60.0/sobjects/CONTACT/@{c.id}?fields=lastname",
                "referenceId": "read",
            },
        ]
    }
    reply = await emulator.rest("POST", "/composite", json=composite)
    created, read = reply.body["compositeResponse"]
    assert created["httpStatusCode"] == 201, created
    assert (
        created["httpHeaders"]["Location"] == f"/services/data/v60.0/sobjects/Contact/{created['body']['id']}"
    )
    assert read["httpStatusCode"] == 200, read
    assert read["body"]["attributes"]["type"] == "Contact"
    assert read["body"]["LastName"] == "Composite"
