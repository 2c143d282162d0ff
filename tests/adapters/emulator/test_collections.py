"""sObject Collections (reference §2.3): ordered per-record results, `statusCode`, allOrNone, 200 cap."""

from __future__ import annotations

from typing import Any

from tests.adapters.emulator.conftest import EmulatorClient

ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"


def _account(name: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"attributes": {"type": "Account"}}
    if name is not None:
        record["Name"] = name
    return record


def _names(emulator: EmulatorClient) -> set[str]:
    return {r["Name"] for r in emulator.store.records("Account")}


async def test_create_answers_results_in_request_order(emulator: EmulatorClient) -> None:
    """POST with allOrNone false: HTTP 200, one result per record in request order, the bad record
    failing with `statusCode` while the good ones commit."""
    records = [_account("C1"), _account(None), _account("C3")]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"allOrNone": False, "records": records})
    assert reply.status == 200
    assert [r["success"] for r in reply.body] == [True, False, True]
    assert reply.body[1]["id"] is None
    assert reply.body[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert "errorCode" not in reply.body[1]["errors"][0]
    assert emulator.store.get("Account", reply.body[0]["id"])["Name"] == "C1"
    assert emulator.store.get("Account", reply.body[2]["id"])["Name"] == "C3"


async def test_all_or_none_rolls_everything_back(emulator: EmulatorClient) -> None:
    """allOrNone true with one bad record: nothing commits; the bad record keeps its real error and
    every other record reports ALL_OR_NONE_OPERATION_ROLLED_BACK."""
    before = _names(emulator)
    records = [_account("R1"), _account(None), _account("R3")]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"allOrNone": True, "records": records})
    assert reply.status == 200
    codes = [r["errors"][0]["statusCode"] for r in reply.body]
    assert codes == [ROLLED_BACK, "REQUIRED_FIELD_MISSING", ROLLED_BACK]
    assert all(not r["success"] for r in reply.body)
    assert _names(emulator) == before


async def test_a_collection_is_one_change_transaction(emulator: EmulatorClient) -> None:
    """All records of one call commit as one transaction: their change events share a transactionKey."""
    records = [{"attributes": {"type": "Contact"}, "LastName": f"T{n}"} for n in range(3)]
    await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    log = emulator.state.bus.channel_log("/data/ContactChangeEvent")
    assert log is not None
    events = [s.event for s in log.after(0, 100)]
    assert len(events) == 3
    assert len({e.transaction_key for e in events}) == 1
    assert [e.sequence_number for e in events] == [1, 2, 3]


async def test_update_upsert_delete_and_retrieve(emulator: EmulatorClient) -> None:
    """PATCH updates by Id, PATCH /{obj}/{extField} upserts (created true/false), GET retrieves in id
    order with null for unknown ids, DELETE ?ids= removes."""
    created = await emulator.rest(
        "POST", "/composite/sobjects", json={"records": [_account("U1"), _account("U2")]}
    )
    ids = [r["id"] for r in created.body]
    updates = [{"attributes": {"type": "Account"}, "Id": i, "Name": f"{i[-4:]}-new"} for i in ids]
    updated = await emulator.rest("PATCH", "/composite/sobjects", json={"records": updates})
    assert [r["success"] for r in updated.body] == [True, True]
    assert [r["id"] for r in updated.body] == ids

    upserts = [
        {"attributes": {"type": "Mogli_Event__c"}, "Scheduling_Link_Id__c": key, "Name": key}
        for key in ("l1", "l2")
    ]
    first = await emulator.rest(
        "PATCH", "/composite/sobjects/Mogli_Event__c/Scheduling_Link_Id__c", json={"records": upserts}
    )
    second = await emulator.rest(
        "PATCH", "/composite/sobjects/Mogli_Event__c/Scheduling_Link_Id__c", json={"records": upserts}
    )
    assert [r["created"] for r in first.body] == [True, True]
    assert [r["created"] for r in second.body] == [False, False]
    assert [r["id"] for r in first.body] == [r["id"] for r in second.body]

    missing = "001000000000000AAA"
    got = await emulator.rest(
        "GET", f"/composite/sobjects/Account?ids={ids[1]},{missing},{ids[0]}&fields=Id,Name"
    )
    assert got.status == 200
    assert [r["Id"] if r else None for r in got.body] == [ids[1], None, ids[0]]

    deleted = await emulator.rest("DELETE", f"/composite/sobjects?ids={ids[0]},{ids[1]}&allOrNone=true")
    assert [r["success"] for r in deleted.body] == [True, True]
    assert {r["Id"] for r in emulator.store.records("Account")}.isdisjoint(ids)


async def test_delete_all_or_none_keeps_everything_on_one_failure(emulator: EmulatorClient) -> None:
    """DELETE with allOrNone=true and one unknown id deletes nothing."""
    created = await emulator.rest("POST", "/composite/sobjects", json={"records": [_account("D1")]})
    good = created.body[0]["id"]
    reply = await emulator.rest("DELETE", f"/composite/sobjects?ids={good},001000000000000AAA&allOrNone=true")
    assert reply.status == 200
    assert reply.body[0]["errors"][0]["statusCode"] == ROLLED_BACK
    assert reply.body[1]["success"] is False
    assert emulator.store.get("Account", good)["Name"] == "D1"


async def test_more_than_200_records_are_rejected_whole(emulator: EmulatorClient) -> None:
    """201 records: the whole call is refused with 400 EXCEEDED_ID_LIMIT and nothing is created."""
    before = _names(emulator)
    records = [_account(f"X{n}") for n in range(201)]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    assert reply.status == 400
    assert reply.body[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert _names(emulator) == before
    exactly = await emulator.rest("POST", "/composite/sobjects", json={"records": records[:200]})
    assert exactly.status == 200 and all(r["success"] for r in exactly.body)


async def test_record_shape_errors_are_per_record(emulator: EmulatorClient) -> None:
    """A record without `attributes.type`, or an insert carrying an Id, fails alone."""
    records: list[dict[str, Any]] = [{"Name": "no type"}, {**_account("with id"), "Id": "001000000000000AAA"}]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"records": [*records, _account("fine")]})
    assert [r["success"] for r in reply.body] == [False, False, True]
    assert reply.body[0]["errors"][0]["statusCode"] == "INVALID_TYPE"
    assert reply.body[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
