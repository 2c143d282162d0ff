"""The admin listener: loopback by default, port 0, a busy port retried, clean stop; outcome counters."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from bridge.admin import AdminServer, parse_listen
from bridge.admin import server as server_module
from bridge.config import AdminSettings
from bridge.errors import ConfigurationError
from bridge.ledger import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.metrics import BridgeMetrics
from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState
from tests.adapters.admin.conftest import Harness, Make


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("localhost:9000", ("localhost", 9000)),
        ("[::1]:8787", ("::1", 8787)),
        ("127.0.0.2:0", ("127.0.0.2", 0)),
    ],
)
def test_loopback_addresses_are_accepted(listen: str, expected: tuple[str, int]) -> None:
    """Loopback hosts (IPv4, IPv6, localhost) need no extra setting."""
    assert parse_listen(listen, allow_remote=False) == expected


@pytest.mark.parametrize("listen", ["0.0.0.0:8787", "10.1.2.3:8787", "[::]:8787", "admin.example.net:8787"])
def test_non_loopback_needs_allow_remote(listen: str) -> None:
    """Any other address is a configuration error naming admin.listen, unless admin.allow_remote is true."""
    with pytest.raises(ConfigurationError) as caught:
        parse_listen(listen, allow_remote=False)
    assert caught.value.key == "admin.listen" and "admin.allow_remote" in str(caught.value)
    assert parse_listen(listen, allow_remote=True)[1] == 8787


@pytest.mark.parametrize("listen", ["8787", "127.0.0.1", "127.0.0.1:http", ":8787"])
def test_malformed_listen_is_a_configuration_error(listen: str) -> None:
    """admin.listen must be host:port."""
    with pytest.raises(ConfigurationError, match="host:port"):
        parse_listen(listen, allow_remote=False)


def _server(h: Harness, listen: str) -> AdminServer[object]:
    return AdminServer(
        AdminSettings(listen=listen, token="t"),
        probe=h.server.probe,
        ledger=h.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=h.pusher.notify,
    )


async def _wait_port(server: AdminServer[object]) -> int:
    await asyncio.wait_for(server.listening.wait(), 30)
    assert server.port is not None
    return server.port


async def test_run_serves_on_port_zero_until_stopped(make: Make) -> None:
    """run(stop) binds (port 0 picks a free port), answers HTTP, and returns once stop is set."""
    h: Harness = await make()
    server, stop = _server(h, "127.0.0.1:0"), asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    port = await _wait_port(server)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 200
    stop.set()
    await asyncio.wait_for(task, 30)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz"):
            pass


async def test_a_busy_port_is_retried_not_fatal(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the port the admin app keeps trying; it binds once the port is free."""
    monkeypatch.setattr(server_module, "BIND_RETRY_SECONDS", 0.05)
    h: Harness = await make()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    server, stop = _server(h, f"127.0.0.1:{port}"), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(server.run(stop))
        for _ in range(1500):  # a log line, not an event, tells that the bind was refused
            if any(e["event"] == "admin.bind_failed" for e in logs):
                break
            await asyncio.sleep(0.02)
    assert server.port is None and not task.done()
    holder.close()
    assert await _wait_port(server) == port
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_run_refuses_a_remote_listen_address(make: Make) -> None:
    """The supervised component fails with a configuration error for a non-loopback address."""
    h: Harness = await make()
    with pytest.raises(ConfigurationError):
        await _server(h, "0.0.0.0:0").run(asyncio.Event())


async def test_counting_ledger_counts_outcomes_by_entity_and_state(tmp_path: Path) -> None:
    """Recorded outcomes reach the ledger and, through its outcome hook, mogli_bridge_changes_total by entity
    and outcome."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    metrics, ledger = BridgeMetrics(), Ledger.from_url(url)
    ledger.observe_outcomes(metrics.observe)
    now = datetime(2026, 11, 24, tzinfo=UTC)
    activities = [
        ActivityOutcome("b1", 1, OutcomeState.SYNCED),
        ActivityOutcome("b2", 1, OutcomeState.SYNCED),
        ActivityOutcome("b3", 1, OutcomeState.RETRY),
        ActivityOutcome("b4", 1, OutcomeState.CANCELLED),
    ]
    await ledger.record_activity_outcomes(activities, now)
    await ledger.record_link_outcomes([LinkOutcome("l1", 1, OutcomeState.FAILED)], now)
    assert len(await ledger.list_journal()) == 5  # every recorded outcome is journaled
    await ledger.close()
    text = metrics.render().decode()
    assert 'mogli_bridge_changes_total{entity="activity",outcome="synced"} 2.0' in text
    assert 'mogli_bridge_changes_total{entity="activity",outcome="retry"} 1.0' in text
    assert 'mogli_bridge_changes_total{entity="activity",outcome="cancelled"} 1.0' in text
    assert 'mogli_bridge_changes_total{entity="activity",outcome="failed"} 0.0' in text
    assert 'mogli_bridge_changes_total{entity="link",outcome="failed"} 1.0' in text


def test_each_daemon_has_its_own_registry() -> None:
    """Two BridgeMetrics never share a registry (no global registry, no duplicate-name errors)."""
    first, second = BridgeMetrics(), BridgeMetrics()
    first.observe("activity", [OutcomeState.SYNCED])
    assert first.registry is not second.registry
    assert 'outcome="synced"} 1.0' in first.render().decode()
    assert 'outcome="synced"} 1.0' not in second.render().decode()
