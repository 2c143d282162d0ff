"""The Composite resource (reference §2.4): references, allOrNone rollback, envelope validation."""

from __future__ import annotations

from typing import Any

from tests.adapters.emulator.conftest import EmulatorClient

V = "/services/data/v60.0"


def _sub(method: str, url: str, ref: str, body: Any = None) -> dict[str, Any]:
    sub: dict[str, Any] = {"method": method, "url": V + url, "referenceId": ref}
    if body is not None:
        sub["body"] = body
    return sub


async def _composite(emulator: EmulatorClient, subs: list[dict[str, Any]], all_or_none: bool) -> Any:
    envelope = {"allOrNone": all_or_none, "collateSubrequests": False, "compositeRequest": subs}
    reply = await emulator.rest("POST", "/composite", json=envelope)
    assert reply.status == 200, reply.body
    return reply.body["compositeResponse"]


async def test_references_feed_later_subrequests(emulator: EmulatorClient) -> None:
    """`@{ref.id}` in a url and a body, and `@{ref.records[0].Id}` from a query, resolve to earlier
    results."""
    subs = [
        _sub("POST", "/sobjects/Account", "acct", {"Name": "Composite Co"}),
        _sub("POST", "/sobjects/Contact", "ctc", {"LastName": "Ref", "AccountId": "@{acct.id}"}),
        _sub("GET", "/query?q=SELECT+Id+FROM+Contact+WHERE+LastName='Ref'", "found"),
        _sub("PATCH", "/sobjects/Contact/@{found.records[0].Id}", "upd", {"FirstName": "Via @{acct.id}"}),
        _sub("GET", "/sobjects/Contact/@{ctc.id}", "read"),
    ]
    responses = await _composite(emulator, subs, all_or_none=True)
    assert [r["httpStatusCode"] for r in responses] == [201, 201, 200, 204, 200]
    assert [r["referenceId"] for r in responses] == ["acct", "ctc", "found", "upd", "read"]
    account_id = responses[0]["body"]["id"]
    assert responses[0]["httpHeaders"]["Location"] == f"{V}/sobjects/Account/{account_id}"
    contact = emulator.store.get("Contact", responses[1]["body"]["id"])
    assert contact["AccountId"] == account_id
    assert contact["FirstName"] == f"Via {account_id}"


