"""Every documented form of sObject Collections, and the requests Salesforce refuses (reference §2.3).

Sources: https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections.html
and its pages per operation (create, retrieve GET, retrieve POST, update, upsert, delete).
"""

from __future__ import annotations

from typing import Any

from tests.adapters.emulator.conftest import EmulatorClient

UPSERT = "/composite/sobjects/Mogli_Event__c/Scheduling_Link_Id__c"
MISSING = "001000000000000AAA"


def _mogli(key: str, name: str = "", sobject: str | None = "Mogli_Event__c") -> dict[str, Any]:
    record: dict[str, Any] = {"Scheduling_Link_Id__c": key, "Name": name or key}
    if sobject is not None:
        record["attributes"] = {"type": sobject}
    return record


async def _accounts(emulator: EmulatorClient, *names: str) -> list[str]:
    records = [{"attributes": {"type": "Account"}, "Name": n} for n in names]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    assert [r["success"] for r in reply.body] == [True] * len(names), reply.body
    return [str(r["id"]) for r in reply.body]


async def test_retrieve_by_post_body_answers_records_in_id_order(emulator: EmulatorClient) -> None:
    """POST /composite/sobjects/{SObject} with `{"ids", "fields"}` answers the records in id order with
    null for an unknown id; field names match without regard to case and come back canonical.
    Doc: "Get Records With a Request Body Using sObject Collections" (resources_composite_sobjects_
    collections_retrieve_post.htm), whose own example asks for `["id", "name"]`."""
    first, second = await _accounts(emulator, "P1", "P2")
    body = {"ids": [second, MISSING, first], "fields": ["id", "name"]}
    reply = await emulator.rest("POST", "/composite/sobjects/Account", json=body)
    assert reply.status == 200, reply.body
    assert [r and (r["Id"], r["Name"]) for r in reply.body] == [(second, "P2"), None, (first, "P1")]
    assert reply.body[0]["attributes"]["type"] == "Account"


