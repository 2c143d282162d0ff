"""End to end: `mogli-bridge run` refuses a bad configuration at once, exit 2 naming the key, before it
would wait for the ledger lock as a standby."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.devtools.localpg import free_port
from bridge.devtools.stack import ROOT, write_config
from bridge.ledger.lock import InstanceLock

PASSWORD = "dsn-secret-value"


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    """`mogli-bridge --config CONFIG run` as a process; a daemon that keeps running fails the test."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("dsn", "key"),
    [
        ("not a dsn", "source.dsn"),
        (f"postgresql://bridge:{PASSWORD}@127.0.0.1:notaport/scheduler", "source.dsn"),
        (f"postgresql://bridge:{PASSWORD}@[::1/scheduler", "source.dsn"),
        ("postgresql://bridge@127.0.0.1:5999/scheduler", "salesforce.ca_bundle"),
    ],
)
def test_run_with_a_bad_setting_exits_2_naming_the_key_while_another_holds_the_ledger(
    tmp_path: Path, dsn: str, key: str
) -> None:
    """With the ledger lock held elsewhere (run would wait as a standby), a malformed source.dsn or a
    missing CA bundle still ends `run` at once with exit code 2 and a message naming the key, and never
    the DSN's password."""
    ledger_url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    config = write_config(
        tmp_path / "bridge.toml",
        dsn=dsn,
        ledger_url=ledger_url,
        emulator_url=f"http://127.0.0.1:{free_port()}",
    )
    if key == "salesforce.ca_bundle":
        text = config.read_text().replace("[sync]", f'ca_bundle = "{tmp_path}/missing-ca.pem"\n\n[sync]')
        config.write_text(text)
    holder = InstanceLock(ledger_url)
    assert holder.try_acquire()
    try:
        result = _run(config)
    finally:
        holder.release()
    assert result.returncode == 2, result.stderr
    assert f"configuration error: {key}" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
