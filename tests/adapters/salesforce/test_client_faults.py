"""Transient faults, the daily API allocation and the proactive budget stop, against the emulator."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest
from sfclient_support import Control, FakeTime, Seed, event_item

from bridge.config import SalesforceSettings
from bridge.errors import ApiLimitExhausted, PermanentError, SalesforceUnavailable
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.errors import LIMIT_RETRY_AFTER_SECONDS
from bridge.salesforce.rest import BUDGET_RECHECK_SECONDS, SalesforceClient

EVENT_UPSERT = "/composite/sobjects/Event"


async def test_503_twice_is_retried_then_succeeds(
    client: SalesforceClient, seed: Seed, control: Control, fake_time: FakeTime
) -> None:
    """Two 503 SERVER_UNAVAILABLE answers are retried with backoff; the third attempt writes the Event."""
    await control.fault(method="PATCH", path=EVENT_UPSERT, status=503, times=2)
    calls = client.calls
    [result] = await client.upsert_events([event_item(seed, "retry-503")])
    assert result.ok and result.created is True
    assert client.calls - calls == 3
    assert len(fake_time.sleeps) == 2
    assert [r["Scheduling_Booking_Id__c"] for r in await control.records("Event")] == ["retry-503"]


async def test_persistent_outage_gives_up_as_unavailable(
    client: SalesforceClient, seed: Seed, control: Control, settings: SalesforceSettings
) -> None:
    """A 503 that never ends raises SalesforceUnavailable after salesforce.max_attempts attempts."""
    await control.fault(method="PATCH", path=EVENT_UPSERT, status=503)
    calls = client.calls
    with pytest.raises(SalesforceUnavailable):
        await client.upsert_events([event_item(seed, "never")])
    assert client.calls - calls == settings.max_attempts


@pytest.mark.parametrize(
    "rule",
    [
        {"status": 500, "error_code": "UNKNOWN_EXCEPTION"},
        {"status": 400, "error_code": "UNABLE_TO_LOCK_ROW"},
        {"status": 502, "body": "<html>Bad gateway</html>"},
        {"action": "drop"},
    ],
    ids=["500", "whole-call-lock", "non-json-5xx", "dropped-connection"],
)
async def test_transient_failures_are_retried(
    client: SalesforceClient, seed: Seed, control: Control, rule: dict[str, object]
) -> None:
    """5xx, a whole-call row lock, an HTML 5xx body and a dropped connection are each retried once."""
    await control.fault(method="PATCH", path=EVENT_UPSERT, times=1, **rule)
    calls = client.calls
    [result] = await client.upsert_events([event_item(seed, "transient")])
    assert result.ok
    assert client.calls - calls == 2


async def test_timeout_is_retried(
    http: aiohttp.ClientSession,
    settings: SalesforceSettings,
    control: Control,
    seed: Seed,
    fake_time: FakeTime,
) -> None:
    """A request slower than salesforce.request_timeout_seconds is abandoned and retried."""
    quick = replace(settings, request_timeout_seconds=0.3)
    client = SalesforceClient(
        http, TokenManager(http, quick), quick, sleep=fake_time.sleep, clock=fake_time.clock
    )
    await control.fault(method="PATCH", path=EVENT_UPSERT, latency_ms=3000, times=1)
    [result] = await client.upsert_events([event_item(seed, "slow")])
    assert result.ok
    assert client.calls == 2


async def test_request_limit_exceeded_is_not_retried(
    client: SalesforceClient, seed: Seed, control: Control, fake_time: FakeTime
) -> None:
    """403 REQUEST_LIMIT_EXCEEDED raises ApiLimitExhausted at once, with the documented wait."""
    stats = await control.stats()
    await control.post("limits", {"used": stats["api_allocation"]})
    calls = client.calls
    with pytest.raises(ApiLimitExhausted) as info:
        await client.upsert_events([event_item(seed, "over-limit")])
    assert info.value.retry_after == LIMIT_RETRY_AFTER_SECONDS
    assert client.calls - calls == 1
    assert fake_time.sleeps == []


async def test_budget_reserve_stops_before_the_allocation_runs_out(
    client: SalesforceClient, seed: Seed, control: Control, fake_time: FakeTime
) -> None:
    """Below the reserve, calls are refused without reaching Salesforce until the reading is stale."""
    await control.post("limits", {"allocation": 1000, "used": 950})
    [first] = await client.upsert_events([event_item(seed, "budget-1")])
    assert first.ok
    assert client.usage is not None and client.usage.remaining < 100

    requests = (await control.stats())["api_requests"]
    with pytest.raises(ApiLimitExhausted) as info:
        await client.upsert_events([event_item(seed, "budget-2")])
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= BUDGET_RECHECK_SECONDS
    assert (await control.stats())["api_requests"] == requests

    # The allocation is a rolling window: after the wait, one call goes out to learn the new usage.
    await control.post("limits", {"used": 100})
    fake_time.now += BUDGET_RECHECK_SECONDS
    [second] = await client.upsert_events([event_item(seed, "budget-2")])
    assert second.ok
    assert client.usage is not None and client.usage.remaining > 800


async def test_limits_probe_ignores_the_reserve(client: SalesforceClient, control: Control) -> None:
    """`limits()` is how the budget is re-read, so the reserve never blocks it."""
    await control.post("limits", {"allocation": 1000, "used": 990})
    await client.limits()
    usage = await client.limits()
    assert usage.limit == 1000
    assert client.usage == usage


async def test_usage_is_read_from_every_response(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """Sforce-Limit-Info is parsed on every answer, so usage tracks the org's counter."""
    await client.upsert_events([event_item(seed, "usage")])
    stats = await control.stats()
    assert client.usage is not None
    assert client.usage.used == stats["api_usage"]
    assert client.usage.limit == stats["api_allocation"]


