"""`status`, `ledger` and `retry` against a real ledger, a real scheduling database and a live admin app."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.admin import AdminServer
from bridge.commands import ledger as ledger_cmd
from bridge.commands import retry as retry_cmd
from bridge.commands import status as status_cmd
from bridge.config import AdminSettings, LedgerSettings, Settings, SourceSettings
from bridge.devtools.localpg import free_port
from bridge.errors import ConfigurationError
from bridge.ledger import upgrade_to_head
from bridge.ledger.lock import InstanceLock
from bridge.metrics import BridgeMetrics
from bridge.records.outbound import ApiUsage
from tests.adapters.admin.conftest import TOKEN, Harness, Make
from tests.adapters.admin.filled import FAILED_CODE


def _settings(tmp_path: Path, dsn: str, listen: str | None = None) -> Settings:
    """Settings pointing at the harness's ledger file, a scheduling database and an admin address."""
    return Settings(
        source=SourceSettings(dsn=dsn, slot="mb_ops_test"),
        ledger=LedgerSettings(url=f"sqlite:///{tmp_path}/ledger.sqlite3"),
        admin=AdminSettings(listen=listen or f"127.0.0.1:{free_port()}", token=TOKEN),
    )


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
async def daemon_api(make: Make) -> AsyncIterator[tuple[Harness, str]]:
    """A harness whose admin app listens on a real port, as the running daemon's does."""
    h: Harness = await make()
    server: AdminServer[object] = AdminServer(
        AdminSettings(listen="127.0.0.1:0", token=TOKEN),
        probe=h.server.probe,
        ledger=h.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=h.pusher.notify,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.listening.wait(), 30)
    yield h, f"127.0.0.1:{server.port}"
    stop.set()
    await task


async def test_ledger_lists_activities_as_csv_with_filters(
    make: Make, tmp_path: Path, pg_database: str
) -> None:
    """`ledger activities` prints every booking; --state narrows it; the failed row carries its code."""
    h: Harness = await make()
    settings = _settings(tmp_path, pg_database)
    out = io.StringIO()
    args: dict[str, Any] = {"link": None, "booking": None, "since": None, "limit": 100, "fmt": None}
    assert ledger_cmd.ledger(settings, "activities", state=None, out=out, **args) == 0
    assert {r["booking_id"] for r in _csv(out.getvalue())} == {
        h.filled.synced,
        h.filled.failed,
        h.filled.pending,
    }
    out = io.StringIO()
    ledger_cmd.ledger(settings, "activities", state="failed", out=out, **args)
    [row] = _csv(out.getvalue())
    assert row["booking_id"] == h.filled.failed and row["error_code"] == FAILED_CODE


@pytest.mark.parametrize(("what", "rows"), [("links", 2), ("failures", 1), ("drift", 2), ("journal", None)])
async def test_ledger_json_output_of_every_listing(
    make: Make, tmp_path: Path, pg_database: str, what: str, rows: int | None
) -> None:
    """Each listing prints a JSON array of objects with its documented columns."""
    await make()
    out = io.StringIO()
    code = ledger_cmd.ledger(
        _settings(tmp_path, pg_database),
        what,
        link=None,
        booking=None,
        state=None,
        since=None,
        limit=100,
        fmt="json",
        out=out,
    )
    assert code == 0
    body = json.loads(out.getvalue())
    assert all(list(item) == list(ledger_cmd.COLUMNS[what]) for item in body)
    assert len(body) == rows if rows is not None else len(body) > 3


async def test_ledger_journal_of_one_booking_and_since_in_the_future(
    make: Make, tmp_path: Path, pg_database: str
) -> None:
    """--booking narrows the journal to that booking; --since after every entry prints only the header."""
    h: Harness = await make()
    settings = _settings(tmp_path, pg_database)
    out = io.StringIO()
    ledger_cmd.ledger(
        settings,
        "journal",
        link=None,
        booking=h.filled.failed,
        state=None,
        since=None,
        limit=100,
        fmt="csv",
        out=out,
    )
    entries = _csv(out.getvalue())
    assert entries and {e["entity_key"] for e in entries} == {h.filled.failed}
    out = io.StringIO()
    ledger_cmd.ledger(
        settings,
        "journal",
        link=None,
        booking=None,
        state=None,
        since="2030-01-01",
        limit=5,
        fmt="csv",
        out=out,
    )
    assert out.getvalue().splitlines() == [",".join(ledger_cmd.COLUMNS["journal"])]


