"""The workers on every surface (CONTRACT §10): /api/status, /api/orgs, /metrics and the status page of a
worker, and `status --json` and `orgs` read from the ledger, on a PostgreSQL ledger where two workers
(this test process and another host) hold leases through the real `Ledger.heartbeat`/`lease_round`; and
without worker mode (a SQLite ledger), the one daemon alone, or no worker when none runs."""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.admin import AdminServer, DaemonProbe, ping_postgres
from bridge.admin.workers import LiveWorker, short_worker
from bridge.cli import main
from bridge.config import AdminSettings
from bridge.devtools.localpg import free_port
from bridge.devtools.stack import write_config
from bridge.ledger import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.metrics import BridgeMetrics
from bridge.records.ledger import DEFAULT_ORG
from tests.adapters.admin.conftest import AUTH, TOKEN, Harness, Make
from tests.adapters.admin.fakes import (
    FakeIngestor,
    FakePusher,
    FakeSalesforce,
    FakeSlot,
    FakeSource,
    FakeStats,
)
from tests.adapters.admin.orgs_world import add_default_rows, add_org

CONTRACT_KEYS = {"id", "host", "pid", "reader", "orgs"}
LEASE = 60.0  # long: nothing expires while a test reads


@dataclass
class Workers:
    """A PostgreSQL ledger with five served orgs and a disconnected one, leased by two workers."""

    url: str
    ledger: Ledger
    me: str  # this process's worker id (host and pid of this process)
    other: str  # a worker on another host
    held: dict[str, set[str]]  # worker -> the orgs it holds
    disconnected: str


async def _round(ledger: Ledger, worker: str, host: str, pid: int, *, reader: bool) -> set[str]:
    await ledger.heartbeat(worker, host, pid, reader=reader, draining=False, lease_seconds=LEASE)
    return set((await ledger.lease_round(worker, lease_seconds=LEASE, draining=False)).held)


@pytest.fixture
async def workers(pg_database: str) -> AsyncIterator[Workers]:
    """Both workers heartbeat, then each takes its share: ceil(5 / 2) = 3 for this one, 2 for the other."""
    url = pg_database
    upgrade_to_head(url)
    add_default_rows(url)
    for index in range(4):
        add_org(url, name=f"Clinic {index}")
    disconnected = add_org(url, name="Gone Clinic", state="disconnected").org_id
    ledger = Ledger.from_url(url)
    host, pid = socket.gethostname(), os.getpid()
    me, other = f"{host}-{pid}-aaaa", "other-host-4242-bbbb"
    await ledger.heartbeat(other, "other-host", 4242, reader=False, draining=False, lease_seconds=LEASE)
    mine = await _round(ledger, me, host, pid, reader=True)
    theirs = await _round(ledger, other, "other-host", 4242, reader=False)
    yield Workers(url, ledger, me, other, {me: mine, other: theirs}, disconnected)
    await ledger.close()


def _server(w: Workers, *, explicit: bool, reading: bool = True, connected: bool = True) -> AdminServer[Any]:
    """A worker's admin app on the shared ledger; `explicit`: app.py handed this worker over (live view),
    else the app finds its row by host and pid; `reading`, `connected`: whether it reads the change stream
    and whether its replication stream is connected."""
    host, pid = socket.gethostname(), os.getpid()
    probe = DaemonProbe(
        slot="mogli_bridge",
        states={"reader": "running", "workers": "running", "orgs": "running", "admin": "running"},
        ledger=w.ledger,
        source=FakeSource(FakeStats(connected=connected)),
        salesforce=FakeSalesforce(),
        pusher=FakePusher(),
        ingestor=FakeIngestor(),
        ping_scheduler=functools.partial(ping_postgres, w.url),
        read_slot=FakeSlot,
    )
    live = LiveWorker(w.me, host, pid, is_reading=lambda: reading, orgs=lambda: w.held[w.me])
    return AdminServer(
        AdminSettings(token=TOKEN),
        probe=probe,
        ledger=w.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=lambda: None,
        org_runner=lambda org: None,
        worker=live if explicit else None,
    )