async def test_all_or_none_failure_rolls_back_and_halts(emulator: EmulatorClient) -> None:
    """allOrNone: a failing subrequest keeps its own error, earlier ones are rolled back and report
    400 PROCESSING_HALTED, later ones are not run; top level is still 200."""
    subs = [
        _sub("POST", "/sobjects/Account", "ok", {"Name": "Rolled Back Co"}),
        _sub("POST", "/sobjects/Account", "bad", {"Industry": "No name"}),
        _sub("POST", "/sobjects/Account", "later", {"Name": "Never Co"}),
    ]
    responses = await _composite(emulator, subs, all_or_none=True)
    assert [r["httpStatusCode"] for r in responses] == [400, 400, 400]
    assert responses[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert responses[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert responses[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    names = {r["Name"] for r in emulator.store.records("Account")}
    assert names.isdisjoint({"Rolled Back Co", "Never Co"})


async def test_without_all_or_none_successes_stay(emulator: EmulatorClient) -> None:
    """allOrNone false: successes commit; a subrequest referring to a failed one gets PROCESSING_HALTED
    `Invalid reference specified`."""
    subs = [
        _sub("POST", "/sobjects/Account", "bad", {"Industry": "No name"}),
        _sub("POST", "/sobjects/Account", "ok", {"Name": "Kept Co"}),
        _sub("GET", "/sobjects/Account/@{bad.id}", "dependent"),
    ]
    responses = await _composite(emulator, subs, all_or_none=False)
    assert [r["httpStatusCode"] for r in responses] == [400, 201, 400]
    assert responses[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert responses[2]["body"][0]["message"].startswith("Invalid reference specified.")
    assert emulator.store.get("Account", responses[1]["body"]["id"])["Name"] == "Kept Co"


async def test_upsert_and_collections_inside_composite(emulator: EmulatorClient) -> None:
    """Composite runs upserts by External ID and sObject Collections subrequests like standalone calls."""
    records = {"records": [{"attributes": {"type": "Account"}, "Name": "In Collection"}]}
    subs = [
        _sub("PATCH", "/sobjects/Mogli_Event__c/Scheduling_Link_Id__c/lk-9", "me", {"Name": "Link"}),
        _sub("POST", "/composite/sobjects", "coll", records),
    ]
    responses = await _composite(emulator, subs, all_or_none=True)
    assert responses[0]["httpStatusCode"] == 201 and responses[0]["body"]["created"] is True
    assert responses[1]["httpStatusCode"] == 200 and responses[1]["body"][0]["success"] is True


async def test_malformed_envelopes_are_plain_400(emulator: EmulatorClient) -> None:
    """A missing referenceId, more than 25 subrequests, a duplicate referenceId or a forbidden header is
    refused whole with 400 before anything runs."""
    good = _sub("POST", "/sobjects/Account", "a", {"Name": "Must Not Exist"})
    no_ref = {"method": "GET", "url": V + "/limits"}
    too_many = [_sub("GET", "/sobjects/Account/describe", f"r{n}") for n in range(26)]
    header = {**_sub("GET", "/limits", "h"), "httpHeaders": {"Authorization": "Bearer x"}}
    for subs in ([good, no_ref], too_many, [good, good], [good, header], []):
        reply = await emulator.rest("POST", "/composite", json={"compositeRequest": subs})
        assert reply.status == 400, subs
        assert isinstance(reply.body, list) and reply.body[0]["errorCode"]
    assert "Must Not Exist" not in {r["Name"] for r in emulator.store.records("Account")}


async def test_unknown_subrequest_url_fails_that_subrequest(emulator: EmulatorClient) -> None:
    """A subrequest for an unsupported resource or version answers 404 in its slot, not at the top."""
    subs = [
        {"method": "GET", "url": "/services/data/v20.0/sobjects/Account/describe", "referenceId": "old"},
        _sub("GET", "/sobjects/Account/describe", "fine"),
    ]
    responses = await _composite(emulator, subs, all_or_none=False)
    assert [r["httpStatusCode"] for r in responses] == [404, 200]


async def test_at_most_five_collections_or_query_subrequests(emulator: EmulatorClient) -> None:
    """Six sObject Collections or query subrequests in one Composite call are refused whole with 400
    LIMIT_EXCEEDED before anything runs; five, beside other subrequests, are served.
    Doc: "Up to 5 of these subrequests can be sObject Collections or query operations" (Send Multiple
    Requests Using Composite, resources_composite_composite_post.htm)."""
    create = _sub("POST", "/sobjects/Account", "made", {"Name": "Heavy Neighbour"})
    records = {"records": [{"attributes": {"type": "Account"}, "Name": "Heavy Collection"}]}
    heavy = [
        _sub("POST", "/composite/sobjects", "coll", records),
        *(_sub("GET", "/query?q=SELECT+Id+FROM+Account", f"q{n}") for n in range(3)),
        _sub("GET", "/queryAll?q=SELECT+Id+FROM+Account", "qa"),
    ]
    extra = _sub("GET", "/query/?q=SELECT+Id+FROM+Contact", "q6")
    refused = await emulator.rest("POST", "/composite", json={"compositeRequest": [create, *heavy, extra]})
    assert refused.status == 400
    assert refused.body[0]["errorCode"] == "LIMIT_EXCEEDED"
    assert {"Heavy Neighbour", "Heavy Collection"}.isdisjoint(
        {r["Name"] for r in emulator.store.records("Account")}
    )
    responses = await _composite(emulator, [create, *heavy], all_or_none=False)
    assert [r["httpStatusCode"] for r in responses] == [201, 200, 200, 200, 200, 200]
