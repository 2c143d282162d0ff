"""The reader's reconnect log lines say which server and why, and never carry the DSN's password."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.errors import SourceDisconnected
from bridge.source.reader import ReplicationSource
from bridge.source.writeback import SchedulerWriter
from tests.integration.replication_support import SourceDb, execute, skip_snapshot, take

SECRET = "never-log-this-pw!"


def _closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _first_reconnect(logs: list[dict[str, Any]], limit: float = 30.0) -> dict[str, Any]:
    """The first `source.reconnecting` line captured, waiting up to `limit` seconds."""
    async with asyncio.timeout(limit):
        while not (found := [e for e in logs if e["event"] == "source.reconnecting"]):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found[0]


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_a_refused_connection_logs_host_and_reason_without_the_password(source_db: SourceDb) -> None:
    """A DSN with a password, at a closed port: the line names host, port, database and the refusal."""
    port = _closed_port()
    dsn = f"postgresql://bridge:{SECRET.replace('!', '%21')}@127.0.0.1:{port}/scheduler_db"
    source = ReplicationSource(source_db.settings_with(dsn=dsn), resume_lsn=1)
    with capture_logs() as logs:
        reading = asyncio.create_task(_drain(source.transactions()))
        try:
            line = await _first_reconnect(logs)
        finally:
            await source.close()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    assert line["host"] == "127.0.0.1" and line["port"] == str(port) and line["database"] == "scheduler_db"
    assert "Connection refused" in line["reason"] and line["error"] == "OperationalError"
    assert all(SECRET not in str(e) and "never-log-this-pw%21" not in str(e) for e in logs)


async def test_a_connection_the_server_ends_logs_the_servers_reason(source_db: SourceDb) -> None:
    """The server terminates the walsender: the line carries the server's first line, no password."""
    dsn = f"{source_db.dsn}?password={SECRET.replace('!', '%21')}"  # trust auth: accepted and unused
    database = source_db.dsn.rsplit("/", 1)[1]
    source = ReplicationSource(source_db.settings_with(dsn=dsn), resume_lsn=None)
    stream = source.transactions()
    with capture_logs() as logs:
        try:
            await skip_snapshot(source, stream)
            execute(
                source_db.dsn,
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = %s",
                (source_db.settings.slot,),
            )
            line = await _first_reconnect(logs)
            source_db.add_user()
            await take(stream, 1)  # it did reconnect
        finally:
            await source.close()
            await stream.aclose()  # type: ignore[attr-defined]
    assert line["host"] == "127.0.0.1" and line["database"] == database
    assert "terminat" in line["reason"] or "closed the connection" in line["reason"], line["reason"]
    assert all(SECRET not in str(e) and "never-log-this-pw%21" not in str(e) for e in logs)


async def test_an_unreachable_write_back_says_where_and_why_without_the_password() -> None:
    """The write-back connection at a closed port: SourceDisconnected names host, port, database and the
    refusal, and carries no password."""
    port = _closed_port()
    writer = SchedulerWriter(
        f"host=127.0.0.1 port={port} dbname=sched user=bridge password={SECRET}", "scheduler"
    )
    try:
        with pytest.raises(SourceDisconnected) as err:
            await writer.set_related_record("00000000-0000-0000-0000-000000000001", "003000000000001AAA")
    finally:
        writer.close()
    message = str(err.value)
    assert f"127.0.0.1:{port}/sched" in message and "Connection refused" in message
    assert SECRET not in message and "\n" not in message
