"""One emulator hosts many orgs (CONTRACT §9): each on its own URL with its own records, users, tokens,
limits and control API; a token or a record id of one org is never honoured by another."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from tests.adapters.emulator.conftest import EmulatorClient
from tests.adapters.emulator.emulator_orgs_support import RsaKey, new_org

EVENT = {"Subject": "Call", "StartDateTime": "2026-06-01T10:00:00Z", "EndDateTime": "2026-06-01T10:30:00Z"}


async def test_a_new_org_has_its_own_url_id_and_integration_user(emulator: EmulatorClient) -> None:
    """POST /__emulator/orgs answers 201 with a 00D id, a URL of its own and one active integration user,
    and GET /__emulator/orgs lists it beside the main org with its user and record counts."""
    org = await new_org(emulator, "Acme")

    assert org.org_id.startswith("00D") and len(org.org_id) == 18
    assert org.url.startswith("http://localhost:") and org.url != emulator.url
    assert [u["Username"] for u in org.users] == [f"integration@{org.org_id.lower()}.example"]
    assert org.users[0]["IsActive"] is True
    listing = (await emulator.control("GET", "/orgs"))["orgs"]
    by_id = {row["org_id"]: row for row in listing}
    assert by_id[org.org_id] == {
        "org_id": org.org_id,
        "name": "Acme",
        "url": org.url,
        "users": 1,
        "records": {},
        "main": False,
    }
    assert [row["main"] for row in listing].count(True) == 1


async def test_a_new_org_accepts_the_bridge_writes_like_the_main_org(emulator: EmulatorClient) -> None:
    """A hosted org defines Mogli_Event__c and the Event fields, and upserts by External ID work there."""
    org = await new_org(emulator, "Acme")
    token = await org.client_token()
    mogli = {"Name": "Link", "Link_Type__c": "one_on_one"}
    link = await org.rest("PATCH", "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/L-1", token, mogli)
    assert link.status == 201, link.body
    event = {**EVENT, "WhatId": link.body["id"], "Mogli_Event_Id__c": link.body["id"]}
    booked = await org.rest("PATCH", "/sobjects/Event/Scheduling_Booking_Id__c/B-1", token, event)
    assert booked.status == 201, booked.body
    counts = {row["org_id"]: row["records"] for row in (await emulator.control("GET", "/orgs"))["orgs"]}
    assert counts[org.org_id] == {"Event": 1, "Mogli_Event__c": 1}


async def test_a_token_works_only_at_the_org_that_issued_it(emulator: EmulatorClient) -> None:
    """An access token of org A reads at A and answers 401 INVALID_SESSION_ID at org B and the main org."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a = await org_a.client_token()

    at_a = await org_a.rest("GET", "/limits", token_a)
    at_b = await org_b.rest("GET", "/limits", token_a)
    at_main = await emulator.rest("GET", "/limits", token=token_a)

    assert at_a.status == 200
    for refused in (at_b, at_main):
        assert refused.status == 401
        assert refused.body[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_a_token_of_another_org_cannot_handshake_cometd(emulator: EmulatorClient) -> None:
    """A CometD handshake at org B with org A's token is denied as a bad token is (401::Authentication
    invalid), while the same handshake at org A succeeds."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a = await org_a.client_token()
    handshake = [
        {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}
    ]
    headers = {"Authorization": f"Bearer {token_a}"}

    own = await org_a.request("POST", "/cometd/60.0", json=handshake, headers=headers)
    other = await org_b.request("POST", "/cometd/60.0", json=handshake, headers=headers)

    assert own.body[0]["successful"] is True
    assert other.body[0]["successful"] is False
    assert other.body[0]["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"


async def test_jwt_grant_needs_the_org_key_and_an_active_user_of_that_org(emulator: EmulatorClient) -> None:
    """At an org with its own key, an assertion for an active user gets a token for that org; an unknown
    user, an inactive user, a user of another org and a foreign key each answer 400 invalid_grant."""
    key, other_key = RsaKey(), RsaKey()
    users = [{"Username": "sync@acme.example"}, {"Username": "gone@acme.example", "IsActive": False}]
    org = await new_org(emulator, "Acme", key=key, users=users)
    neighbour = await new_org(emulator, "Neighbour", key=key)

    good = await org.jwt_token(key, "sync@acme.example")
    assert good.status == 200, good.body
    assert good.body["instance_url"] == org.url
    assert good.body["id"].split("/")[-2] == org.org_id
    refusals = [
        await org.jwt_token(key, "nobody@acme.example"),
        await org.jwt_token(key, "gone@acme.example"),
        await org.jwt_token(key, neighbour.users[0]["Username"]),
        await org.jwt_token(other_key, "sync@acme.example"),
    ]
    assert [r.status for r in refusals] == [400, 400, 400, 400]
    assert {r.body["error"] for r in refusals} == {"invalid_grant"}
    assert refusals[0].body["error_description"] == "user hasn't approved this consumer"
    assert refusals[1].body["error_description"] == "user hasn't approved this consumer"


async def test_deactivating_a_user_ends_their_sessions_for_good(emulator: EmulatorClient) -> None:
    """PATCH User.IsActive=false makes that user's token answer INVALID_SESSION_ID at once; reactivating
    does not revive it, while a new grant after reactivation works."""
    key = RsaKey()
    org = await new_org(
        emulator, "Acme", key=key, users=[{"Username": "admin@a.example"}, {"Username": "s@a.example"}]
    )
    admin = (await org.jwt_token(key, "admin@a.example")).body["access_token"]
    sync = (await org.jwt_token(key, "s@a.example")).body["access_token"]
    sync_user = org.users[1]["Id"]
    assert (await org.rest("GET", "/limits", sync)).status == 200

    off = await org.rest("PATCH", f"/sobjects/User/{sync_user}", admin, {"IsActive": False})
    assert off.status == 204, off.body
    after_off = await org.rest("GET", "/limits", sync)
    on = await org.rest("PATCH", f"/sobjects/User/{sync_user}", admin, {"IsActive": True})
    assert on.status == 204, on.body
    after_on = await org.rest("GET", "/limits", sync)
    fresh = await org.jwt_token(key, "s@a.example")

    assert (after_off.status, after_off.body[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
    assert (after_on.status, after_on.body[0]["errorCode"]) == (401, "INVALID_SESSION_ID")
    assert (await org.rest("GET", "/limits", admin)).status == 200
    assert fresh.status == 200
    assert (await org.rest("GET", "/limits", fresh.body["access_token"])).status == 200


async def test_records_of_one_org_are_invisible_in_another(emulator: EmulatorClient) -> None:
    """A Contact created in org A is found in A and nowhere else: not by id, SOQL or the control API of B."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a, token_b = await org_a.client_token(), await org_b.client_token()
    created = await org_a.rest("POST", "/sobjects/Contact", token_a, {"LastName": "Only-in-A"})
    contact_id = created.body["id"]

    in_a = await org_a.rest("GET", f"/sobjects/Contact/{contact_id}", token_a)
    in_b = await org_b.rest("GET", f"/sobjects/Contact/{contact_id}", token_b)
    query_b = await org_b.rest("GET", "/query?q=SELECT+Id+FROM+Contact", token_b)
    control_b = await org_b.control("GET", "/records/Contact")
    control_main = await emulator.control("GET", "/records/Contact")

    assert in_a.status == 200
    assert (in_b.status, in_b.body[0]["errorCode"]) == (404, "NOT_FOUND")
    assert query_b.body["totalSize"] == 0
    assert control_b["totalSize"] == 0
    assert contact_id not in {r["Id"] for r in control_main["records"]}


async def test_ids_are_unique_across_orgs(emulator: EmulatorClient) -> None:
    """The n-th record of every org, and its users, get different ids in each org."""
    orgs = [await new_org(emulator, f"Org {n}") for n in range(3)]
    ids, user_ids = set(), set()
    for org in orgs:
        reply = await org.rest("POST", "/sobjects/Contact", await org.client_token(), {"LastName": "First"})
        ids.add(reply.body["id"])
        user_ids.add(org.users[0]["Id"])
    main_users = {r["Id"] for r in (await emulator.control("GET", "/records/User"))["records"]}
    assert len(ids) == 3
    assert len(user_ids) == 3 and not user_ids & main_users


async def test_an_id_of_another_org_is_refused_as_an_unknown_id(emulator: EmulatorClient) -> None:
    """An Event in org B whose WhoId is a Contact of org A gets the error an id unknown to B gets."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a, token_b = await org_a.client_token(), await org_b.client_token()
    foreign = (await org_a.rest("POST", "/sobjects/Contact", token_a, {"LastName": "A"})).body["id"]

    refused = await org_b.rest("POST", "/sobjects/Event", token_b, {**EVENT, "WhoId": foreign})
    never = await org_b.rest("POST", "/sobjects/Event", token_b, {**EVENT, "WhoId": "003T00299999999"})

    assert refused.status == 400
    assert refused.body[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert refused.body[0]["errorCode"] == never.body[0]["errorCode"]
    assert refused.body[0]["fields"] == ["WhoId"]


async def test_requests_are_listed_per_org_with_token_fingerprints(emulator: EmulatorClient) -> None:
    """/__emulator/requests of org A lists A's token request (token null) and REST calls with the token's
    SHA-256 fingerprint, never the token; org B lists none of them; `since` leaves out earlier ones."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token = await org_a.client_token()
    await org_a.rest("GET", "/limits", token)
    mark = datetime.now(UTC).isoformat()
    await org_a.rest("GET", "/sobjects", token)

    reply = await org_a.request("GET", "/__emulator/requests")
    listed = reply.body["requests"]
    later = (await org_a.request("GET", "/__emulator/requests", params={"since": mark})).body["requests"]

    assert token not in json.dumps(reply.body)
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
    assert [(r["method"], r["path"], r["status"], r["token"]) for r in listed] == [
        ("POST", "/services/oauth2/token", 200, None),
        ("GET", "/services/data/v60.0/limits", 200, fingerprint),
        ("GET", "/services/data/v60.0/sobjects", 200, fingerprint),
    ]
    assert [r["path"] for r in later] == ["/services/data/v60.0/sobjects"]
    assert (await org_b.control("GET", "/requests"))["requests"] == []


async def test_limits_and_the_allocation_are_per_org(emulator: EmulatorClient) -> None:
    """Usage set on org A shows in A's /limits and Sforce-Limit-Info only; A exhausted still lets B work."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a, token_b = await org_a.client_token(), await org_b.client_token()
    await org_a.control("POST", "/limits", {"allocation": 100, "used": 100})

    exhausted = await org_a.rest("GET", "/limits", token_a)
    at_b = await org_b.rest("GET", "/limits", token_b)

    assert (exhausted.status, exhausted.body[0]["errorCode"]) == (403, "REQUEST_LIMIT_EXCEEDED")
    assert exhausted.headers["Sforce-Limit-Info"] == "api-usage=100/100"
    assert at_b.status == 200
    assert at_b.body["DailyApiRequests"] == {"Max": 15000, "Remaining": 14999}
    assert at_b.headers["Sforce-Limit-Info"] == "api-usage=1/15000"


async def test_faults_hit_only_the_org_they_were_set_on(emulator: EmulatorClient) -> None:
    """A fault rule posted to org A's control API fails A's calls and leaves org B's alone."""
    org_a, org_b = await new_org(emulator, "A"), await new_org(emulator, "B")
    token_a, token_b = await org_a.client_token(), await org_b.client_token()
    rule = {"method": "GET", "path": "/services/data/v60.0/limits", "status": 503, "times": 1}
    await org_a.control("POST", "/faults", rule)

    hit = await org_a.rest("GET", "/limits", token_a)
    spared = await org_b.rest("GET", "/limits", token_b)

    assert hit.status == 503
    assert spared.status == 200
    assert (await org_a.control("GET", "/stats"))["faults_fired"] == 1
    assert (await org_b.control("GET", "/stats"))["faults_fired"] == 0


async def test_a_bad_org_request_names_the_key(emulator: EmulatorClient) -> None:
    """POST /__emulator/orgs without a name, or with a user lacking a Username, answers 400 naming it."""
    no_name = await emulator.request("POST", "/__emulator/orgs", json={})
    bad_user = await emulator.request(
        "POST", "/__emulator/orgs", json={"name": "X", "users": [{"LastName": "Y"}]}
    )
    assert (no_name.status, no_name.body["error"].split(":")[0]) == (400, "name")
    assert (bad_user.status, bad_user.body["error"].split(":")[0]) == (400, "users[1].Username")


async def test_orgs_of_a_tls_emulator_serve_https_with_its_certificate(emulator_tls: EmulatorClient) -> None:
    """Under --tls a new org's URL is https and the main emulator's CA certificate verifies it."""
    org = await new_org(emulator_tls, "Secure")
    token = await org.client_token()
    assert org.url.startswith("https://localhost:")
    assert (await org.rest("GET", "/limits", token)).status == 200


async def test_the_control_route_deactivates_a_user_and_ends_their_sessions(emulator: EmulatorClient) -> None:
    """POST /__emulator/users/active false refuses the user's token and a new grant; true lets a new grant
    in while the old token stays dead."""
    key = RsaKey()
    org = await new_org(emulator, "Acme", key=key)
    username = org.users[0]["Username"]
    token = (await org.jwt_token(key, username)).body["access_token"]

    await org.control("POST", "/users/active", {"username": username, "active": False})
    old_token = await org.rest("GET", "/limits", token)
    refused = await org.jwt_token(key, username)
    await org.control("POST", "/users/active", {"username": username, "active": True})
    again = await org.jwt_token(key, username)

    assert (old_token.status, refused.status, refused.body["error"]) == (401, 400, "invalid_grant")
    assert (await org.rest("GET", "/limits", token)).status == 401
    assert again.status == 200
    users = (await org.control("GET", "/records/User"))["records"]
    assert [u["IsActive"] for u in users] == [True]


async def test_custom_channel_ids_differ_between_orgs(emulator: EmulatorClient) -> None:
    """The first PlatformEventChannel of two orgs gets a different id in each."""
    channel = {"FullName": "Bridge__chn", "Metadata": {"channelType": "data", "label": "Bridge"}}
    ids = []
    for org in (await new_org(emulator, "A"), await new_org(emulator, "B")):
        token = await org.client_token()
        created = await org.rest("POST", "/tooling/sobjects/PlatformEventChannel", token, channel)
        assert created.status == 201, created.body
        ids.append(created.body["id"])
    assert ids[0] != ids[1]


async def test_a_username_is_unique_across_orgs(emulator: EmulatorClient) -> None:
    """A new org whose user has the username of a user of another org (or of the main org, in any case)
    is refused with 400 DUPLICATE_USERNAME naming the user, and no org is created."""
    await new_org(emulator, "A", users=[{"Username": "sync@shared.example"}])
    bodies = [
        {"name": "B", "users": [{"Username": "SYNC@shared.example"}]},
        {"name": "C", "users": [{"Username": "bridge@example.com"}]},
        {"name": "D", "users": [{"Username": "x@d.example"}, {"Username": "x@d.example"}]},
    ]
    refusals = [await emulator.request("POST", "/__emulator/orgs", json=body) for body in bodies]

    assert [r.status for r in refusals] == [400, 400, 400]
    assert [r.body["error"].split(": ")[:2] for r in refusals] == [
        ["users[1].Username", "DUPLICATE_USERNAME"],
        ["users[1].Username", "DUPLICATE_USERNAME"],
        ["users[2].Username", "DUPLICATE_USERNAME"],
    ]
    assert [o["name"] for o in (await emulator.control("GET", "/orgs"))["orgs"]] == ["main", "A"]
