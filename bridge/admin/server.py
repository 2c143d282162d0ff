"""The admin HTTP app (CONTRACT §8) inside the daemon's event loop.

`GET /healthz`, `GET /readyz`, `GET /metrics` and the read-only status page `GET /` need no token; everything
else needs `Authorization: Bearer <admin.token>` (compared in constant time). /readyz is open because a load
balancer's or orchestrator's probe carries no secret; its body holds states, reasons and dependency errors
(hosts, driver reasons), never record data, as the page does. Without a configured token every
protected route answers 401. The listener is loopback-only unless `admin.allow_remote` is true.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

import structlog
from aiohttp import web

from bridge.admin import views
from bridge.admin.health import StreamReader, Thresholds, assess
from bridge.admin.history import SAMPLE_SECONDS, History, sample_every
from bridge.admin.org_metrics import OrgMetrics
from bridge.admin.orgs import ledger_org, org_detail, org_rows, row_json
from bridge.admin.page import Outstanding, render_status_page
from bridge.admin.ports import OrgLedger, ReconcileRunner
from bridge.admin.runs import RunTasks, known_orgs
from bridge.admin.workers import (
    LiveWorker,
    ThisWorker,
    WorkerRow,
    live_row,
    merged,
    one_daemon_id,
    serves,
    worker_json,
)
from bridge.aio import sleep_or_stop
from bridge.config import AdminSettings
from bridge.errors import ConfigurationError
from bridge.metrics import CONTENT_TYPE, BridgeMetrics, Readings
from bridge.pipeline.ports import AdminLedger
from bridge.records.ledger import DEFAULT_ORG, ReconciliationRun, WorkerRecord

log = structlog.get_logger(__name__)

PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("POST", "/ui/reconciliations"),
    }
)
BIND_RETRY_SECONDS = 5.0
OUTSTANDING_SHOWN = 20  # drift items listed on the page; the count covers them all
OptionsT = TypeVar("OptionsT")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReadingsSource(Protocol):
    """Gives a fresh snapshot of the daemon (DaemonProbe)."""

    async def readings(self) -> Readings:
        """One snapshot."""
        ...


def parse_listen(listen: str, allow_remote: bool) -> tuple[str, int]:
    """Split `host:port` (IPv6 in brackets); refuse a non-loopback host unless allowed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConfigurationError(f"admin.listen must be host:port, not {listen!r}", "admin.listen")
    host = host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ConfigurationError(
            f"admin.listen {listen!r} is not a loopback address; set admin.allow_remote = true to allow it",
            "admin.listen",
        )
    return host, int(port_text)


def token_matches(expected: str, offered: str | None) -> bool:
    """Constant-time comparison; an unset token matches nothing."""
    if not expected or offered is None:
        return False
    return hmac.compare_digest(expected.encode(), offered.encode())


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, default=str))


