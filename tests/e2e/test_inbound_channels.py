"""End to end: the channel the daemon subscribes to, and the delivered-event allocation, as operators see them
(`setup` output, log lines, `status --json`)."""

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
    transport,
    wait_journal,
    wait_streaming,
)

__all__ = ["inbound_stack", "org_overrides", "transport"]


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    """`status --json` of the running daemon: its streaming lines."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "status", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    streaming: dict[str, Any] = report["daemon"].get("salesforce", {}).get("streaming", {})
    return streaming


def test_a_refused_custom_channel_falls_back_to_the_standard_channels(
    inbound_stack: Stack, transport: str
) -> None:
    """When the org refuses the Tooling API (no Customize Application), `setup` still succeeds and says the
    daemon will use the standard channels; the daemon warns, shows why and its transport in `status`, and a
    person's delete still arrives."""
    stack = inbound_stack
    stack.emulator.add_fault(
        path="/tooling/",
        status=403,
        error_code="INSUFFICIENT_ACCESS_OR_READONLY",
        message="insufficient access",
    )
    daemon = stack.daemon("fallback")
    report = daemon.setup().stdout
    assert "refused" in report and "standard channels" in report
    daemon.start()
    daemon.wait_started()
    wait_streaming(stack.emulator)
    _, event_id = synced_event(stack)
    Person(stack.emulator, stack.seed.users[1]).delete("Event", event_id)
    wait_journal(stack.ledger_url, "salesforce.event_deleted")
    status = _status(daemon)
    assert status["channel"].startswith("standard channels:"), status
    assert status["transport"].split()[0] == transport, status
    assert daemon.terminate() == 0
    (warning,) = logged(daemon, "streaming.standard_channels")
    assert warning["level"] == "warning" and "custom channel" in warning["reason"]
    assert stack.emulator.stats()["faults_fired"] >= 2  # setup's attempt and the daemon's check


def test_an_exhausted_allocation_is_reported_and_reconciled_after_the_reset(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the day's change events used up, the daemon says so (error log line, status line) and, once the
    allocation is back, reconciles by change time from before it went blind."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__DELIVERED_EVENTS_CHECK_SECONDS", "1")
    stack = inbound_stack
    daemon = stack.daemon("allocation")
    daemon.start()
    daemon.wait_started()
    wait_streaming(stack.emulator)
    wait_until(lambda: _status(daemon).get("delivered_events", "").startswith("ok:"), what="a reading")
    limit = stack.emulator.control("streaming/delivered", {"used": 10_000})["delivered_events"]
    assert limit == 10_000
    wait_until(lambda: logged(daemon, "streaming.allocation_exhausted"), timeout=60, what="exhaustion")
    assert _status(daemon)["delivered_events"].startswith("exhausted since")
    assert ledger_rows(stack.ledger_url, "reconciliation_runs") == []
    stack.emulator.control("streaming/delivered", {"used": 0})
    wait_until(lambda: logged(daemon, "streaming.allocation_restored"), timeout=60, what="the reset noticed")

    def reconciled_for_the_allocation() -> bool:
        reasons = [line["reason"] for line in logged(daemon, "inbound.reconciled")]
        return "delivered_event_allocation_exhausted" in reasons

    # The run's row is written when it opens; its log line when it has finished.
    wait_until(reconciled_for_the_allocation, timeout=90, what="the allocation's window reconciled")
    assert daemon.terminate() == 0
    runs = ledger_rows(stack.ledger_url, "reconciliation_runs")
    # The stream's own resubscription may reconcile its gap too; the watch's run is there, by change time.
    assert runs and {r["requested_by"] for r in runs} == {"streaming"}
    scopes = [json.loads(r["scope"]) if isinstance(r["scope"], str) else r["scope"] for r in runs]
    assert all(scope["changed_since"] is not None for scope in scopes)
    assert all(line["level"] == "error" for line in logged(daemon, "streaming.allocation_exhausted"))


def _channel_position(stack: Stack) -> str | None:
    try:
        rows = ledger_rows(stack.ledger_url, "checkpoints")
    except Exception:
        return None
    return next((r["position"] for r in rows if r["stream"] == "/data/MogliBridge__chn"), None)


