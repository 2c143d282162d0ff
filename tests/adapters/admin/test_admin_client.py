"""The commands' admin API client against the real admin app: a busy daemon is waited for, an absent one is
told apart at once. (A slow answer was once taken for an absent daemon: `reconcile` then refused because the
daemon held the ledger lock.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.admin import client as admin_client
from bridge.admin.client import AdminClient, DaemonAbsent, DaemonSilent
from bridge.config import AdminSettings
from bridge.devtools.localpg import free_port
from tests.adapters.admin.conftest import TOKEN, Harness, Make


async def test_a_daemon_whose_ledger_is_busy_answers_after_the_connect_timeout(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's one ledger thread is busy for longer than the connect timeout: the run still starts."""
    monkeypatch.setattr(admin_client, "CONNECT_SECONDS", 0.3)
    h: Harness = await make()
    listen = f"{h.client.server.host}:{h.client.server.port}"
    client = AdminClient(AdminSettings(listen=listen, token=TOKEN))
    busy = asyncio.get_running_loop().run_in_executor(h.ledger._executor, time.sleep, 1.2)
    started = time.monotonic()
    reply = await asyncio.to_thread(client.call, "POST", "/api/reconciliations", {"dry_run": True})
    waited = time.monotonic() - started
    await busy
    assert reply.status == 202 and isinstance(reply.body["id"], int)
    assert waited > 0.3  # it did wait past the connect timeout (the ledger queue held the answer)
    assert h.runner is not None and len(h.runner.started) == 1


async def test_a_daemon_that_answers_too_late_is_silent_not_absent(make: Make) -> None:
    """Accepted but unanswered within the answer timeout: DaemonSilent (the daemon is there)."""
    h: Harness = await make()
    listen = f"{h.client.server.host}:{h.client.server.port}"
    client = AdminClient(AdminSettings(listen=listen, token=TOKEN), answer_seconds=0.2)
    busy = asyncio.get_running_loop().run_in_executor(h.ledger._executor, time.sleep, 1.0)
    with pytest.raises(DaemonSilent):
        await asyncio.to_thread(client.call, "POST", "/api/reconciliations", {"dry_run": True})
    await busy


async def test_nothing_listening_is_absent_at_once() -> None:
    """A closed port is DaemonAbsent (the command may then work on the ledger under its lock)."""
    client = AdminClient(AdminSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN))
    started = time.monotonic()
    with pytest.raises(DaemonAbsent):
        await asyncio.to_thread(client.call, "GET", "/api/status")
    assert time.monotonic() - started < admin_client.CONNECT_SECONDS
