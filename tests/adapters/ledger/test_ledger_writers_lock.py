"""Commands that write the ledger never do so behind a daemon that holds its instance lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.commands import setup
from bridge.config import LedgerSettings, Settings, SourceSettings
from bridge.devtools.localpg import free_port
from bridge.ledger import upgrade_to_head
from bridge.ledger.lock import InstanceLock
from bridge.ledger.repository import Ledger


def test_setup_reset_source_is_refused_while_a_daemon_holds_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`setup --reset-source` with the ledger locked by a daemon reports NOT and keeps the source position;
    with the lock free it forgets the position."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    repository = Ledger.from_url(url)
    asyncio.run(repository.write_checkpoint("source", "4242"))
    settings = Settings(
        source=SourceSettings(dsn=f"postgresql://nobody@127.0.0.1:{free_port()}/scheduler"),
        ledger=LedgerSettings(url=url),
    )
    daemon = InstanceLock(url)
    assert daemon.try_acquire()
    try:
        assert setup.setup(settings, reset_source=True, check_salesforce=False) == 1
        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith("NOT") and "stop it before --reset-source" in line for line in lines)
        assert asyncio.run(repository.read_checkpoint("source")) == "4242"
    finally:
        daemon.release()
    setup.setup(settings, reset_source=True, check_salesforce=False)
    assert "source position forgotten" in capsys.readouterr().out
    assert asyncio.run(repository.read_checkpoint("source")) == ""
    repository.dispose()