@pytest.mark.parametrize("ending", ["terminated", "killed"])
def test_a_change_made_while_a_quiet_daemon_was_down_is_reconciled(inbound_stack: Stack, ending: str) -> None:
    """The filtered channel delivers nothing of the bridge's own, so a quiet daemon has no replay id; it keeps
    how far it has seen (`-1;<time>`, stored as soon as the channel is live, then every 60 s), and after a
    restart reconciles from then, so a person's move made while it was down (never replayed by a -1
    subscription) is still noticed and restored: after a clean stop, and after a kill -9 well within the
    first 60 s."""
    stack = inbound_stack
    first = stack.daemon("first")
    first.start()
    first.wait_started()
    wait_streaming(stack.emulator)
    booking, event_id = synced_event(stack)
    start = ledger_activities(stack.ledger_url)[booking]["start_at"]
    # The channel's first report is stored at once; the periodic one would take 60 s.
    wait_until(
        lambda: (_channel_position(stack) or "").startswith("-1;"), timeout=30, what="a first position"
    )
    if ending == "killed":
        assert first.proc is not None and first.proc.poll() is None, "the daemon was not running"
        first.kill9()
    else:
        assert first.terminate() == 0

    moved = datetime.fromisoformat(str(start)).replace(tzinfo=UTC) + timedelta(hours=2)
    Person(stack.emulator, stack.seed.users[1]).update(
        "Event",
        event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=30)).isoformat()},
    )
    second = stack.daemon("second")
    second.start()
    second.wait_started()
    wait_journal(stack.ledger_url, "streaming.resubscribed_without_replay_id")

    def restored() -> bool:
        rows = stack.emulator.records("Event")
        row = next((r for r in rows if r["Id"] == event_id), None)
        return row is not None and not row["StartDateTime"].startswith(moved.strftime("%Y-%m-%dT%H:%M"))

    wait_until(restored, timeout=90, what="the moved Event restored by the reconciliation")
    assert second.terminate() == 0
    runs = ledger_rows(stack.ledger_url, "reconciliation_runs")
    assert runs and {r["requested_by"] for r in runs} == {"streaming"}


def test_custom_channel_required_but_missing_stops_the_daemon_naming_the_key(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync.channel = "custom"` without the channel (setup ran with the standard channels) is a
    configuration error: the daemon exits 2 and names sync.channel instead of streaming from elsewhere."""
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__CHANNEL", "standard")
    stack = inbound_stack
    daemon = stack.daemon("strict")
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__CHANNEL", "custom")
    daemon.start()
    assert daemon.proc is not None
    assert daemon.proc.wait(60) == 2
    text = daemon.log_path.read_text()
    assert "sync.channel" in text and "does not exist" in text


def test_moving_to_the_custom_channel_reconciles_the_switch_over(
    inbound_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bridge that streamed from the standard channels and restarts on the custom channel (which has no
    position yet) reconciles from its last standard position: a move made in between is restored."""
    stack = inbound_stack
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__CHANNEL", "standard")
    first = stack.daemon("standard")
    first.start()
    first.wait_started()
    wait_streaming(stack.emulator)
    booking, event_id = synced_event(stack)
    person = Person(stack.emulator, stack.seed.users[1])
    person.update("Event", event_id, {"Subject": "Renamed by a person"})

    def standard_position() -> bool:
        try:
            rows = ledger_rows(stack.ledger_url, "checkpoints")
        except Exception:
            return False
        return any(r["stream"] == "/data/EventChangeEvent" and r["position"][0] != "-" for r in rows)

    wait_until(standard_position, what="the standard Event channel's position")
    assert first.terminate() == 0

    start = datetime.fromisoformat(str(ledger_activities(stack.ledger_url)[booking]["start_at"]))
    moved = start.replace(tzinfo=UTC) + timedelta(hours=2)
    person.update(
        "Event",
        event_id,
        {"StartDateTime": moved.isoformat(), "EndDateTime": (moved + timedelta(minutes=30)).isoformat()},
    )
    monkeypatch.setenv("MOGLI_BRIDGE_SYNC__CHANNEL", "auto")
    second = stack.daemon("custom")
    second.start()
    second.wait_started()
    wait_journal(stack.ledger_url, "streaming.resubscribed_without_replay_id")

    def restored() -> bool:
        row = next((r for r in stack.emulator.records("Event") if r["Id"] == event_id), None)
        return row is not None and not row["StartDateTime"].startswith(moved.strftime("%Y-%m-%dT%H:%M"))

    wait_until(restored, timeout=90, what="the moved Event restored by the reconciliation")
    assert second.terminate() == 0
    assert logged(second, "streaming.custom_channel")
