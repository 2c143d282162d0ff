"""End to end: the operator surface of a running daemon (admin API, metrics, status, ledger, retry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.localpg import free_port
from bridge.devtools.stack import ROOT, DaemonProcess, HttpError, http_json, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean

TOKEN = "e2e-admin-token-value"  # bridge.devtools.stack.write_config sets this admin.token


@pytest.fixture
def admin_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A free admin port for the daemon under test (through its environment, as operators may set it)."""
    port = free_port()
    monkeypatch.setenv("MOGLI_BRIDGE_ADMIN__LISTEN", f"127.0.0.1:{port}")
    yield port


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`mogli-bridge --config <the daemon's config> ARGS`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def ready(port: int) -> bool:
    """GET /readyz with the token answers 200."""
    try:
        status, _ = http_json(
            "GET", f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    except (HttpError, OSError):
        return False
    return status == 200


def settle(stack: Stack) -> tuple[str, str, DaemonProcess]:
    """A running daemon with one synced and one failed booking: (good id, bad id, daemon)."""
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]), title="Ops")
    good = s.add_booking(link, related=seed.contacts[0])
    bad = s.add_booking(link, start=datetime.now(UTC) + timedelta(days=1), minutes=-30)
    daemon = stack.daemon()
    daemon.start()
    wait_until(
        lambda: (
            {k: a["state"] for k, a in ledger_activities(stack.ledger_url).items()}
            == {good: "synced", bad: "failed"}
        ),
        what="one booking synced and one failed",
    )
    return good, bad, daemon


def test_admin_api_metrics_status_ledger_and_retry_of_a_running_daemon(stack: Stack, admin_port: int) -> None:
    """Against the daemon process: /readyz from real pings, metrics counting outcomes, `status --json`
    merging the daemon's view, `ledger failures`, `retry --all-failed` and a dry-run `reconcile`, both
    through the admin API."""
    good, bad, daemon = settle(stack)
    base = f"http://127.0.0.1:{admin_port}"
    wait_until(lambda: ready(admin_port), what="/readyz to answer 200")
    with pytest.raises(HttpError) as refused:
        http_json("GET", f"{base}/api/status")
    assert refused.value.status == 401

    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'mogli_bridge_changes_total{entity="activity",outcome="synced"} 1.0' in text
    assert 'mogli_bridge_ledger_records{entity="activities",state="failed"} 1.0' in text
    assert "mogli_bridge_salesforce_api_calls_total" in text

    status = cli(daemon, "status", "--json")
    assert status.returncode == 0, status.stderr
    report: dict[str, Any] = json.loads(status.stdout)
    assert report["summary"]["daemon"] == "ready" and report["summary"]["failed"] == 1
    components = report["daemon"]["components"]
    assert {"ingest", "push", "admin"} <= set(components) and set(components.values()) == {"running"}
    assert report["source"]["slot_exists"] is True and report["source"]["slot_active"] is True

    failures = cli(daemon, "ledger", "failures", "--format", "json")
    assert failures.returncode == 0, failures.stderr
    assert [f["key"] for f in json.loads(failures.stdout)] == [bad]

    retried = cli(daemon, "retry", "--all-failed")
    assert retried.returncode == 0 and "requeued 1 record(s) through the running daemon" in retried.stdout
    journal = cli(daemon, "ledger", "journal", "--booking", bad, "--format", "json")
    assert journal.returncode == 0, journal.stderr
    assert any(e["direction"] == "admin" for e in json.loads(journal.stdout))
    wait_until(
        lambda: ledger_activities(stack.ledger_url)[bad]["state"] == "failed", what="the retry to fail again"
    )
    assert ledger_activities(stack.ledger_url)[good]["state"] == "synced"

    reconciled = cli(daemon, "reconcile", "--dry-run", "--json")
    assert reconciled.returncode == 0, reconciled.stderr  # a finished run exits 0, drift or not
    outcome = json.loads(reconciled.stdout)
    assert outcome["via"] == "daemon" and outcome["state"] == "finished" and outcome["dry_run"] is True
    _, run = http_json(
        "GET", f"{base}/api/reconciliations/{outcome['run_id']}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert run["requested_by"] == "admin-api" and run["drift"]["repaired"] == 0
    assert daemon.terminate() == 0
    assert_logs_clean(daemon)


def test_output_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    """`mogli-bridge status | head` whose reader has left: exit 1 (output cut short), no BrokenPipeError
    traceback (there was one)."""
    env = {
        **os.environ,
        "MOGLI_BRIDGE_LEDGER__URL": f"sqlite:///{tmp_path}/absent.sqlite3",
        "MOGLI_BRIDGE_SOURCE__DSN": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        "MOGLI_BRIDGE_ADMIN__LISTEN": f"127.0.0.1:{free_port()}",
    }
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()  # the reading end is closed before the command writes a byte
    assert reader.stdin is not None
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "status"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    reader.stdin.close()
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.returncode == 1
