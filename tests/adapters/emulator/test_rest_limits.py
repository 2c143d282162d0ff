"""API usage (reference §2.6, §6): `Sforce-Limit-Info`, `/limits`, the daily allocation, counting rules."""

from __future__ import annotations

from bridge.emulator.limits import ApiUsage
from tests.adapters.emulator.conftest import EmulatorClient


async def test_every_rest_response_carries_limit_info(emulator: EmulatorClient) -> None:
    """`Sforce-Limit-Info: api-usage=N/M` is on successes, errors and 401s, and N counts the calls."""
    ok = await emulator.rest("GET", "/limits")
    not_found = await emulator.rest("GET", "/sobjects/Account/001000000000000AAA")
    unauthorized = await emulator.rest("GET", "/limits", token="bogus")
    assert ok.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    assert not_found.headers["Sforce-Limit-Info"] == "api-usage=2/15000"
    assert unauthorized.headers["Sforce-Limit-Info"] == "api-usage=2/15000"


async def test_limits_resource_reports_allocations(emulator: EmulatorClient) -> None:
    """`/limits` is a map of `{Max, Remaining}` with DailyApiRequests and DailyDeliveredPlatformEvents."""
    await emulator.rest("GET", "/sobjects")
    reply = await emulator.rest("GET", "/limits")
    assert reply.body["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 2}
    assert reply.body["DailyDeliveredPlatformEvents"] == {"Max": 10000, "Remaining": 10000}
    assert reply.body["StreamingApiConcurrentClients"]["Max"] == 20
    assert all(set(v) == {"Max", "Remaining"} for v in reply.body.values())


async def test_exhausted_allocation_answers_403(emulator: EmulatorClient) -> None:
    """Once the rolling-day usage reaches the allocation, REST answers 403 REQUEST_LIMIT_EXCEEDED
    `TotalRequests Limit exceeded.`; raising the allocation lets calls through again."""
    await emulator.token()
    await emulator.control("POST", "/limits", {"allocation": 100, "used": 99})
    last = await emulator.rest("GET", "/limits")
    assert last.status == 200
    refused = await emulator.rest("POST", "/sobjects/Account", json={"Name": "x"})
    assert refused.status == 403
    assert refused.body == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED", "fields": []}
    ]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=100/100"
    assert emulator.store.query("SELECT Id FROM Account WHERE Name = 'x'").total_size == 0
    await emulator.control("POST", "/limits", {"allocation": 1000})
    assert (await emulator.rest("GET", "/limits")).status == 200


async def test_collections_and_composite_count_as_one_request(emulator: EmulatorClient) -> None:
    """A 3-record collections call and a 2-subrequest composite call cost one API request each."""
    records = [{"attributes": {"type": "Account"}, "Name": f"A{n}"} for n in range(3)]
    await emulator.rest("POST", "/composite/sobjects", json={"records": records})
    subrequests = [
        {"method": "GET", "url": "/services/data/v60.0/limits", "referenceId": "a"},
        {
            "method": "POST",
            "url": "/services/data/v60.0/sobjects/Account",
            "referenceId": "b",
            "body": {"Name": "B"},
        },
    ]
    await emulator.rest("POST", "/composite", json={"compositeRequest": subrequests})
    stats = await emulator.control("GET", "/stats")
    assert stats["api_requests"]["total"] == 2
    assert stats["api_requests"]["by_route"] == {"POST /composite/sobjects": 1, "POST /composite": 1}


def test_usage_is_a_rolling_day() -> None:
    """Requests older than 24 hours stop counting against the allocation."""
    now = [1_000_000.0]
    usage = ApiUsage(10, wall_clock=lambda: now[0])
    for _ in range(10):
        usage.count("GET /limits")
    assert usage.exhausted()
    now[0] += 12 * 3600
    usage.count("GET /limits")
    assert usage.used() == 11
    now[0] += 12 * 3600 + 60
    assert usage.used() == 1
    assert not usage.exhausted()
    assert usage.header() == "api-usage=1/10"
    assert usage.total_requests == 11