async def test_retry_without_a_daemon_writes_the_ledger(make: Make, tmp_path: Path, pg_database: str) -> None:
    """With nothing on admin.listen, retry requeues in the ledger directly and says so."""
    h: Harness = await make()
    out = io.StringIO()
    assert (
        retry_cmd.retry(
            _settings(tmp_path, pg_database), booking_ids=[h.filled.failed], all_failed=False, out=out
        )
        == 0
    )
    assert "requeued 1 record(s) in the ledger" in out.getvalue()
    row = await h.ledger.get_activity(h.filled.failed)
    assert row is not None and row.state == "pending"


async def test_retry_goes_through_a_running_daemon(
    daemon_api: tuple[Harness, str], tmp_path: Path, pg_database: str
) -> None:
    """When the daemon answers, retry uses its API, which also wakes the pusher."""
    h, listen = daemon_api
    settings = _settings(tmp_path, pg_database, listen)
    out = io.StringIO()
    code = await asyncio.to_thread(retry_cmd.retry, settings, booking_ids=[], all_failed=True, out=out)
    assert code == 0 and "requeued 1 record(s) through the running daemon" in out.getvalue()
    assert h.pusher.notified == 1


def test_retry_needs_bookings_or_all_failed(tmp_path: Path) -> None:
    """Neither or both of --booking and --all-failed is a usage error."""
    settings = _settings(tmp_path, "postgresql://nobody@127.0.0.1:1/x")
    with pytest.raises(ConfigurationError):
        retry_cmd.retry(settings, booking_ids=[], all_failed=False)
    with pytest.raises(ConfigurationError):
        retry_cmd.retry(settings, booking_ids=["b"], all_failed=True)


async def test_status_without_a_daemon_reads_ledger_and_source(
    make: Make, tmp_path: Path, pg_database: str
) -> None:
    """status --json works with no daemon: ledger counts, slot state, the daemon reported as not running."""
    await make()
    out = io.StringIO()
    code = await asyncio.to_thread(status_cmd.status, _settings(tmp_path, pg_database), as_json=True, out=out)
    report = json.loads(out.getvalue())
    assert code == 0
    assert report["summary"]["daemon"] == "not running"
    assert report["summary"]["pending"] == 1 and report["summary"]["failed"] == 1
    assert report["ledger"]["current_schema"] is True and report["ledger"]["drift_found"] == 2
    assert report["source"] == {"reachable": True, "slot": "mb_ops_test", "slot_exists": False}


async def test_status_merges_the_daemons_view(
    daemon_api: tuple[Harness, str], tmp_path: Path, pg_database: str
) -> None:
    """With a daemon answering, status adds its components, lag seconds and API budget (plain in a pipe)."""
    _, listen = daemon_api
    out = io.StringIO()
    code = await asyncio.to_thread(
        status_cmd.status, _settings(tmp_path, pg_database, listen), as_json=False, out=out
    )
    pairs = {r["key"]: r["value"] for r in _csv(out.getvalue())}
    assert code == 0
    assert pairs["summary.daemon"] == "ready"
    assert pairs["summary.replication_lag_seconds"] == "10.0"
    assert pairs["summary.api_used"] == "1200" and pairs["summary.api_limit"] == "15000"
    assert pairs["daemon.components.push"] == "running"


async def test_status_exits_1_when_the_source_is_unreachable(make: Make, tmp_path: Path) -> None:
    """An unreachable scheduling database is reported with its reason, and status exits 1."""
    await make()
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/scheduler"
    out = io.StringIO()
    code = await asyncio.to_thread(status_cmd.status, _settings(tmp_path, dead), as_json=True, out=out)
    report = json.loads(out.getvalue())
    assert code == 1 and report["source"]["reachable"] is False and report["source"]["error"]


