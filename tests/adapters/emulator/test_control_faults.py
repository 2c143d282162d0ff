"""Fault injection through the control API (CONTRACT §6): each rule field and action."""

from __future__ import annotations

import random

import aiohttp
import pytest

from bridge.emulator.faults import FaultInjector, parse_rule
from tests.adapters.emulator.conftest import EmulatorClient


async def test_status_and_error_code_rule(emulator: EmulatorClient) -> None:
    """A rule with status and error_code answers that Salesforce error array on matching calls."""
    await emulator.control(
        "POST", "/faults", {"path": "/sobjects/Account", "status": 400, "error_code": "UNABLE_TO_LOCK_ROW"}
    )
    reply = await emulator.rest("POST", "/sobjects/Account", json={"Name": "x"})
    assert reply.status == 400
    assert reply.body == [
        {
            "message": "unable to obtain exclusive access to this record",
            "errorCode": "UNABLE_TO_LOCK_ROW",
            "fields": [],
        }
    ]
    assert "Sforce-Limit-Info" in reply.headers
    assert emulator.store.query("SELECT Id FROM Account WHERE Name = 'x'").total_size == 0


async def test_times_limits_how_often_a_rule_fires(emulator: EmulatorClient) -> None:
    """`times: 2` fails the next two matching calls with 503 SERVER_UNAVAILABLE, then the rule is gone."""
    await emulator.control("POST", "/faults", {"path": "/limits", "status": 503, "times": 2})
    statuses = [(await emulator.rest("GET", "/limits")).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert (await emulator.control("GET", "/faults"))["rules"] == []
    assert (await emulator.control("GET", "/stats"))["faults_fired"] == 2


async def test_method_and_path_regex_must_both_match(emulator: EmulatorClient) -> None:
    """The rule fires only for its method, and `path` is a regex searched in the request path."""
    await emulator.control(
        "POST", "/faults", {"method": "PATCH", "path": r"/sobjects/Account/\w{18}$", "status": 503}
    )
    account_id = (await emulator.rest("POST", "/sobjects/Account", json={"Name": "A"})).body["id"]
    assert (await emulator.rest("GET", f"/sobjects/Account/{account_id}")).status == 200
    assert (await emulator.rest("PATCH", f"/sobjects/Account/{account_id}", json={"Name": "B"})).status == 503
    assert (
        await emulator.rest("PATCH", "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/z", json={"Name": "C"})
    ).status == 201


async def test_probability_zero_never_fires_and_one_always_does(emulator: EmulatorClient) -> None:
    """`probability` is the chance a matching call fails: 0 never, 1 always."""
    await emulator.control("POST", "/faults", {"path": "/limits", "status": 500, "probability": 0.0})
    statuses = [(await emulator.rest("GET", "/limits")).status for _ in range(5)]
    assert statuses == [200] * 5
    await emulator.control("DELETE", "/faults")
    await emulator.control("POST", "/faults", {"path": "/limits", "status": 500, "probability": 1.0})
    assert (await emulator.rest("GET", "/limits")).status == 500


async def test_latency_only_rule_delays_but_succeeds(emulator: EmulatorClient) -> None:
    """A rule with only `latency_ms` lets the call through (after the delay) and counts as fired."""
    await emulator.control("POST", "/faults", {"path": "/limits", "latency_ms": 20, "times": 1})
    assert (await emulator.rest("GET", "/limits")).status == 200
    assert (await emulator.control("GET", "/stats"))["faults_fired"] == 1


async def test_drop_action_cuts_the_connection(emulator: EmulatorClient) -> None:
    """`action: drop` closes the TCP connection without an HTTP answer; the next call works.
    (POST, because aiohttp retries an idempotent request once on a dropped keep-alive connection.)"""
    await emulator.token()
    await emulator.control("POST", "/faults", {"path": "/sobjects/Account", "action": "drop", "times": 1})
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await emulator.rest("POST", "/sobjects/Account", json={"Name": "Dropped"})
    assert (await emulator.rest("POST", "/sobjects/Account", json={"Name": "Kept"})).status == 201
    names = {r["Name"] for r in emulator.store.records("Account")}
    assert "Kept" in names and "Dropped" not in names


async def test_per_record_rule_fails_every_record_of_a_collection(emulator: EmulatorClient) -> None:
    """`per_record: true` answers a collections call 200 with the error on every record, writing nothing."""
    await emulator.control(
        "POST",
        "/faults",
        {"path": "/composite/sobjects", "per_record": True, "error_code": "UNABLE_TO_LOCK_ROW", "times": 1},
    )
    records = [{"attributes": {"type": "Account"}, "Name": f"P{n}"} for n in range(3)]
    reply = await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    assert reply.status == 200
    assert [r["errors"][0]["statusCode"] for r in reply.body] == ["UNABLE_TO_LOCK_ROW"] * 3
    assert all(r["success"] is False for r in reply.body)
    assert {"P0", "P1", "P2"}.isdisjoint({r["Name"] for r in emulator.store.records("Account")})
    again = await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    assert all(r["success"] for r in again.body)


async def test_raw_body_rule_answers_non_json(emulator: EmulatorClient) -> None:
    """A rule with `body` answers that text (not JSON), e.g. a load balancer's error page."""
    await emulator.control(
        "POST", "/faults", {"path": "/cometd/", "status": 502, "body": "<html>Bad gateway</html>"}
    )
    reply = await emulator.request("POST", "/cometd/60.0", json=[{"channel": "/meta/handshake"}])
    assert reply.status == 502
    assert reply.body == "<html>Bad gateway</html>"


async def test_faults_reach_the_token_endpoint_but_not_the_control_api(emulator: EmulatorClient) -> None:
    """Rules apply to every route but `/__emulator/`: a catch-all rule fails a login, never a control call."""
    await emulator.control("POST", "/faults", {"path": ".*", "status": 503})
    login = await emulator.request("POST", "/services/oauth2/token", data={"grant_type": "password"})
    assert login.status == 503
    stats = await emulator.control("GET", "/stats")
    assert stats["faults_fired"] == 1


async def test_delete_clears_rules_and_bad_rules_are_refused(emulator: EmulatorClient) -> None:
    """DELETE /faults removes every rule; a rule with a bad regex or probability is refused 400."""
    await emulator.control(
        "POST", "/faults", {"rules": [{"path": "/a", "status": 503}, {"path": "/b", "status": 503}]}
    )
    assert (await emulator.control("DELETE", "/faults")) == {"cleared": 2}
    for bad in ({"path": "("}, {"path": "/x", "probability": 2}, {"path": "/x", "action": "explode"}):
        reply = await emulator.request("POST", "/__emulator/faults", json=bad)
        assert reply.status == 400
        assert "error" in reply.body


def test_probability_draws_per_matching_request() -> None:
    """With probability 0.5 some matching requests fail and some pass; each failure uses up one `times`."""
    injector = FaultInjector(random.Random(7))
    injector.add(parse_rule({"path": "/x", "status": 503, "probability": 0.5, "times": 5}))
    fired = [injector.fire("GET", "/x") is not None for _ in range(40)]
    assert sum(fired) == 5
    fifth_failure = [n for n, failed in enumerate(fired) if failed][4]
    assert fifth_failure > 4  # some matching requests passed in between
    assert injector.rules() == []
