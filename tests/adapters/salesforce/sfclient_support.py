"""Helpers for the Salesforce client's adapter tests: fake time, the emulator control API, seed data."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bridge.config import SalesforceSettings
from bridge.records.outbound import EventFields

USERNAME = "bridge@example.com"
PASSWORD = "emulator"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class FakeTime:
    """Injected clock and sleep: retries and budget windows pass without waiting."""

    now: float = 10_000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        """The current fake monotonic time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the delay and advance the clock instead of waiting."""
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Control:
    """The emulator's control API (`/__emulator/...`) and a few seed lookups."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def get(self, path: str) -> Any:
        """GET a control route, JSON answer."""
        async with self.http.get(f"{self.url}/__emulator/{path}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a control route, JSON answer."""
        async with self.http.post(f"{self.url}/__emulator/{path}", json=body or {}) as response:
            assert response.status in (200, 201), await response.text()
            return await response.json()

    async def fault(self, **rule: Any) -> None:
        """Add one fault rule."""
        await self.post("faults", rule)

    async def stats(self) -> dict[str, Any]:
        """Request counters."""
        stats: dict[str, Any] = await self.get("stats")
        return stats

    async def records(self, sobject: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of an object as the emulator holds it."""
        suffix = "?include_deleted=1" if include_deleted else ""
        body = await self.get(f"records/{sobject}{suffix}")
        records: list[dict[str, Any]] = body["records"]
        return records

    async def first_id(self, sobject: str, **match: Any) -> str:
        """Id of the first seeded record of an object matching the given field values."""
        for record in await self.records(sobject):
            if all(record.get(k) == v for k, v in match.items()):
                return str(record["Id"])
        raise AssertionError(f"no {sobject} with {match}")


def password_settings(url: str, **changes: Any) -> SalesforceSettings:
    """SalesforceSettings for the emulator's password grant, with overrides."""
    values: dict[str, Any] = {
        "login_url": url,
        "auth": "password",
        "client_id": "adapter-tests",
        "client_secret": "adapter-secret",
        "username": USERNAME,
        "password": PASSWORD,
        "max_attempts": 4,
        "request_timeout_seconds": 10.0,
    }
    values.update(changes)
    return SalesforceSettings(**values)


@dataclass(frozen=True)
class Seed:
    """Ids of seeded records the tests point at."""

    owner: str
    contact: str
    lead: str
    account: str
    mogli_event: str


def event_item(seed: Seed, booking_id: str, **changes: Any) -> EventFields:
    """An Event for a Contact booking on the seed link."""
    values: dict[str, Any] = {
        "booking_id": booking_id,
        "owner_id": seed.owner,
        "who_id": seed.contact,
        "what_id": seed.mogli_event,
        "mogli_event_id": seed.mogli_event,
        "subject": "Intro call",
        "description": "A first conversation",
        "start_at": START,
        "end_at": START + timedelta(minutes=30),
    }
    values.update(changes)
    return EventFields(**values)
