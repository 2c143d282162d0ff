"""The reconcile command's admin API client against the real admin app: a busy daemon is waited for, an
absent one is told apart at once (a slow answer was once taken for an absent daemon, and the command then
refused because the daemon held the ledger lock)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.commands import reconcile as reconcile_cli
from bridge.config import AdminSettings
from bridge.devtools.localpg import free_port
from tests.adapters.admin.conftest import TOKEN, Harness, Make


async def test_a_daemon_whose_ledger_is_busy_answers_after_the_connect_timeout(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's one ledger thread is busy for longer than the connect timeout: the run still starts."""
    monkeypatch.setattr(reconcile_cli, "ADMIN_CONNECT_SECONDS", 0.3)
    h: Harness = await make()
    host, port = h.client.server.host, h.client.server.port
    settings: Any = SimpleNamespace(admin=AdminSettings(listen=f"{host}:{port}", token=TOKEN))
    busy = asyncio.get_running_loop().run_in_executor(h.ledger._executor, time.sleep, 1.2)
    started = time.monotonic()
    answer = await asyncio.to_thread(
        reconcile_cli._admin_request, settings, "POST", "/api/reconciliations", {"dry_run": True}
    )
    waited = time.monotonic() - started
    await busy
    assert isinstance(answer["id"], int)
    assert waited > 0.3  # it did wait past the connect timeout (the ledger queue held the answer)
    assert h.runner is not None and len(h.runner.started) == 1


async def test_nothing_listening_is_absent_at_once() -> None:
    """A closed port is DaemonAbsent (the command then runs in-process), not a refusal."""
    settings: Any = SimpleNamespace(admin=AdminSettings(listen=f"127.0.0.1:{free_port()}", token=TOKEN))
    with pytest.raises(reconcile_cli.DaemonAbsent):
        await asyncio.to_thread(reconcile_cli._admin_request, settings, "GET", "/api/status")