class _Terminal(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


async def test_status_and_ledger_print_tables_on_a_terminal(
    make: Make, tmp_path: Path, pg_database: str
) -> None:
    """On a terminal, status prints one table per section and ledger a titled table (no CSV header line)."""
    h: Harness = await make()
    settings = _settings(tmp_path, pg_database)
    out = _Terminal()
    await asyncio.to_thread(status_cmd.status, settings, as_json=False, out=out, verbose=True)
    text = out.getvalue()
    for section in ("summary", "ledger", "source", "daemon"):
        assert section in text
    assert "key,value" not in text and "not running" in text
    out = _Terminal()
    ledger_cmd.ledger(
        settings, "failures", link=None, booking=None, state=None, since=None, limit=10, fmt=None, out=out
    )
    assert "ledger failures" in out.getvalue() and "showing 1 of 1" in out.getvalue()
    assert h.filled.failed in out.getvalue()


async def test_status_says_whether_the_ledger_survives_a_crash(
    make: Make, tmp_path: Path, pg_database: str
) -> None:
    """status reports the SQLite ledger (synchronous=FULL) durable, and names fsync on a PostgreSQL ledger
    whose server runs without it (the test cluster does)."""
    await make()
    out = io.StringIO()
    await asyncio.to_thread(status_cmd.status, _settings(tmp_path, pg_database), as_json=True, out=out)
    ledger = json.loads(out.getvalue())["ledger"]
    assert ledger["durable"] is True and ledger["durability_problems"] == []
    upgrade_to_head(pg_database)
    settings = replace(_settings(tmp_path, pg_database), ledger=LedgerSettings(url=pg_database))
    out = io.StringIO()
    await asyncio.to_thread(status_cmd.status, settings, as_json=True, out=out)
    ledger = json.loads(out.getvalue())["ledger"]
    assert ledger["reachable"] is True and ledger["durable"] is False
    assert any("fsync is off" in problem for problem in ledger["durability_problems"])


@pytest.fixture
def daemon_lock(tmp_path: Path) -> Iterator[InstanceLock]:
    """The ledger's instance lock, held as a running daemon holds it."""
    lock = InstanceLock(f"sqlite:///{tmp_path}/ledger.sqlite3")
    assert lock.try_acquire()
    yield lock
    lock.release()


async def test_retry_refused_by_the_api_never_writes_behind_the_daemon(
    daemon_api: tuple[Harness, str],
    daemon_lock: InstanceLock,
    tmp_path: Path,
    pg_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the daemon holds the ledger and its API answers 401 (a wrong token), retry exits 1 naming the
    reason, and the failed booking is still failed: the ledger was not written."""
    h, listen = daemon_api
    settings = _settings(tmp_path, pg_database, listen)
    settings = replace(settings, admin=replace(settings.admin, token="not-the-daemons-token"))
    out = io.StringIO()
    code = await asyncio.to_thread(
        retry_cmd.retry, settings, booking_ids=[h.filled.failed], all_failed=False, out=out
    )
    assert code == 1 and "requeued" not in out.getvalue()
    error = capsys.readouterr().err
    assert "daemon holds the ledger" in error and "answered 401" in error and "not changed" in error
    row = await h.ledger.get_activity(h.filled.failed)
    assert row is not None and row.state == "failed"
    assert h.pusher.notified == 0


async def test_retry_with_a_silent_daemon_holding_the_ledger_exits_1(
    make: Make,
    daemon_lock: InstanceLock,
    tmp_path: Path,
    pg_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When nothing answers on admin.listen but a process holds the ledger lock, retry exits 1 and writes
    nothing; once the lock is free it writes the ledger directly."""
    h: Harness = await make()
    settings = _settings(tmp_path, pg_database)
    code = await asyncio.to_thread(
        retry_cmd.retry, settings, booking_ids=[], all_failed=True, out=io.StringIO()
    )
    assert code == 1 and "did not answer" in capsys.readouterr().err
    row = await h.ledger.get_activity(h.filled.failed)
    assert row is not None and row.state == "failed"
    daemon_lock.release()
    out = io.StringIO()
    assert await asyncio.to_thread(retry_cmd.retry, settings, booking_ids=[], all_failed=True, out=out) == 0
    assert "requeued 1 record(s) in the ledger" in out.getvalue()


async def test_status_shows_the_daemons_health_first(
    daemon_api: tuple[Harness, str], tmp_path: Path, pg_database: str
) -> None:
    """With a daemon answering, status's summary carries its health state and every reason (the JSON and
    the terminal summary), and the terminal shows the summary alone unless asked for more."""
    h, listen = daemon_api
    h.salesforce.usage = ApiUsage(used=14_900, limit=15_000)  # the budget nearly gone: degraded
    settings = _settings(tmp_path, pg_database, listen)
    out = io.StringIO()
    await asyncio.to_thread(status_cmd.status, settings, as_json=True, out=out)
    report = json.loads(out.getvalue())
    health = report["daemon"]["health"]
    assert health["state"] == "degraded" and any("budget" in r for r in health["reasons"])
    assert report["summary"]["state"] == health["state"]
    assert report["summary"]["reasons"][: len(health["reasons"])] == health["reasons"]
    out = _Terminal()
    await asyncio.to_thread(status_cmd.status, settings, as_json=False, out=out)
    flat = "".join(re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).split())
    assert f"state{health['state']}" in flat
    assert all("".join(r.split()) in flat for r in health["reasons"])
    assert "components" not in out.getvalue()
