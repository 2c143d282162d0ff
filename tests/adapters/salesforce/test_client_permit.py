"""The permit hook of several workers (issue 14), against the emulator: no request leaves once this worker may
no longer call the org, not even a retry of a request that was sent while it could."""

from __future__ import annotations

import aiohttp
import pytest
from sfclient_support import Control, FakeTime, Seed, event_item

from bridge.config import SalesforceSettings
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import SalesforceClient
from bridge.tenancy.workers import NotPermitted, Permits

EVENT_UPSERT = "/composite/sobjects/Event"


async def test_no_request_after_the_permit_ended_not_even_a_retry(
    http: aiohttp.ClientSession,
    tokens: TokenManager,
    settings: SalesforceSettings,
    fake_time: FakeTime,
    seed: Seed,
    control: Control,
) -> None:
    """A permitted upsert lands; a 503 is retried after a back-off during which the worker is paused past
    its permit (lease minus margin): the retry is not sent, NotPermitted is raised, no later call is sent."""
    permits = Permits("w1", 10.0, monotonic=fake_time.clock)
    permits.renewed({"org-a": 1}, fake_time.now)

    async def paused_sleep(seconds: float) -> None:
        await fake_time.sleep(seconds)
        fake_time.now += 8.0  # the OS paused the worker during the back-off

    client = SalesforceClient(
        http,
        tokens,
        settings,
        sleep=paused_sleep,
        clock=fake_time.clock,
        permit=lambda: permits.check("org-a", 1),
    )
    [landed] = await client.upsert_events([event_item(seed, "permitted")])
    assert landed.ok

    await control.fault(method="PATCH", path=EVENT_UPSERT, status=503, times=1)
    calls = client.calls
    with pytest.raises(NotPermitted):
        await client.upsert_events([event_item(seed, "after the lease")])
    assert client.calls - calls == 1, "the first attempt went out, its retry did not"
    with pytest.raises(NotPermitted):
        await client.find_events_by_booking(["permitted"])
    assert client.calls - calls == 1
    bookings = [r["Scheduling_Booking_Id__c"] for r in await control.records("Event")]
    assert bookings == ["permitted"]