async def test_retrieve_by_post_takes_up_to_2000_ids(emulator: EmulatorClient) -> None:
    """A POST retrieve takes up to 2,000 ids (unknown ones answer null) and refuses 2,001 with 400.
    Doc: "The request retrieves up to 2,000 records of the same object type" (retrieve POST page)."""
    (known,) = await _accounts(emulator, "Many")
    ids = [known] + [f"001Zz{n:010d}" for n in range(1999)]
    reply = await emulator.rest("POST", "/composite/sobjects/Account", json={"ids": ids, "fields": ["Name"]})
    assert reply.status == 200, reply.body
    assert len(reply.body) == 2000
    assert reply.body[0]["Name"] == "Many"
    assert reply.body[1:] == [None] * 1999
    over = await emulator.rest(
        "POST", "/composite/sobjects/Account", json={"ids": [*ids, known], "fields": ["Name"]}
    )
    assert over.status == 400
    assert over.body[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


async def test_retrieve_with_an_unknown_field_is_refused_whole(emulator: EmulatorClient) -> None:
    """An invalid field name answers HTTP 400 for the whole retrieve (GET and POST), not a list of nulls.
    Doc: "If you specify an invalid field name ... HTTP 400 Bad Request is returned" (retrieve pages)."""
    (known,) = await _accounts(emulator, "Fielded")
    by_get = await emulator.rest("GET", f"/composite/sobjects/Account?ids={known}&fields=Name,Nope__c")
    by_post = await emulator.rest(
        "POST", "/composite/sobjects/Account", json={"ids": [known], "fields": ["Name", "Nope__c"]}
    )
    for reply in (by_get, by_post):
        assert reply.status == 400
        assert reply.body[0]["errorCode"] == "INVALID_FIELD"


async def test_update_delete_and_get_retrieve_round_trip(emulator: EmulatorClient) -> None:
    """PATCH /composite/sobjects updates records by their Id; a record without Id fails alone with
    MISSING_ARGUMENT; DELETE ?ids=&allOrNone=false deletes what it can; GET retrieve sees the result.
    Doc: collections update ("every record with an id field") and delete pages."""
    first, second = await _accounts(emulator, "Old1", "Old2")
    updates = [
        {"attributes": {"type": "Account"}, "id": first, "Name": "New1"},
        {"attributes": {"type": "Account"}, "Name": "No id"},
    ]
    updated = await emulator.rest("PATCH", "/composite/sobjects", json={"records": updates})
    assert [r["success"] for r in updated.body] == [True, False]
    assert updated.body[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    deleted = await emulator.rest("DELETE", f"/composite/sobjects?ids={second},{MISSING}&allOrNone=false")
    assert [r["success"] for r in deleted.body] == [True, False]
    got = await emulator.rest("GET", f"/composite/sobjects/Account?ids={first},{second}&fields=Id,Name")
    assert got.body == [
        {"attributes": got.body[0]["attributes"], "Id": first, "Name": "New1"},
        None,
    ]


async def test_upsert_refuses_records_of_another_type_or_untyped(emulator: EmulatorClient) -> None:
    """Upsert: a record whose `attributes.type` differs from the URL's object, or that has no
    `attributes.type`, fails alone (INVALID_TYPE) and is not written; the others are upserted.
    Doc: "The list can contain objects only of the type indicated in the request URI. Each object ...
    must contain an attributes map. The map must contain a value for type." (collections upsert page)."""
    records = [_mogli("typed"), _mogli("other", sobject="Account"), _mogli("untyped", sobject=None)]
    reply = await emulator.rest("PATCH", UPSERT, json={"records": records})
    assert reply.status == 200
    assert [r["success"] for r in reply.body] == [True, False, False]
    assert [r["errors"][0]["statusCode"] for r in reply.body[1:]] == ["INVALID_TYPE", "INVALID_TYPE"]
    assert [r["id"] for r in reply.body[1:]] == [None, None]
    assert [r["Scheduling_Link_Id__c"] for r in emulator.store.records("Mogli_Event__c")] == ["typed"]


async def test_upsert_by_id_or_a_plain_field_is_refused_whole(emulator: EmulatorClient) -> None:
    """Upsert names an External ID field in the URL: `Id` (a record id) and a field that is not an
    External ID are refused for the whole call with 400 INVALID_FIELD; nothing is written.
    Doc: "Only external ids are supported. Don't use record ids." (collections upsert page)."""
    (known,) = await _accounts(emulator, "By id")
    record = {"attributes": {"type": "Account"}, "Id": known, "Name": "Renamed"}
    by_id = await emulator.rest("PATCH", "/composite/sobjects/Account/Id", json={"records": [record]})
    by_name = await emulator.rest(
        "PATCH", "/composite/sobjects/Account/Name", json={"records": [{**record, "Id": None}]}
    )
    for reply in (by_id, by_name):
        assert reply.status == 400, reply.body
        assert reply.body[0]["errorCode"] == "INVALID_FIELD"
    assert emulator.store.get("Account", known)["Name"] == "By id"
    assert [r["Name"] for r in emulator.store.records("Account")].count("Renamed") == 0


async def test_upsert_refuses_an_external_id_repeated_in_one_request(emulator: EmulatorClient) -> None:
    """The same External ID value twice in one upsert (compared without regard to case) fails both
    records with DUPLICATE_VALUE "Duplicate external id specified"; other records go through.
    Observed (Salesforce StackExchange 104048 and 296121): "DUPLICATE_VALUE, Duplicate external id
    specified: ABC123: [Name]"; the upsert page: a key matched more than once is neither inserted nor
    updated."""
    records = [_mogli("twice", "A"), _mogli("single"), _mogli("TWICE", "B")]
    reply = await emulator.rest("PATCH", UPSERT, json={"records": records})
    assert [r["success"] for r in reply.body] == [False, True, False]
    for result in (reply.body[0], reply.body[2]):
        error = result["errors"][0]
        assert error["statusCode"] == "DUPLICATE_VALUE"
        assert error["message"].startswith("Duplicate external id specified: ")
        assert error["fields"] == ["Scheduling_Link_Id__c"]
    assert [r["Scheduling_Link_Id__c"] for r in emulator.store.records("Mogli_Event__c")] == ["single"]


async def test_upsert_does_not_exist_before_api_46(emulator: EmulatorClient) -> None:
    """Collections upsert exists from API 46.0: on v45.0 it answers 404 NOT_FOUND (as any unknown
    resource) and writes nothing, while collections create still works on v45.0.
    Doc: "This request is available in API version 46 and later." (collections upsert page)."""
    reply = await emulator.rest("PATCH", UPSERT, json={"records": [_mogli("v45")]}, version="v45.0")
    assert reply.status == 404
    assert reply.body[0]["errorCode"] == "NOT_FOUND"
    assert emulator.store.records("Mogli_Event__c") == []
    created = await emulator.rest(
        "POST", "/composite/sobjects", json={"records": [_mogli("v45")]}, version="v45.0"
    )
    assert created.body[0]["success"] is True
    on_46 = await emulator.rest("PATCH", UPSERT, json={"records": [_mogli("v46")]}, version="v46.0")
    assert on_46.status == 200 and on_46.body[0]["created"] is True


async def test_create_and_update_take_at_most_ten_chunks(emulator: EmulatorClient) -> None:
    """Records of several types are processed in chunks (runs of one type): ten chunks are served,
    eleven are refused whole with 400 and nothing is created.
    Doc: "If the request body includes objects of more than one type, they are processed as chunks ...
    A single request can process up to 10 chunks." (collections create page); message as observed in
    Apex ("Cannot have more than 10 chunks in a single operation")."""
    kinds = [("Account", "Name"), ("Contact", "LastName")]
    records = [{"attributes": {"type": kinds[n % 2][0]}, kinds[n % 2][1]: f"Chunk{n}"} for n in range(11)]
    refused = await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    assert refused.status == 400
    assert refused.body[0]["errorCode"] == "EXCEEDED_MAX_TYPES_LIMIT"
    assert not [r for r in emulator.store.records("Contact") if r["LastName"].startswith("Chunk")]
    served = await emulator.rest("POST", "/composite/sobjects", json={"records": records[:10]})
    assert [r["success"] for r in served.body] == [True] * 10
    updates = [
        {"attributes": records[n]["attributes"], "Id": result["id"], kinds[n % 2][1]: f"Chunk{n}b"}
        for n, result in enumerate(served.body)
    ]
    extra = {**updates[0], "Name": "Chunk10b"}
    refused_update = await emulator.rest("PATCH", "/composite/sobjects", json={"records": [*updates, extra]})
    assert refused_update.status == 400
    assert refused_update.body[0]["errorCode"] == "EXCEEDED_MAX_TYPES_LIMIT"
    updated = await emulator.rest("PATCH", "/composite/sobjects", json={"records": updates})
    assert [r["success"] for r in updated.body] == [True] * 10