async def test_bad_soql_is_permanent(client: SalesforceClient) -> None:
    """MALFORMED_QUERY is a programming error on our side: permanent, not retried."""
    with pytest.raises(PermanentError) as info:
        await client.query("SELEKT Id FROM Event")
    assert info.value.code == "MALFORMED_QUERY"
    assert client.calls == 1


async def test_reserve_lets_one_probe_through_when_stale(
    client: SalesforceClient, seed: Seed, control: Control, fake_time: FakeTime
) -> None:
    """Once the low reading is stale exactly one call probes; the others keep waiting for its answer."""
    await control.post("limits", {"allocation": 1000, "used": 950})
    await client.limits()
    fake_time.now += BUDGET_RECHECK_SECONDS
    [probe] = await client.upsert_events([event_item(seed, "probe")])
    assert probe.ok
    with pytest.raises(ApiLimitExhausted):
        await client.upsert_events([event_item(seed, "after-probe")])


async def test_token_outage_is_not_retried_twice_over(
    http: aiohttp.ClientSession, settings: SalesforceSettings, control: Control, fake_time: FakeTime
) -> None:
    """When the token endpoint stays down, the login's own retries are all there is (no nested retries)."""
    await control.fault(path="/services/oauth2/token", status=503)
    tokens = TokenManager(http, settings, sleep=fake_time.sleep, clock=fake_time.clock)
    client = SalesforceClient(http, tokens, settings, sleep=fake_time.sleep, clock=fake_time.clock)
    with pytest.raises(SalesforceUnavailable):
        await client.limits()
    assert tokens.token_requests == settings.max_attempts
    assert client.calls == 0


async def test_the_budget_recheck_interval_is_the_configured_one(
    http: aiohttp.ClientSession,
    tokens: TokenManager,
    settings: SalesforceSettings,
    seed: Seed,
    control: Control,
    fake_time: FakeTime,
) -> None:
    """`salesforce.api_budget_recheck_seconds` sets how long a reading below the reserve is trusted: after
    it, one call goes out and learns that the allocation is back."""
    quick = replace(settings, api_budget_recheck_seconds=5.0)
    client = SalesforceClient(http, tokens, quick, sleep=fake_time.sleep, clock=fake_time.clock)
    await control.post("limits", {"allocation": 1000, "used": 950})
    await client.upsert_events([event_item(seed, "recheck-1")])
    with pytest.raises(ApiLimitExhausted) as info:
        await client.upsert_events([event_item(seed, "recheck-2")])
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 5.0
    await control.post("limits", {"used": 100})
    fake_time.now += 5.0
    [second] = await client.upsert_events([event_item(seed, "recheck-2")])
    assert second.ok
