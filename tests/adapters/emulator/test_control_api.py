"""The control API under `/__emulator/` (CONTRACT §6): records, stats, sessions, streaming hooks,
lead conversion, gap events, limits, latency and reset."""

from __future__ import annotations

from tests.adapters.emulator.conftest import EmulatorClient


async def test_records_lists_live_and_deleted_records(emulator: EmulatorClient) -> None:
    """GET /records/{sobject} lists live records; `?include_deleted=1` adds the recycle bin."""
    kept = (await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "Kept"})).body["id"]
    gone = (await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "Gone"})).body["id"]
    await emulator.rest("DELETE", f"/sobjects/Contact/{gone}")
    live = await emulator.control("GET", "/records/Contact")
    every = await emulator.control("GET", "/records/Contact?include_deleted=1")
    live_ids = {r["Id"] for r in live["records"]}
    assert kept in live_ids and gone not in live_ids
    assert live["totalSize"] == len(live["records"])
    deleted = [r for r in every["records"] if r["Id"] == gone]
    assert deleted and deleted[0]["IsDeleted"] is True


async def test_records_of_an_unknown_object_is_400(emulator: EmulatorClient) -> None:
    """An unknown sObject name is a 400 with an `error` message."""
    reply = await emulator.request("GET", "/__emulator/records/Nope__c")
    assert reply.status == 400 and "Nope__c" in reply.body["error"]


async def test_stats_counts_requests_by_route(emulator: EmulatorClient) -> None:
    """`/stats` reports api_requests (total and by route), token_requests and the streaming figures."""
    await emulator.rest("GET", "/sobjects/Account/describe")
    await emulator.rest("GET", "/sobjects/Contact/describe")
    await emulator.rest("POST", "/sobjects/Account", json={"Name": "S"})
    stats = await emulator.control("GET", "/stats")
    assert stats["api_requests"]["total"] == 3
    assert stats["api_requests"]["by_route"] == {
        "GET /sobjects/{sobject}/describe": 2,
        "POST /sobjects/{sobject}": 1,
    }
    assert stats["token_requests"] == 1
    assert stats["streaming_clients"] == 0
    assert stats["delivered_events"] == 0


async def test_convert_lead_answers_the_new_ids(emulator: EmulatorClient) -> None:
    """POST /leads/{id}/convert converts the Lead and answers the new Contact and Account ids."""
    lead_id = (
        await emulator.rest("POST", "/sobjects/Lead", json={"LastName": "Prospect", "Company": "Prospect Co"})
    ).body["id"]
    result = await emulator.control("POST", f"/leads/{lead_id}/convert")
    assert emulator.store.get("Contact", result["contactId"])["LastName"] == "Prospect"
    assert emulator.store.get("Account", result["accountId"])["Name"] == "Prospect Co"
    assert emulator.store.get("Lead", lead_id)["IsConverted"] is True
    again = await emulator.request("POST", f"/__emulator/leads/{lead_id}/convert")
    assert again.status == 400
    malformed = await emulator.request("POST", "/__emulator/leads/not-an-id/convert")
    assert malformed.status == 400 and "error" in malformed.body


async def test_gap_publishes_a_gap_event(emulator: EmulatorClient) -> None:
    """POST /gap puts a GAP_* event with the given record ids on the entity's channel; a bad change type
    or a non-CDC entity is a 400."""
    contact_id = (await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "G"})).body["id"]
    await emulator.control(
        "POST", "/gap", {"entity": "Contact", "record_ids": [contact_id], "change_type": "GAP_UPDATE"}
    )
    log = emulator.state.bus.channel_log("/data/ContactChangeEvent")
    assert log is not None
    last = log.after(0, 100)[-1].event
    assert (last.change_type, last.record_ids) == ("GAP_UPDATE", (contact_id,))
    bad_type = await emulator.request(
        "POST", "/__emulator/gap", json={"entity": "Contact", "record_ids": [], "change_type": "UPDATE"}
    )
    bad_entity = await emulator.request(
        "POST", "/__emulator/gap", json={"entity": "Account", "record_ids": [], "change_type": "GAP_CREATE"}
    )
    assert bad_type.status == bad_entity.status == 400


async def test_streaming_hooks(emulator: EmulatorClient) -> None:
    """forget-clients answers how many CometD clients were dropped; purge with age 0 empties retention."""
    await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "P"})
    assert await emulator.control("POST", "/streaming/forget-clients") == {"forgotten": 0}
    purged = await emulator.control("POST", "/streaming/purge", {"older_than_seconds": 0})
    assert purged["purged"] >= 1
    log = emulator.state.bus.channel_log("/data/ContactChangeEvent")
    assert log is not None and len(log.after(0, 100)) == 0


async def test_sessions_expire_one_token(emulator: EmulatorClient) -> None:
    """sessions/expire with `access_token` revokes only that token."""
    first, second = await emulator.token(), await emulator.token()
    assert await emulator.control("POST", "/sessions/expire", {"access_token": first}) == {"expired": 1}
    assert (await emulator.rest("GET", "/limits", token=first)).status == 401
    assert (await emulator.rest("GET", "/limits", token=second)).status == 200


async def test_latency_setting_is_reported(emulator: EmulatorClient) -> None:
    """POST /latency sets the per-call latency; calls still succeed."""
    assert await emulator.control("POST", "/latency", {"latency_ms": 5}) == {"latency_ms": 5}
    assert (await emulator.rest("GET", "/limits")).status == 200
    await emulator.control("POST", "/latency", {"latency_ms": 0})


async def test_reset_returns_the_org_to_its_seed(emulator: EmulatorClient) -> None:
    """POST /reset drops created records, events, faults and counters; the seed and sessions remain."""
    seed_accounts = {r["Id"] for r in (await emulator.control("GET", "/records/Account"))["records"]}
    await emulator.rest("POST", "/sobjects/Account", json={"Name": "Temp"})
    await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "Temp"})
    await emulator.control("POST", "/faults", {"path": "/nothing", "status": 503})
    assert await emulator.control("POST", "/reset") == {"reset": True}
    after = {r["Id"] for r in (await emulator.control("GET", "/records/Account"))["records"]}
    assert after == seed_accounts
    assert (await emulator.control("GET", "/faults"))["rules"] == []
    assert (await emulator.control("GET", "/stats"))["api_requests"]["total"] == 0
    log = emulator.state.bus.channel_log("/data/ContactChangeEvent")
    assert log is not None and len(log.after(0, 100)) == 0
    assert (await emulator.rest("GET", "/limits")).status == 200


async def test_control_errors_are_json(emulator: EmulatorClient) -> None:
    """A malformed control body or an unknown control route answers JSON `{"error"}`."""
    bad = await emulator.request(
        "POST", "/__emulator/limits", data=b"[1]", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400 and "error" in bad.body
    unknown = await emulator.request("GET", "/__emulator/nothing")
    assert unknown.status == 404 and "error" in unknown.body