@pytest.fixture(params=["handed over", "found by host and pid"])
async def client(request: pytest.FixtureRequest, workers: Workers) -> AsyncIterator[TestClient[Any, Any]]:
    """The admin app of this worker, both ways it can know itself."""
    app = _server(workers, explicit=request.param == "handed over").app()
    test_client: TestClient[Any, Any] = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_api_status_lists_every_worker_with_its_orgs_and_names_itself(
    client: TestClient[Any, Any], workers: Workers
) -> None:
    """/api/status: `workers` holds both workers with the contract's keys, their leased orgs (disjoint,
    together every served org), the reader flags; `worker` is the answering one."""
    body = await (await client.get("/api/status", headers=AUTH)).json()
    rows = {w["id"]: w for w in body["workers"]}
    assert set(rows) == {workers.me, workers.other}
    assert all(set(w) >= CONTRACT_KEYS for w in rows.values())
    assert {k: set(w["orgs"]) for k, w in rows.items()} == workers.held
    assert len(workers.held[workers.me]) == 3 and len(workers.held[workers.other]) == 2
    assert (rows[workers.me]["reader"], rows[workers.other]["reader"]) == (True, False)
    assert (rows[workers.other]["host"], rows[workers.other]["pid"]) == ("other-host", 4242)
    assert all(w["alive"] and not w["draining"] for w in rows.values())
    assert body["worker"]["id"] == workers.me and body["worker"]["pid"] == os.getpid()


async def test_api_orgs_names_each_orgs_worker(client: TestClient[Any, Any], workers: Workers) -> None:
    """/api/orgs: each served org's `worker` is the holder of its lease; a disconnected org has none."""
    rows = await (await client.get("/api/orgs", headers=AUTH)).json()
    holder = {org: worker for worker, orgs in workers.held.items() for org in orgs}
    assert {r["org_id"]: r["worker"] for r in rows} == {**holder, workers.disconnected: None}


async def test_metrics_say_how_many_orgs_this_worker_serves_and_that_it_reads(
    client: TestClient[Any, Any],
) -> None:
    """/metrics: worker_orgs is this worker's 3 orgs, worker_reader 1."""
    text = await (await client.get("/metrics")).text()
    assert "mogli_bridge_worker_orgs 3.0" in text
    assert "mogli_bridge_worker_reader 1.0" in text


async def test_status_page_shows_the_workers_and_each_orgs_worker(
    client: TestClient[Any, Any], workers: Workers
) -> None:
    """The page: a Workers card with both ids, this one marked, one reader; the orgs table's worker column
    names each org's worker (short, the whole id in its tooltip)."""
    page = await (await client.get("/")).text()
    assert "<h2>Workers</h2>" in page and "2 live worker(s); one reads the change stream" in page
    assert f"{workers.me} (this page)" in page and workers.other in page
    assert "<th>worker</th>" in page
    assert f'<td title="{workers.other}">{short_worker(workers.other)}</td>' in page
    assert short_worker(workers.other) == "4242-bbbb"


async def test_a_worker_that_left_shows_no_more_and_its_orgs_have_nobody(workers: Workers) -> None:
    """After the other worker leaves: only this one is listed, the orgs it held have no worker (until a
    round takes them), and the page says 'nobody' for them."""
    await workers.ledger.leave(workers.other)
    server = _server(workers, explicit=True)
    client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        body = await (await client.get("/api/status", headers=AUTH)).json()
        assert [w["id"] for w in body["workers"]] == [workers.me]
        rows = await (await client.get("/api/orgs", headers=AUTH)).json()
        left = {r["org_id"] for r in rows if r["worker"] is None} - {workers.disconnected}
        assert left == workers.held[workers.other]
        page = await (await client.get("/")).text()
        assert '<td class="warn">nobody</td>' in page
    finally:
        await client.close()


async def _readyz(server: AdminServer[Any]) -> tuple[int, list[str]]:
    client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
    await client.start_server()
    try:
        response = await client.get("/readyz")
        return response.status, list((await response.json())["health"]["reasons"])
    finally:
        await client.close()