class AdminServer(Generic[OptionsT]):
    """The admin app and its listener; `run(stop)` is the supervised component."""

    def __init__(
        self,
        settings: AdminSettings,
        *,
        probe: ReadingsSource,
        ledger: OrgLedger,
        metrics: BridgeMetrics,
        notify_pusher: Callable[[], None],
        runner: ReconcileRunner[OptionsT] | None = None,
        make_options: Callable[..., OptionsT] | None = None,
        thresholds: Thresholds = Thresholds(),
        history: History | None = None,
        sample_seconds: float = SAMPLE_SECONDS,
        org_runner: Callable[[str | None], ReconcileRunner[OptionsT] | None] | None = None,
        worker: ThisWorker | None = None,
    ) -> None:
        """`org_runner(org)` gives the runner of an org's runtime (None: the org has none now); without it
        (tenancy off) a run is for the default org, through `runner`. `worker`: this process as one worker
        of several (worker mode); without it, this process is the one daemon."""
        self.settings = settings
        self.probe = probe
        self.ledger = ledger
        self.metrics = metrics
        self.notify_pusher = notify_pusher
        self.runner = runner
        self.make_options = make_options
        self.thresholds = thresholds
        self.history = history if history is not None else History()
        self.sample_seconds = sample_seconds
        self.org_metrics = OrgMetrics()
        self.runs = RunTasks(ledger, runner, make_options, org_runner)
        self.worker = worker
        self.tenancy = org_runner is not None
        self.port: int | None = None
        self.listening = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.page)
        app.router.add_post("/ui/reconciliations", self.page_reconcile)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/api/status", self.status)
        app.router.add_post("/api/retry", self.retry)
        app.router.add_post("/api/reconciliations", self.start_reconciliation)
        app.router.add_get("/api/reconciliations/{id}", self.get_reconciliation)
        app.router.add_get("/api/orgs", self.list_orgs)
        app.router.add_get("/api/orgs/{id}", self.get_org)
        app.on_shutdown.append(self._cancel_runs)
        return app

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] = lambda: None) -> None:
        """Serve until `stop`; a busy port is retried (syncing goes on without the admin API meanwhile).
        `ready()` is called once the port is bound."""
        host, port = parse_listen(self.settings.listen, self.settings.allow_remote)
        if not self.settings.token:
            log.warning("admin.no_token", reason="admin.token is empty: every protected route answers 401")
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(sample_every(self.sample_seconds, self.probe.readings, self.history, stop))
                await self._serve(runner, host, port, stop, ready)
        finally:
            await runner.cleanup()

    async def _serve(
        self, runner: web.AppRunner, host: str, port: int, stop: asyncio.Event, ready: Callable[[], None]
    ) -> None:
        """Bind (retrying a busy port) and serve until `stop`."""
        while not stop.is_set():
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                log.error("admin.bind_failed", host=host, port=port, error=str(exc))
                await sleep_or_stop(stop, BIND_RETRY_SECONDS)
                continue
            self.port = _bound_port(runner, port)
            self.listening.set()
            ready()
            log.info("admin.listening", host=host, port=self.port)
            await stop.wait()

    # ------------------------------------------------------------------ middleware and public routes

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in PUBLIC:
            return await handler(request)
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token_matches(self.settings.token, offered.strip()):
            return _json({"error": "a valid Authorization: Bearer <admin.token> header is required"}, 401)
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the event loop answers."""
        return _json({"status": "alive"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus text, refreshed from a fresh snapshot."""
        readings = await self.probe.readings()
        self.metrics.update(readings)
        workers, _ = await self.workers(readings)
        this = next(w for w in workers if w.this)
        self.metrics.observe_worker(len(this.orgs), this.reader)
        try:
            self.org_metrics.update(await org_rows(self.ledger))
        except Exception as exc:  # the ledger's own gauges say it is down; the rest still answers
            log.warning("admin.org_metrics_failed", error_type=type(exc).__name__)
        response = web.Response(body=self.metrics.render() + self.org_metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def page(self, request: web.Request) -> web.Response:
        """The read-only status page (`?org=ID`: that org's failures and runs)."""
        readings = await self.probe.readings()
        orgs = await org_rows(self.ledger)
        chosen = request.query.get("org") or None
        if chosen is not None and chosen not in {o.org_id for o in orgs}:
            return web.Response(status=404, text=f"no org {chosen[:100]!r}", content_type="text/plain")
        ledger = self._in_org(chosen)
        failures = await ledger.list_failures(limit=20)
        runs = await ledger.list_reconciliations(limit=10)
        notice = request.query.get("notice")
        workers, several = await self.workers(readings)
        html = render_status_page(
            readings,
            failures,
            runs,
            health=assess(readings, self.thresholds, _stream_reader(workers, several)),
            outstanding=await self._outstanding(ledger, runs),
            history=self.history,
            notice=notice[:200] if notice else None,
            orgs=orgs,
            org=chosen,
            workers=workers if several else (),
        )
        return web.Response(text=html, content_type="text/html")

    def _in_org(self, org: str | None) -> AdminLedger:
        """The ledger of one org ('default': the default org), or of every org for None."""
        return self.ledger if org is None else self.ledger.scoped(ledger_org(org))

    async def _outstanding(self, ledger: AdminLedger, runs: list[ReconciliationRun]) -> Outstanding | None:
        """The newest finished run's unrepaired drift (None before any run finished)."""
        finished = next((r for r in runs if r.state == "finished"), None)
        if finished is None:
            return None
        drift = await ledger.list_drift(run_id=finished.id, limit=100_000)
        left = [d for d in drift if not d.repaired]
        return Outstanding(finished, tuple(left[:OUTSTANDING_SHOWN]), len(left))

    async def page_reconcile(self, request: web.Request) -> web.StreamResponse:
        """The page's form: checks the token field, starts a run (of the page's org when one is chosen),
        redirects back to the page."""
        form = await request.post()
        token = form.get("token")
        if not token_matches(self.settings.token, token if isinstance(token, str) else None):
            return web.Response(status=401, text="wrong or missing admin token", content_type="text/plain")
        links = [p.strip() for p in str(form.get("links") or "").replace(",", " ").split() if p.strip()]
        body = {
            "links": links,
            "since": form.get("since") or None,
            "until": form.get("until") or None,
            "dry_run": bool(form.get("dry_run")),
        }
        org = str(form.get("org") or "") or None
        try:
            req = views.parse_reconcile({**body, "orgs": [org] if org else None})
            if org is None:
                run_id = await self.runs.start(req, requested_by="admin-page")
            else:
                [started] = await self.runs.start_orgs(req, requested_by="admin-page")
                run_id = started["id"]
        except views.BadRequest as exc:
            return web.Response(status=400, text=str(exc), content_type="text/plain")
        back = f"org={quote(org)}&" if org else ""
        raise web.HTTPSeeOther(f"/?{back}notice=reconciliation+run+{run_id}+started")

    # ------------------------------------------------------------------ protected routes (and /readyz)

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when ready or degraded (the daemon works; the body says why it is degraded), 503 when not."""
        readings = await self.probe.readings()
        health = assess(readings, self.thresholds, _stream_reader(*await self.workers(readings)))
        body = views.status_json(readings, health)
        return _json(
            {k: body[k] for k in ("ready", "health", "components", "checks")}, 200 if health.serving else 503
        )

    async def status(self, request: web.Request) -> web.Response:
        """Health, components, lags, API budget, pending and failed counts; `?org=ID`: that org's counts,
        API budget and stream positions, and its row."""
        readings = await self.probe.readings()
        workers, several = await self.workers(readings)
        body = views.status_json(
            readings, assess(readings, self.thresholds, _stream_reader(workers, several))
        )
        body["workers"] = [worker_json(w) for w in workers]
        body["worker"] = next((worker_json(w) for w in workers if w.this), None)
        org = request.query.get("org")
        if org is None:
            return _json(body)
        detail = await org_detail(self.ledger, org)
        if detail is None:
            return _json({"error": f"no org {org!r}"}, 404)
        return _json(views.org_status_json(body, detail))

    async def workers(self, readings: Readings) -> tuple[list[WorkerRow], bool]:
        """Every worker (CONTRACT §10), the one answering marked, and whether this process is one worker of
        several. In worker mode: the ledger's rows, this one read live when app.py handed it over (else
        found by host and pid: its row is as fresh as its last round). Otherwise this process alone, the one
        daemon. A ledger that does not answer leaves this process alone in the list."""
        try:
            records = await self.ledger.list_workers()
            this = self.worker or _this_process(records)
            if this is not None:
                return merged(records, readings.at, this), True
            return [await self._one_daemon(readings)], False
        except Exception as exc:
            log.warning("admin.workers_unreadable", error_type=type(exc).__name__)
            if self.worker is not None:
                return [live_row(self.worker)], True
            return [WorkerRow(one_daemon_id(), *_host_pid(), reader=_reading(readings), this=True)], False

    async def _one_daemon(self, readings: Readings) -> WorkerRow:
        """This process as the one daemon: it reads the stream while its ingest runs; it serves the default
        org, and with tenancy every connected org."""
        orgs = [o.org_id for o in await self.ledger.list_orgs() if serves(o)] if self.tenancy else []
        return WorkerRow(
            one_daemon_id(),
            *_host_pid(),
            reader=_reading(readings),
            orgs=tuple(sorted({DEFAULT_ORG, *orgs})),
            this=True,
        )

    async def list_orgs(self, request: web.Request) -> web.Response:
        """Every org's row, as `mogli-bridge orgs --format json` prints them."""
        return _json([row_json(r) for r in await org_rows(self.ledger)])

    async def get_org(self, request: web.Request) -> web.Response:
        """One org: its row, counts, positions and recent failures; 404 for an unknown id."""
        org = request.match_info["id"]
        detail = await org_detail(self.ledger, org)
        if detail is None:
            return _json({"error": f"no org {org!r}"}, 404)
        return _json(detail)

    async def retry(self, request: web.Request) -> web.Response:
        """Failed records back to the queue (of `org` alone when given); wakes the pusher."""
        try:
            req = views.parse_retry(await _body(request))
            await known_orgs(self.ledger, [req.org] if req.org else [])
        except views.BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        moved = await self._in_org(req.org).requeue(
            booking_ids=req.booking_ids or None, all_failed=req.all_failed, requested_by="admin-api"
        )
        if moved:
            self.notify_pusher()
        log.info(
            "admin.retry",
            requeued=moved,
            all_failed=req.all_failed,
            bookings=len(req.booking_ids),
            org=req.org,
        )
        return _json({"requeued": moved})

    async def start_reconciliation(self, request: web.Request) -> web.Response:
        """Validate the options, open a run (one per org of `orgs`) and execute it in the background; 202
        with its id (and with `orgs`, every run's id)."""
        try:
            req = views.parse_reconcile(await _body(request))
            if not req.orgs:
                return _json({"id": await self.runs.start(req, requested_by="admin-api")}, 202)
            runs = await self.runs.start_orgs(req, requested_by="admin-api")
        except views.BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"id": runs[0]["id"], "ids": [r["id"] for r in runs], "runs": runs}, 202)

    async def get_reconciliation(self, request: web.Request) -> web.Response:
        """One run and its drift counts."""
        try:
            run_id = int(request.match_info["id"])
        except ValueError:
            return _json({"error": "the run id must be an integer"}, 400)
        run = await self.ledger.get_reconciliation(run_id)
        if run is None:
            return _json({"error": f"no reconciliation run {run_id}"}, 404)
        drift = await self.ledger.list_drift(run_id=run_id, limit=100_000)
        return _json(views.run_json(run, drift))

    async def _cancel_runs(self, app: web.Application) -> None:
        """Cancel runs still executing (the app is stopping)."""
        await self.runs.cancel()


def _stream_reader(workers: list[WorkerRow], several: bool) -> StreamReader:
    """Who reads the change stream, as health judges it: the one daemon always reads it itself; a worker
    of several reads it when it holds the reader lock, else another live worker does, or nobody."""
    if not several or any(w.this and w.reader for w in workers):
        return "this"
    return "another" if any(w.reader and w.alive for w in workers) else "nobody"


def _host_pid() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _this_process(records: list[WorkerRecord]) -> LiveWorker | None:
    """This process's row among the workers (same host and pid; the newest lease if a pid was reused),
    as a ThisWorker whose flags are those of its last round; None when this process is no worker."""
    host, pid = _host_pid()
    mine = [r for r in records if r.host == host and r.pid == pid]
    if not mine:
        return None
    row = max(mine, key=lambda r: r.lease_until)
    return LiveWorker(row.worker_id, host, pid, is_reading=lambda: row.reader, orgs=lambda: row.orgs)


def _reading(readings: Readings) -> bool:
    """The one daemon reads the change stream while its ingest component runs."""
    return readings.components.get("ingest") == "running"


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise views.BadRequest("the body must be JSON") from exc


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    """The port actually bound (differs from the configured one for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
