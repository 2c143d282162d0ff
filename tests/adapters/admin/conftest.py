"""Admin adapter fixtures: the ledger tests' `ledger_url`, and an admin app on a real ledger with fakes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.admin import AdminServer, DaemonProbe, ping_postgres
from bridge.config import AdminSettings
from bridge.ledger import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.metrics import BridgeMetrics
from tests.adapters.admin.fakes import (
    FakeIngestor,
    FakeOptions,
    FakePusher,
    FakeRunner,
    FakeSalesforce,
    FakeSlot,
    FakeSource,
)
from tests.adapters.admin.filled import Filled, fill
from tests.adapters.ledger.conftest import ledger_dsn, ledger_url
from tests.adapters.ledger.factory import NOW

__all__ = ["AUTH", "TOKEN", "Harness", "Make", "ledger_dsn", "ledger_url"]

TOKEN = "admin-test-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Harness:
    """An admin app on a real ledger and hand-written fakes of the live components."""

    client: TestClient[Any, Any]
    ledger: Ledger
    filled: Filled
    server: AdminServer[FakeOptions]
    salesforce: FakeSalesforce
    pusher: FakePusher
    source: FakeSource
    states: dict[str, str] = field(default_factory=dict)
    runner: FakeRunner | None = None


Make = Callable[..., Any]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[Ledger, Filled]]:
    """A filled SQLite ledger behind the Ledger the daemon uses."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    async_ledger = Ledger.from_url(url, clock=lambda: NOW)
    filled = await fill(async_ledger)
    yield async_ledger, filled
    await async_ledger.close()


@pytest.fixture
async def make(ledger: tuple[Ledger, Filled], pg_database: str) -> AsyncIterator[Callable[..., Any]]:
    """Builds and starts a harness; `scheduler_dsn`, `token`, `with_runner`, `block` vary it."""
    clients: list[TestClient[Any, Any]] = []

    async def build(
        *, token: str = TOKEN, scheduler_dsn: str | None = None, with_runner: bool = True, block: bool = False
    ) -> Harness:
        async_ledger, filled = ledger
        states = {"ingest": "running", "push": "running", "admin": "running"}
        source, salesforce, pusher = FakeSource(), FakeSalesforce(), FakePusher()
        runner = FakeRunner(async_ledger, block=block) if with_runner else None
        probe = DaemonProbe(
            slot="mogli_bridge",
            states=states,
            ledger=async_ledger,
            source=source,
            salesforce=salesforce,
            pusher=pusher,
            ingestor=FakeIngestor(),
            ping_scheduler=functools.partial(ping_postgres, scheduler_dsn or pg_database),
            read_slot=FakeSlot,
            clock=lambda: NOW,
        )
        server: AdminServer[FakeOptions] = AdminServer(
            AdminSettings(token=token),
            probe=probe,
            ledger=async_ledger,
            metrics=BridgeMetrics(),
            notify_pusher=pusher.notify,
            runner=runner,
            make_options=FakeOptions if with_runner else None,
        )
        client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
        await client.start_server()
        clients.append(client)
        return Harness(client, async_ledger, filled, server, salesforce, pusher, source, states, runner)

    yield build
    for client in clients:
        await client.close()
