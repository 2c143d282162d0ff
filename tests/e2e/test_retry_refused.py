"""End to end: `retry` never writes the ledger behind a running daemon whose admin API refuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from bridge.devtools.stack import ROOT, ledger_activities, wait_until

from .conftest import Stack, assert_logs_clean


@pytest.mark.timeout(180)
def test_retry_with_a_wrong_token_exits_1_and_leaves_the_ledger_alone(stack: Stack) -> None:
    """With the daemon running, `retry --all-failed` under a wrong admin token (401) exits 1 naming the
    daemon and the 401, and the failed booking stays failed at its version: nothing was requeued."""
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]))
    bad = s.add_booking(link, start=datetime.now(UTC) + timedelta(days=1), minutes=-30)
    daemon = stack.daemon()
    daemon.start()
    wait_until(
        lambda: ledger_activities(stack.ledger_url).get(bad, {}).get("state") == "failed",
        what="the bad booking to fail",
    )
    before = ledger_activities(stack.ledger_url)[bad]
    retried = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(daemon.config), "retry", "--all-failed"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "MOGLI_BRIDGE_ADMIN__TOKEN": "not-the-daemons-token"},
    )
    assert retried.returncode == 1, retried.stdout + retried.stderr
    assert "daemon holds the ledger" in retried.stderr and "answered 401" in retried.stderr
    after = ledger_activities(stack.ledger_url)[bad]
    assert (after["state"], after["version"], after["updated_at"]) == (
        "failed",
        before["version"],
        before["updated_at"],
    )
    assert daemon.terminate() == 0
    assert_logs_clean(daemon)
