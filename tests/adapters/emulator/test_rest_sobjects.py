"""sObject REST resources (reference §2.1, §2.5, §2.6): CRUD, upsert by External ID, describe, headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.emulator.contracts import ChangeEvent
from tests.adapters.emulator.conftest import EmulatorClient, running_emulator


def _contact_events(emulator: EmulatorClient) -> list[ChangeEvent]:
    log = emulator.state.bus.channel_log("/data/ContactChangeEvent")
    assert log is not None
    return [stored.event for stored in log.after(0, 1000)]


async def test_create_read_update_delete_statuses(emulator: EmulatorClient) -> None:
    """Create 201 `{id,success,errors}`, read 200 with `attributes`, update 204, delete 204, then 404."""
    created = await emulator.rest("POST", "/sobjects/Account/", json={"Name": "Acme"})
    assert created.status == 201
    assert created.body["success"] is True and created.body["errors"] == []
    account_id = created.body["id"]
    assert len(account_id) == 18 and account_id.startswith("001")

    read = await emulator.rest("GET", f"/sobjects/Account/{account_id}")
    assert read.status == 200
    assert read.body["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v60.0/sobjects/Account/{account_id}",
    }
    assert read.body["Name"] == "Acme"

    updated = await emulator.rest("PATCH", f"/sobjects/Account/{account_id}", json={"Name": "Acme 2"})
    assert (updated.status, updated.body) == (204, None)
    assert emulator.store.get("Account", account_id)["Name"] == "Acme 2"

    deleted = await emulator.rest("DELETE", f"/sobjects/Account/{account_id}")
    assert (deleted.status, deleted.body) == (204, None)
    gone = await emulator.rest("GET", f"/sobjects/Account/{account_id}")
    assert gone.status == 404
    assert gone.body[0]["errorCode"] == "NOT_FOUND"


async def test_read_with_fields_parameter(emulator: EmulatorClient) -> None:
    """`?fields=A,B` limits the returned fields."""
    account_id = (await emulator.rest("POST", "/sobjects/Account", json={"Name": "Acme"})).body["id"]
    read = await emulator.rest("GET", f"/sobjects/Account/{account_id}?fields=Name")
    assert read.body["Name"] == "Acme"
    assert "Industry" not in read.body


async def test_upsert_creates_then_updates(emulator: EmulatorClient) -> None:
    """Upsert by External ID: 201 `created:true`, then 200 `created:false` (API >= 46), same id."""
    path = "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/link-1"
    first = await emulator.rest("PATCH", path, json={"Name": "Intro call"})
    assert first.status == 201
    assert first.body == {"id": first.body["id"], "success": True, "errors": [], "created": True}
    second = await emulator.rest("PATCH", path, json={"Name": "Intro call v2"})
    assert second.status == 200
    assert second.body == {"id": first.body["id"], "success": True, "errors": [], "created": False}
    record = emulator.store.get("Mogli_Event__c", first.body["id"])
    assert record["Name"] == "Intro call v2"
    assert record["Scheduling_Link_Id__c"] == "link-1"


async def test_upsert_update_answers_204_before_v46(emulator: EmulatorClient) -> None:
    """Before API 46.0 an upsert that updates answers 204 without a body."""
    path = "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/link-2"
    assert (await emulator.rest("PATCH", path, json={"Name": "A"}, version="v45.0")).status == 201
    again = await emulator.rest("PATCH", path, json={"Name": "B"}, version="v45.0")
    assert (again.status, again.body) == (204, None)


async def test_upsert_body_may_not_carry_id_or_the_external_id(emulator: EmulatorClient) -> None:
    """The upsert body carrying `Id` or the URL's External ID field is refused with 400."""
    path = "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/link-3"
    with_id = await emulator.rest("PATCH", path, json={"Name": "A", "Id": "a0XEm0000000001IAA"})
    with_ext = await emulator.rest("PATCH", path, json={"Name": "A", "Scheduling_Link_Id__c": "link-3"})
    assert with_id.status == with_ext.status == 400
    assert with_id.body[0]["errorCode"] == with_ext.body[0]["errorCode"] == "INVALID_FIELD"
    assert emulator.store.records("Mogli_Event__c") == []


