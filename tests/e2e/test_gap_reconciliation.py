"""End to end: a gap reconciliation the daemon starts itself, paused by a spent API budget, is resumed by the
daemon once the budget is back, and a person's edit in the gap is restored without anyone running
`reconcile`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.devtools.stack import ROOT, DaemonProcess, ledger_activities, wait_until

from .conftest import Stack
from .inbound_support import (
    Person,
    inbound_stack,
    ledger_rows,
    logged,
    org_overrides,
    synced_event,
    wait_journal,
    wait_streaming,
)

__all__ = ["inbound_stack", "org_overrides"]


@pytest.fixture
def transport() -> str:
    """Resuming gap runs does not depend on the change-event transport: this test takes CometD's."""
    return "cometd"


def _gap_status(daemon: DaemonProcess) -> str:
    """The daemon's `gap_reconciliation` status line (`status --json`)."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "status", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    streaming: dict[str, str] = report["daemon"].get("salesforce", {}).get("streaming", {})
    return streaming.get("gap_reconciliation", "")


def _channel_position(stack: Stack) -> str | None:
    try:
        rows = ledger_rows(stack.ledger_url, "checkpoints")
    except Exception:
        return None
    return next((r["position"] for r in rows if r["stream"] == "/data/MogliBridge__chn"), None)


def test_a_gap_run_paused_by_the_api_budget_is_resumed_and_restores_the_edit(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet daemon restarts after a person moved an Event while it was down; the gap reconciliation it
    starts pauses because the API budget is spent (log line, status line), and the Event stays moved. Once
    the budget is back the daemon resumes the same run by itself: the Event is restored, and every run in the
    ledger is the daemon's own and finished."""
    monkeypatch.setenv("MOGLI_BRIDGE_SALESFORCE__API_BUDGET_RECHECK_SECONDS", "2")
    stack = inbound_stack
    first = stack.daemon("first")
    first.start()
    first.wait_started()
    wait_streaming(stack.emulator)
    booking, event_id = synced_event(stack)
    start = ledger_activities(stack.ledger_url)[booking]["start_at"]
    wait_until(lambda: (_channel_position(stack) or "").startswith("-1;"), what="a heartbeat position")
    assert first.terminate() == 0

    moved = datetime.fromisoformat(str(start)).replace(tzinfo=UTC) + timedelta(hours=2)
    Person(stack.emulator, stack.seed.users[1]).update(
        "Event",
        event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=30)).isoformat()},
    )

    def still_moved() -> bool:
        row = next((r for r in stack.emulator.records("Event") if r["Id"] == event_id), None)
        return row is not None and row["StartDateTime"].startswith(moved.strftime("%Y-%m-%dT%H:%M"))

    second = stack.daemon("second")
    stack.emulator.control("limits", {"allocation": 1000, "used": 1000})
    second.start()
    second.wait_started()
    wait_journal(stack.ledger_url, "streaming.resubscribed_without_replay_id")
    wait_until(lambda: logged(second, "gaps.run_paused"), timeout=90, what="the gap run paused")

    def paused_line() -> str | None:
        line = _gap_status(second)
        return line if " paused: " in line else None

    status = str(wait_until(paused_line, what="the paused status line"))
    assert "retry in" in status, status
    assert still_moved()
    (paused_run,) = {line["run_id"] for line in logged(second, "gaps.run_paused")}

    stack.emulator.control("limits", {"used": 0})
    wait_until(lambda: not still_moved(), timeout=60, what="the moved Event restored by the resumed run")
    wait_until(lambda: _gap_status(second) == "idle", what="the gap reconciler idle")
    assert second.terminate() == 0
    runs = ledger_rows(stack.ledger_url, "reconciliation_runs")
    assert runs and {r["requested_by"] for r in runs} == {"streaming"}
    assert {r["state"] for r in runs} == {"finished"}, runs
    reconciled = [line["run_id"] for line in logged(second, "inbound.reconciled")]
    assert paused_run in reconciled
