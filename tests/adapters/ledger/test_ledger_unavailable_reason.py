"""A ledger that cannot be reached says where and why (the driver's first line), never its password."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from bridge.errors import LedgerUnavailable
from bridge.ledger.engine import unavailable_reason
from bridge.ledger.repository import Ledger

SECRET = "ledger-pw-never-logged"


def _closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_postgresql_ledger_names_host_port_and_reason() -> None:
    """A PostgreSQL ledger URL with a password, at a closed port: the error has host, port and reason."""
    port = _closed_port()
    ledger = Ledger.from_url(f"postgresql://bridge:{SECRET}@127.0.0.1:{port}/ledger")
    try:
        with pytest.raises(LedgerUnavailable) as err:
            await ledger.read_checkpoint("source")
    finally:
        await ledger.close()
    message = str(err.value)
    assert message.startswith("ledger unavailable: OperationalError: ")
    assert "127.0.0.1" in message and str(port) in message and "Connection refused" in message
    assert SECRET not in message and "\n" not in message


async def test_an_unopenable_sqlite_ledger_says_why(tmp_path: Path) -> None:
    """A SQLite ledger whose directory is gone: the error carries SQLite's reason."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/gone/ledger.sqlite3")
    (tmp_path / "gone").rmdir()
    try:
        with pytest.raises(LedgerUnavailable) as err:
            await ledger.read_checkpoint("source")
    finally:
        await ledger.close()
    assert str(err.value) == "ledger unavailable: OperationalError: unable to open database file"


def test_a_driver_message_quoting_a_password_is_masked() -> None:
    """The reason is the first line of the driver's message with password-looking parts masked."""
    exc = sqlite3.OperationalError(f"cannot attach postgresql://u:{SECRET}@h/db password={SECRET}\nmore")
    reason = unavailable_reason(exc)
    assert reason.startswith("OperationalError: cannot attach postgresql://u:***@h/db")
    assert SECRET not in reason and "more" not in reason
    assert unavailable_reason(sqlite3.OperationalError()) == "OperationalError"