async def test_read_and_delete_by_external_id(emulator: EmulatorClient) -> None:
    """GET and DELETE `/sobjects/{obj}/{extField}/{value}` address the record by its External ID."""
    path = "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/link-4"
    record_id = (await emulator.rest("PATCH", path, json={"Name": "A"})).body["id"]
    read = await emulator.rest("GET", path)
    assert (read.status, read.body["Id"]) == (200, record_id)
    assert (await emulator.rest("DELETE", path)).status == 204
    assert (await emulator.rest("GET", path)).status == 404


ORG_WITH_LOOSE_KEY = """
[org]
id = "00DEm0000000003"

[[users]]
username = "bridge@example.com"
email = "bridge@example.com"
last_name = "Integration"
password = "emulator"

[[fields]]
object = "Contact"
name = "Legacy_Key__c"
type = "string"
external_id = true
"""


async def test_upsert_on_duplicate_external_ids_answers_300(tmp_path: Path) -> None:
    """When the External ID value matches two records, upsert answers 300 with their URLs (and a
    collections upsert fails that record with DUPLICATE_EXTERNAL_ID)."""
    org = tmp_path / "org.toml"
    org.write_text(ORG_WITH_LOOSE_KEY)
    async with running_emulator(org_file=org) as emu:
        ids = []
        for name in ("One", "Two"):
            reply = await emu.rest("POST", "/sobjects/Contact", json={"LastName": name, "Legacy_Key__c": "k"})
            ids.append(reply.body["id"])
        reply = await emu.rest("PATCH", "/sobjects/Contact/Legacy_Key__c/k", json={"FirstName": "X"})
        records = [{"attributes": {"type": "Contact"}, "Legacy_Key__c": "k", "FirstName": "Y"}]
        collection = await emu.rest(
            "PATCH", "/composite/sobjects/Contact/Legacy_Key__c", json={"records": records}
        )
    assert reply.status == 300
    assert sorted(reply.body) == sorted(f"/services/data/v60.0/sobjects/Contact/{i}" for i in ids)
    assert collection.body[0]["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"


async def test_validation_errors_use_the_rest_error_array(emulator: EmulatorClient) -> None:
    """A WhoId pointing at an Account answers 400 FIELD_INTEGRITY_EXCEPTION naming WhoId."""
    account_id = (await emulator.rest("POST", "/sobjects/Account", json={"Name": "Acme"})).body["id"]
    reply = await emulator.rest(
        "POST",
        "/sobjects/Event",
        json={
            "Subject": "Call",
            "StartDateTime": "2026-06-01T10:00:00Z",
            "EndDateTime": "2026-06-01T10:30:00Z",
            "WhoId": account_id,
        },
    )
    assert reply.status == 400
    assert reply.body[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert reply.body[0]["fields"] == ["WhoId"]


async def test_unknown_object_and_bad_json(emulator: EmulatorClient) -> None:
    """An unknown sObject answers 404 NOT_FOUND; a body that is not JSON answers 400 JSON_PARSER_ERROR."""
    unknown = await emulator.rest("POST", "/sobjects/Nope__c", json={"Name": "x"})
    assert (unknown.status, unknown.body[0]["errorCode"]) == (404, "NOT_FOUND")
    token = await emulator.token()
    bad = await emulator.request(
        "POST",
        "/services/data/v60.0/sobjects/Account",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert (bad.status, bad.body[0]["errorCode"]) == (400, "JSON_PARSER_ERROR")


async def test_malformed_id_in_url(emulator: EmulatorClient) -> None:
    """An id that is not 15/18 letters and digits answers 400 MALFORMED_ID."""
    reply = await emulator.rest("PATCH", "/sobjects/Account/not-an-id", json={"Name": "x"})
    assert (reply.status, reply.body[0]["errorCode"]) == (400, "MALFORMED_ID")


async def test_call_options_client_becomes_the_change_origin(emulator: EmulatorClient) -> None:
    """`Sforce-Call-Options: client=X` (also among `,`-separated options) labels the change event
    `com/salesforce/api/rest/<ver>;client=X`; without the header the origin has no `;client=`."""
    await emulator.rest(
        "POST",
        "/sobjects/Contact",
        json={"LastName": "A"},
        headers={"Sforce-Call-Options": "client=mogli-bridge, defaultNamespace=x"},
    )
    await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "B"}, version="v59.0")
    origins = [e.change_origin for e in _contact_events(emulator) if e.change_type == "CREATE"]
    assert origins == ["com/salesforce/api/rest/60.0;client=mogli-bridge", "com/salesforce/api/rest/59.0"]


async def test_emulator_user_header_sets_the_acting_user(emulator: EmulatorClient) -> None:
    """`X-Emulator-User: 005...` makes that user the one who changed the record."""
    owner = emulator.store.user_by_username("owner1@example.com")
    assert owner is not None
    reply = await emulator.rest(
        "POST", "/sobjects/Contact", json={"LastName": "A"}, headers={"X-Emulator-User": owner.id[:15]}
    )
    record = emulator.store.get("Contact", reply.body["id"])
    assert record["LastModifiedById"] == owner.id
    assert _contact_events(emulator)[-1].commit_user == owner.id


async def test_emulator_user_header_must_name_a_user(emulator: EmulatorClient) -> None:
    """`X-Emulator-User` naming no user is refused with 400 INVALID_CROSS_REFERENCE_KEY, and a malformed
    id with 400 MALFORMED_ID."""
    unknown = await emulator.rest("GET", "/limits", headers={"X-Emulator-User": "005000000000000AAA"})
    malformed = await emulator.rest("GET", "/limits", headers={"X-Emulator-User": "nobody"})
    assert (unknown.status, unknown.body[0]["errorCode"]) == (400, "INVALID_CROSS_REFERENCE_KEY")
    assert (malformed.status, malformed.body[0]["errorCode"]) == (400, "MALFORMED_ID")


async def test_describe_resources(emulator: EmulatorClient) -> None:
    """describeGlobal lists the objects; `/sobjects/{name}` and `/describe` describe one."""
    global_ = await emulator.rest("GET", "/sobjects/")
    names = {o["name"] for o in global_.body["sobjects"]}
    assert {"Event", "Contact", "Lead", "Account", "User", "Mogli_Event__c"} <= names
    basic = await emulator.rest("GET", "/sobjects/Event")
    assert basic.body["objectDescribe"]["name"] == "Event"
    assert basic.body["recentItems"] == []
    described = await emulator.rest("GET", "/sobjects/Event/describe")
    fields: dict[str, Any] = {f["name"]: f for f in described.body["fields"]}
    assert fields["Scheduling_Booking_Id__c"]["externalId"] is True


async def test_version_validation(emulator: EmulatorClient) -> None:
    """`/services/data/` lists the versions; an unknown version answers 404 NOT_FOUND."""
    versions = await emulator.request("GET", "/services/data/")
    assert versions.status == 200
    assert {"label", "url", "version"} <= set(versions.body[-1])
    assert versions.body[-1]["url"] == f"/services/data/v{versions.body[-1]['version']}"
    for bad in ("v20.0", "v99.0", "latest"):
        reply = await emulator.rest("GET", "/limits", version=bad)
        assert reply.status == 404, bad
        assert reply.body[0]["errorCode"] == "NOT_FOUND"
    root = await emulator.rest("GET", "/")
    assert root.body["sobjects"] == "/services/data/v60.0/sobjects"


async def test_unknown_resource_and_method(emulator: EmulatorClient) -> None:
    """An unknown resource answers 404 NOT_FOUND, a method a resource lacks 405, both as error arrays."""
    missing = await emulator.rest("GET", "/nothing/here")
    assert (missing.status, missing.body[0]["errorCode"]) == (404, "NOT_FOUND")
    wrong = await emulator.rest("PUT", "/sobjects/Account")
    assert (wrong.status, wrong.body[0]["errorCode"]) == (405, "METHOD_NOT_ALLOWED")
