"""Who and what a change event names (changeOrigin, commitUser), and how one transaction's changes become
events: the emulator's pessimistic defaults and their switches (salesforce-events-2.md, "Echo and
changeOrigin"; CDC general considerations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.emulator.contracts import ChangeEvent
from tests.adapters.emulator.conftest import EmulatorClient, running_emulator

CLIENT = {"Sforce-Call-Options": "client=mogli-bridge"}
CONTACTS = "/data/ContactChangeEvent"
DEFAULT_ORG = Path(__file__).parents[3] / "bridge" / "emulator" / "default_org.toml"


def _events(emulator: EmulatorClient, channel: str = CONTACTS) -> list[ChangeEvent]:
    log = emulator.state.bus.channel_log(channel)
    assert log is not None
    return [stored.event for stored in log.after(0, 1000)]


async def _contacts(emulator: EmulatorClient, count: int) -> list[str]:
    ids = []
    for n in range(count):
        reply = await emulator.rest("POST", "/sobjects/Contact", json={"LastName": f"C{n}"}, headers=CLIENT)
        assert reply.status == 201, reply.body
        ids.append(reply.body["id"])
    return ids


def _update(ids: list[str], **values: Any) -> dict[str, Any]:
    records = [{"attributes": {"type": "Contact"}, "Id": record_id, **values} for record_id in ids]
    return {"allOrNone": True, "records": records}


async def test_sobject_rows_carry_the_client_of_sforce_call_options(emulator: EmulatorClient) -> None:
    """Sforce-Call-Options is documented for sObject Basic Information and sObject Rows (headers_calloptions):
    their writes name `client=` in changeOrigin, and commitUser is the token's user."""
    [contact] = await _contacts(emulator, 1)
    reply = await emulator.rest("PATCH", f"/sobjects/Contact/{contact}", json={"Title": "X"}, headers=CLIENT)
    assert reply.status == 204
    origins = [event.change_origin for event in _events(emulator)]
    assert origins == ["com/salesforce/api/rest/60.0;client=mogli-bridge"] * 2
    assert {event.commit_user for event in _events(emulator)} == {emulator.store.integration_user_id}


async def test_collections_and_composite_writes_carry_no_client(emulator: EmulatorClient) -> None:
    """sObject Collections and Composite are not among the resources whose Sforce-Call-Options Salesforce
    documents (headers_calloptions.htm), so by default their change events' changeOrigin has no `client=`;
    commitUser is still the user whose token made the call."""
    [first, second] = await _contacts(emulator, 2)
    reply = await emulator.rest(
        "PATCH", "/composite/sobjects", json=_update([first], Title="A"), headers=CLIENT
    )
    assert reply.status == 200 and reply.body[0]["success"], reply.body
    subrequest = {
        "method": "PATCH",
        "url": f"/services/data/v60.0/sobjects/Contact/{second}",
        "body": {"Title": "B"},
    }
    reply = await emulator.rest(
        "POST",
        "/composite",
        json={"allOrNone": True, "compositeRequest": [{**subrequest, "referenceId": "r"}]},
        headers=CLIENT,
    )
    assert reply.status == 200, reply.body
    updates = [event for event in _events(emulator) if event.change_type == "UPDATE"]
    assert [event.change_origin for event in updates] == ["com/salesforce/api/rest/60.0"] * 2
    assert {event.commit_user for event in updates} == {emulator.store.integration_user_id}


async def test_x_emulator_user_names_the_commit_user_of_a_collections_write(emulator: EmulatorClient) -> None:
    """The acting user (X-Emulator-User) is the commitUser of a Collections write, as today."""
    [contact] = await _contacts(emulator, 1)
    owner = emulator.store.user_by_username("owner1@example.com")
    assert owner is not None
    headers = {**CLIENT, "X-Emulator-User": owner.id}
    await emulator.rest("PATCH", "/composite/sobjects", json=_update([contact], Title="A"), headers=headers)
    assert _events(emulator)[-1].commit_user == owner.id


async def test_org_file_switch_restores_client_on_collections(tmp_path: Path) -> None:
    """`[streaming] collections_client_origin = true` brings `client=` back for Collections writes."""
    org_file = tmp_path / "org.toml"
    text = DEFAULT_ORG.read_text("utf-8")
    assert "collections_client_origin = false" in text
    text = text.replace("collections_client_origin = false", "collections_client_origin = true")
    org_file.write_text(text, "utf-8")
    async with running_emulator(org_file=org_file) as emulator:
        [contact] = await _contacts(emulator, 1)
        await emulator.rest(
            "PATCH", "/composite/sobjects", json=_update([contact], Title="A"), headers=CLIENT
        )
        assert _events(emulator)[-1].change_origin == "com/salesforce/api/rest/60.0;client=mogli-bridge"


async def test_control_switch_restores_client_on_collections_at_run_time(emulator: EmulatorClient) -> None:
    """POST /__emulator/streaming/switches turns the Collections `client=` on while the org runs."""
    assert (await emulator.control("GET", "/streaming/switches"))["collections_client_origin"] is False
    await emulator.control("POST", "/streaming/switches", json={"collections_client_origin": True})
    [contact] = await _contacts(emulator, 1)
    await emulator.rest("PATCH", "/composite/sobjects", json=_update([contact], Title="A"), headers=CLIENT)
    assert _events(emulator)[-1].change_origin == "com/salesforce/api/rest/60.0;client=mogli-bridge"


async def test_same_change_to_several_records_in_one_call_is_one_event(emulator: EmulatorClient) -> None:
    """CDC general considerations: the same change to several records of one object in one transaction may
    come as one event with several recordIds; a Collections update and a delete of three records do."""
    ids = await _contacts(emulator, 3)
    await emulator.rest("PATCH", "/composite/sobjects", json=_update(ids, Title="Same"))
    reply = await emulator.rest("DELETE", "/composite/sobjects?ids=" + ",".join(ids))
    assert reply.status == 200, reply.body
    merged = [event for event in _events(emulator) if event.change_type in ("UPDATE", "DELETE")]
    assert [(event.change_type, set(event.record_ids)) for event in merged] == [
        ("UPDATE", set(ids)),
        ("DELETE", set(ids)),
    ]


async def test_merging_switched_off_gives_one_event_per_record(emulator: EmulatorClient) -> None:
    """With `merge_same_changes` off (control API or org file) every record's change is its own event."""
    await emulator.control("POST", "/streaming/switches", json={"merge_same_changes": False})
    ids = await _contacts(emulator, 3)
    await emulator.rest("DELETE", "/composite/sobjects?ids=" + ",".join(ids))
    deletes = [event.record_ids for event in _events(emulator) if event.change_type == "DELETE"]
    assert sorted(deletes) == sorted((record_id,) for record_id in ids)


async def test_an_update_that_changes_nothing_still_publishes_an_update(emulator: EmulatorClient) -> None:
    """Change Event Body Fields (cdc_event_fields_body.htm): an UPDATE carries LastModifiedDate; a save with
    unchanged values is still a save, so Salesforce publishes it and the record's LastModifiedDate moves."""
    [contact] = await _contacts(emulator, 1)
    reply = await emulator.rest("PATCH", f"/sobjects/Contact/{contact}", json={"LastName": "C0"})
    assert reply.status == 204
    update = _events(emulator)[-1]
    assert (update.change_type, update.record_ids, update.changed_fields) == (
        "UPDATE",
        (contact,),
        ("LastModifiedDate",),
    )
