"""The emulator's aiohttp application, its in-process runner and the blocking `serve()` entry point."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bridge.emulator import control, tenants, tooling, tooling_composite
from bridge.emulator.bus import EventBus
from bridge.emulator.collections import handle_collections
from bridge.emulator.composite import handle_composite
from bridge.emulator.context import json_response
from bridge.emulator.faults import FaultInjector
from bridge.emulator.gate import faults_gate, latency_gate, request_log_gate, rest_gate
from bridge.emulator.limits import ApiUsage, limits_document
from bridge.emulator.listen import base_url, is_loopback, listen
from bridge.emulator.oauth import ClientPolicy, OAuthError, TokenStore, grant, jwt_audiences, token_response
from bridge.emulator.org import OrgConfig, OrgFileError, load_org
from bridge.emulator.query import QueryCursors
from bridge.emulator.rest import handle_describe_global, handle_query, handle_query_more, handle_sobject
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store import OrgStore
from bridge.emulator.streaming import StreamingService
from bridge.emulator.tls import issue_certificate

log = structlog.get_logger(__name__)

_V = "/services/data/{version:v\\d+\\.\\d}"
_S = "{slash:/?}"
_MAX_BODY_BYTES = 50 * 1024 * 1024


class EmulatorStartError(Exception):
    """The emulator cannot start with these options (the message says which one)."""


def _default_clock() -> datetime:
    return datetime.now(UTC)


def create_app(
    *,
    org: OrgConfig,
    state_file: Path | None = None,
    latency_ms: int = 0,
    clock: Callable[[], datetime] | None = None,
) -> web.Application:
    """Build the emulator application for one org (REST, OAuth, streaming and control routes)."""
    state = build_state(org, state_file=state_file, latency_ms=latency_ms, clock=clock or _default_clock)
    app = _org_app(state)

    def build_tenant(config: OrgConfig) -> web.Application:
        return _org_app(build_state(config, state_file=None, latency_ms=state.latency_ms, clock=state.clock))

    tenants.register(app, tenants.Tenants(org, build_tenant))
    return app


def _org_app(state: EmulatorState) -> web.Application:
    """The application of one hosted org (no `/__emulator/orgs`: only the main emulator hosts orgs)."""
    app = web.Application(
        middlewares=[control.control_errors, request_log_gate, faults_gate, latency_gate, rest_gate],
        client_max_size=_MAX_BODY_BYTES,
    )
    _serve_org(app, state)
    return app


def _serve_org(app: web.Application, state: EmulatorState) -> None:
    """Every route of CONTRACT §6 for one org."""
    app[STATE] = state
    _add_rest_routes(app)
    state.streaming.register(app)
    control.register(app)
    app.on_cleanup.append(_close_store)


def build_state(
    org: OrgConfig, *, state_file: Path | None, latency_ms: int, clock: Callable[[], datetime]
) -> EmulatorState:
    """Wire the org's components: event bus, record store, tokens, streaming, usage, faults, cursors."""

    def wall() -> float:
        return clock().timestamp()

    bus = EventBus(org.streaming, wall_clock=wall, id_segment=org.id_segment)
    tokens = TokenStore(org.org_id, wall_clock=wall)
    return EmulatorState(
        org=org,
        store=OrgStore(org, bus, clock, state_file, on_deactivated=tokens.revoke_user),
        bus=bus,
        streaming=StreamingService(bus=bus, settings=org.streaming, validate_token=tokens.check),
        tokens=tokens,
        usage=ApiUsage(org.daily_api_requests, wall_clock=wall),
        faults=FaultInjector(),
        cursors=QueryCursors(),
        client_policy=ClientPolicy(
            org.accept_any_client, dict(org.clients), org.jwt_public_key_pem, org.refresh_token_rotation
        ),
        clock=clock,
        latency_ms=latency_ms,
    )