async def test_only_the_reader_is_held_to_a_connected_stream(workers: Workers) -> None:
    """/readyz of a worker whose replication stream is not connected: 503 when it is the reader; 200 when
    another worker reads (its stream is rightly not connected); 200 but degraded, naming it, when no live
    worker reads."""
    status, reasons = await _readyz(_server(workers, explicit=True, reading=True, connected=False))
    assert status == 503 and any("replication stream" in r for r in reasons)
    await workers.ledger.heartbeat(
        workers.other, "other-host", 4242, reader=True, draining=False, lease_seconds=LEASE
    )
    status, reasons = await _readyz(_server(workers, explicit=True, reading=False, connected=False))
    assert status == 200 and not any("stream" in r for r in reasons)
    await workers.ledger.heartbeat(
        workers.other, "other-host", 4242, reader=False, draining=False, lease_seconds=LEASE
    )
    status, reasons = await _readyz(_server(workers, explicit=True, reading=False, connected=False))
    assert status == 200 and reasons[0].startswith("no live worker reads the change stream")


def _tenancy_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "bridge.toml",
        dsn="postgresql://nobody@127.0.0.1:1/none",
        ledger_url=url,
        emulator_url="http://127.0.0.1:1",
        admin_port=free_port(),
        admin_token=TOKEN,
        extra="[tenancy]\nenabled = true\n",
    )


def _run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    code = main(["--config", str(config), *args])
    return code, capsys.readouterr().out


def test_status_json_reads_the_workers_from_the_ledger_without_a_running_worker(
    workers: Workers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` in worker mode with no daemon answering: `workers` from the ledger, both with their
    orgs and reader flags; the summary counts them and names the reader."""
    _, out = _run(capsys, _tenancy_config(tmp_path, workers.url), "status", "--json")
    report = json.loads(out)
    rows = {w["id"]: w for w in report["workers"]}
    assert {k: set(w["orgs"]) for k, w in rows.items()} == workers.held
    assert rows[workers.me]["reader"] is True and rows[workers.other]["reader"] is False
    assert report["daemon"]["running"] is False
    # oldest first: the other worker's row was written first
    assert report["summary"]["workers"] == f"2 live, reader {workers.me}, orgs per worker 2/3"


def test_orgs_shows_each_orgs_worker_in_json_and_in_the_table(
    workers: Workers, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orgs --format json`: every org's worker (whole id); the table shows it short and says so."""
    config = _tenancy_config(tmp_path, workers.url)
    code, out = _run(capsys, config, "orgs", "--format", "json")
    assert code == 0
    holder = {org: worker for worker, orgs in workers.held.items() for org in orgs}
    assert {r["org_id"]: r["worker"] for r in json.loads(out)} == {**holder, workers.disconnected: None}
    monkeypatch.setenv("COLUMNS", "100")
    code, out = _run(capsys, config, "orgs", "--format", "table")
    assert code == 0 and "4242-bbbb" in out and workers.other not in out
    assert "worker: the pid and suffix of the worker" in out


async def test_without_worker_mode_the_one_daemon_is_the_only_worker(make: Make) -> None:
    """A SQLite ledger, tenancy off: /api/status lists this daemon alone, as '<host>-<pid>', reading the
    stream (its ingest runs) and serving the default org; /metrics agree; the page has no Workers card."""
    h: Harness = await make()
    body = await (await h.client.get("/api/status", headers=AUTH)).json()
    this = {"id": f"{socket.gethostname()}-{os.getpid()}", "reader": True, "orgs": [DEFAULT_ORG]}
    assert [{k: w[k] for k in this} for w in body["workers"]] == [this]
    assert body["worker"]["id"] == this["id"] and body["worker"]["lease_until"] is None
    h.states["ingest"] = "failed"
    body = await (await h.client.get("/api/status", headers=AUTH)).json()
    assert body["worker"]["reader"] is False
    text = await (await h.client.get("/metrics")).text()
    assert "mogli_bridge_worker_orgs 1.0" in text and "mogli_bridge_worker_reader 0.0" in text
    page = await (await h.client.get("/")).text()
    assert "<h2>Workers</h2>" not in page


def test_without_worker_mode_and_no_daemon_status_lists_no_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` on a SQLite ledger with tenancy on and no daemon answering: `workers` is empty, and
    the orgs have no worker."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    add_org(url)
    config = _tenancy_config(tmp_path, url)
    _, out = _run(capsys, config, "status", "--json")
    report = json.loads(out)
    assert report["workers"] == [] and "workers" not in report["summary"]
    _, out = _run(capsys, config, "orgs", "--format", "json")
    assert {r["worker"] for r in json.loads(out)} == {None}
