"""The demo a new user runs first works from start to finish."""

from __future__ import annotations

import subprocess
import sys

from bridge.devtools.stack import ROOT


def test_demo_runs_and_reports_agreement() -> None:
    """`mogli-bridge demo` books on every link type; scheduler, ledger and Salesforce then agree."""
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "demo"], capture_output=True, text=True, cwd=ROOT, timeout=110
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "scheduler, ledger and Salesforce agree" in out.stdout
    for label in (
        "1:1 with a Contact",
        "round robin with a Lead",
        "round robin for an Account",
        "RSVP attendee 3",
    ):
        assert label in out.stdout