def _add_rest_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/services/oauth2/token", handle_token)
    r.add_get("/services/data" + _S, handle_versions)
    r.add_get(_V + _S, handle_version_root)
    r.add_get(_V + "/limits" + _S, handle_limits)
    r.add_get(_V + "/sobjects" + _S, handle_describe_global)
    r.add_get(_V + "/sobjects/{sobject}/describe" + _S, handle_sobject)
    for method in ("GET", "POST"):
        r.add_route(method, _V + "/sobjects/{sobject}" + _S, handle_sobject)
    for method in ("GET", "POST", "PATCH", "DELETE"):
        r.add_route(method, _V + "/sobjects/{sobject}/{id}" + _S, handle_sobject)
    for method in ("GET", "PATCH", "DELETE"):
        r.add_route(method, _V + "/sobjects/{sobject}/{field}/{value}" + _S, handle_sobject)
    for resource in ("query", "queryAll"):
        r.add_get(_V + f"/{resource}" + _S, handle_query)
        r.add_get(_V + f"/{resource}/{{locator}}" + _S, handle_query_more)
    r.add_post(_V + "/composite" + _S, handle_composite)
    for method in ("POST", "PATCH", "DELETE"):
        r.add_route(method, _V + "/composite/sobjects" + _S, handle_collections)
    for method in ("GET", "POST"):
        r.add_route(method, _V + "/composite/sobjects/{sobject}" + _S, handle_collections)
    r.add_patch(_V + "/composite/sobjects/{sobject}/{field}" + _S, handle_collections)
    tooling.register(app, _V)
    tooling_composite.register(app, _V)


async def _close_store(app: web.Application) -> None:
    app[STATE].store.close()


def instance_url(request: web.Request, org: OrgConfig) -> str:
    """The instance URL: configured, else this server as `scheme://localhost:port` (no trailing slash)."""
    if org.instance_url:
        return org.instance_url.rstrip("/")
    host = request.host
    for loopback in ("127.0.0.1", "[::1]"):
        if host == loopback or host.startswith(loopback + ":"):
            host = "localhost" + host[len(loopback) :]
    return f"{request.scheme}://{host}"


async def handle_token(request: web.Request) -> web.StreamResponse:
    """POST /services/oauth2/token: password, refresh_token, JWT bearer and client_credentials grants."""
    state = request.app[STATE]
    state.usage.token_requests += 1
    form = {k: str(v) for k, v in (await request.post()).items()}
    url = instance_url(request, state.org)
    now = state.clock().timestamp()
    try:
        granted = grant(
            form,
            request.headers.get("Authorization"),
            policy=state.client_policy,
            users=state.store,
            tokens=state.tokens,
            audiences=jwt_audiences(url, f"{request.scheme}://{request.host}"),
            now=now,
            host=request.host,
        )
    except OAuthError as exc:
        log.info("emulator.token_refused", grant_type=form.get("grant_type", ""), error=exc.error)
        return json_response(exc.body(), status=400)
    access = state.tokens.issue_access(granted.user_id, granted.client_id)
    body = token_response(
        access, instance_url=url, org_id=state.org.org_id, granted=granted, issued_at_ms=int(now * 1000)
    )
    return json_response(body)


async def handle_versions(request: web.Request) -> web.StreamResponse:
    """GET /services/data: every API version the org speaks (no session needed)."""
    versions = request.app[STATE].org.api_versions
    body = [{"label": f"API {v}", "url": f"/services/data/v{v}", "version": v} for v in versions]
    return json_response(body)


async def handle_version_root(request: web.Request) -> web.StreamResponse:
    """GET /services/data/vXX.X: the resources of one version."""
    base = request.path.rstrip("/")
    names = ("sobjects", "query", "queryAll", "composite", "limits")
    return json_response({name: f"{base}/{name}" for name in names})


async def handle_limits(request: web.Request) -> web.StreamResponse:
    """GET /limits: `{Max, Remaining}` per allocation."""
    state = request.app[STATE]
    body = limits_document(
        state.usage,
        streaming_stats=state.streaming.stats(),
        daily_events=state.org.streaming.daily_delivered_events,
        max_clients=state.org.streaming.max_concurrent_clients,
    )
    return json_response(body)


@dataclass
class RunningEmulator:
    """An emulator serving in this event loop."""

    url: str
    port: int
    ca_file: Path | None
    app: web.Application
    runner: web.AppRunner
    grpc_port: int | None = None
    grpc_server: Any = None  # the Pub/Sub API's grpc.aio server, when --grpc-port asked for one

    @property
    def store(self) -> OrgStore:
        """The record store (direct access for tests)."""
        return self.app[STATE].store

    @property
    def state(self) -> EmulatorState:
        """Every shared component (tokens, usage, faults, bus, streaming)."""
        return self.app[STATE]

    async def stop(self) -> None:
        """Stop serving and release everything (idempotent)."""
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=None)
        await self.runner.cleanup()


