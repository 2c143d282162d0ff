"""Fixtures for the Salesforce client against a real emulator over HTTP (no fakes of Salesforce)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from sfclient_support import Control, FakeTime, Seed, password_settings

from bridge.config import SalesforceSettings
from bridge.emulator.server import RunningEmulator, start_emulator
from bridge.records.outbound import MogliEventFields
from bridge.salesforce.auth import TokenManager
from bridge.salesforce.rest import SalesforceClient


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """A fresh emulated org (the default org) serving in this test's loop."""
    running = await start_emulator(host="127.0.0.1", port=0)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The aiohttp session the client under test is given."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def control(emulator: RunningEmulator, http: aiohttp.ClientSession) -> Control:
    """The emulator's control API."""
    return Control(http, emulator.url)


@pytest.fixture
def settings(emulator: RunningEmulator) -> SalesforceSettings:
    """Password-grant settings for the default org."""
    return password_settings(emulator.url)


@pytest.fixture
def fake_time() -> FakeTime:
    """The injected clock and sleep."""
    return FakeTime()


@pytest.fixture
def tokens(http: aiohttp.ClientSession, settings: SalesforceSettings, fake_time: FakeTime) -> TokenManager:
    """The shared token manager."""
    return TokenManager(http, settings, sleep=fake_time.sleep, clock=fake_time.clock)


@pytest.fixture
def client(
    http: aiohttp.ClientSession, tokens: TokenManager, settings: SalesforceSettings, fake_time: FakeTime
) -> SalesforceClient:
    """The client under test, with injected time."""
    return SalesforceClient(http, tokens, settings, sleep=fake_time.sleep, clock=fake_time.clock)


@pytest.fixture
async def seed(control: Control, client: SalesforceClient) -> Seed:
    """Seeded users/contacts/accounts plus one Mogli Event written through the client."""
    owner = await control.first_id("User", Username="owner1@example.com")
    results = await client.upsert_mogli_events(
        [MogliEventFields("link-seed", "Seed link", "one_on_one", None, owner)]
    )
    assert results[0].ok and results[0].record_id
    return Seed(
        owner=owner,
        contact=await control.first_id("Contact"),
        lead=await control.first_id("Lead"),
        account=await control.first_id("Account"),
        mogli_event=results[0].record_id,
    )