async def start_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    org_file: Path | None = None,
    state_file: Path | None = None,
    tls: bool = False,
    ca_out: Path | None = None,
    latency_ms: int = 0,
    allow_remote: bool = False,
    grpc_port: int | None = None,
) -> RunningEmulator:
    """Start serving in the running event loop; EmulatorStartError names a bad option."""
    if not is_loopback(host) and not allow_remote:
        raise EmulatorStartError(f"--host {host}: not a loopback address; pass --allow-remote to serve on it")
    try:
        org = load_org(org_file)
    except OrgFileError as exc:
        raise EmulatorStartError(f"--org: {exc}") from exc
    app = create_app(org=org, state_file=state_file, latency_ms=latency_ms)
    pubsub = _pubsub_router(app) if grpc_port is not None else None
    ssl_context, ca_file, certificate = None, None, None
    if tls:
        certificate = issue_certificate()
        ca_file = ca_out or _temp_ca_path()
        ca_file.write_bytes(certificate.ca_pem)
        ssl_context = certificate.ssl_context()
    try:
        runner, bound = await listen(app, host, port, ssl_context)
    except OSError as exc:
        raise EmulatorStartError(f"--port {port}: cannot listen on {host}: {exc}") from exc
    url = base_url(host, bound, tls=tls)
    app[tenants.TENANTS].bind(app, url, host=host, ssl_context=ssl_context)
    log.info("emulator.started", url=url, tls=tls)
    running = RunningEmulator(url=url, port=bound, ca_file=ca_file, app=app, runner=runner)
    if pubsub is not None and grpc_port is not None:
        try:
            running.grpc_server, running.grpc_port = await _start_pubsub(pubsub, host, grpc_port, certificate)
        except EmulatorStartError:
            await runner.cleanup()
            raise
        grpc_host = "localhost" if is_loopback(host) else host
        app[tenants.TENANTS].grpc_address = f"{grpc_host}:{running.grpc_port}"
    return running


def _pubsub_router(app: web.Application) -> Any:
    """The Pub/Sub API of the main org, and of each org it hosts later (routed by `tenantid`)."""
    # grpc loads only when the Pub/Sub API is served
    from bridge.emulator.pubsub import PubSubService
    from bridge.emulator.pubsub_router import PubSubRouter

    try:
        main = PubSubService(app[STATE])
    except ValueError as exc:
        raise EmulatorStartError(f"--org: {exc}") from exc
    main.register_control(app)
    router = PubSubRouter()
    router.add(app[STATE].org.org_id, main)

    def serve_hosted(hosted: web.Application) -> None:
        service = PubSubService(hosted[STATE], main.schemas)
        service.register_control(hosted)
        router.add(hosted[STATE].org.org_id, service)

    app[tenants.TENANTS].on_create(serve_hosted)
    return router


async def _start_pubsub(service: Any, host: str, port: int, certificate: Any) -> tuple[Any, int]:
    from bridge.emulator.pubsub import start_grpc

    chain = certificate.cert_pem + certificate.ca_pem if certificate is not None else None
    key = certificate.key_pem if certificate is not None else None
    try:
        return await start_grpc(service, host, port, cert_chain=chain, key=key)
    except RuntimeError as exc:
        raise EmulatorStartError(f"--grpc-port {port}: cannot listen on {host}: {exc}") from exc


def _temp_ca_path() -> Path:
    handle = tempfile.NamedTemporaryFile(prefix="emulator-ca-", suffix=".pem", delete=False)  # noqa: SIM115
    handle.close()
    return Path(handle.name)


def serve(
    *,
    host: str,
    port: int,
    org_file: Path | None,
    state_file: Path | None,
    tls: bool,
    ca_out: Path | None,
    latency_ms: int,
    allow_remote: bool,
    grpc_port: int | None = None,
) -> int:
    """Run the emulator until SIGINT/SIGTERM; returns the process exit code (2 for a bad option)."""
    options = {
        "host": host,
        "port": port,
        "org_file": org_file,
        "state_file": state_file,
        "tls": tls,
        "ca_out": ca_out,
        "latency_ms": latency_ms,
        "allow_remote": allow_remote,
        "grpc_port": grpc_port,
    }
    try:
        return asyncio.run(_serve_until_signal(options))
    except EmulatorStartError as exc:
        print(f"mogli-bridge emulator: {exc}", file=sys.stderr)
        return 2


async def _serve_until_signal(options: dict[str, Any]) -> int:
    started = time.monotonic()
    running = await start_emulator(**options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ca_note = f" (CA certificate: {running.ca_file})" if running.ca_file else ""
    print(f"Salesforce emulator listening on {running.url}{ca_note}", flush=True)
    if running.grpc_port is not None:
        print(f"Pub/Sub API listening on localhost:{running.grpc_port}", flush=True)
    log.info("emulator.ready", seconds=round(time.monotonic() - started, 3))
    try:
        await stop.wait()
    finally:
        await running.stop()
    return 0
