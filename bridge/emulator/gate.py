"""Request gates in front of every handler: fault injection, latency, and the REST front door.

The REST gate validates the API version, the session and the daily allocation, counts the call, builds
the RestContext, turns ApiError into Salesforce's error array and stamps `Sforce-Limit-Info`.
"""

from __future__ import annotations

import asyncio
import re

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.emulator.collections import PER_RECORD_FAULT
from bridge.emulator.context import (
    REST_CTX,
    RestContext,
    acting_user,
    batch_size,
    call_options,
    error_response,
    json_response,
    session_invalid,
)
from bridge.emulator.contracts import ApiError
from bridge.emulator.state import STATE, EmulatorState

log = structlog.get_logger(__name__)

CONTROL_PREFIX = "/__emulator/"
DATA_PREFIX = "/services/data"
_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)(?:/|$)")
# Composite and sObject Collections: resources the `Sforce-Call-Options` documentation does not list.
_COMPOSITE = re.compile(r"^/services/data/v\d+\.\d/composite(?:/|$)")
_LIMIT_EXCEEDED = ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
_UNKNOWN = ApiError(
    500,
    "UNKNOWN_EXCEPTION",
    "An unexpected error occurred. Please include this ErrorId if you contact support",
)


@web.middleware
async def request_log_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log every request but the control API's with the status it got (faults and refusals included)."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state = request.app[STATE]
        state.requests.record(
            state.clock(), request.method, request.path, status, request.headers.get("Authorization")
        )


@web.middleware
async def faults_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the first fault rule that fires for this request (every route but the control API)."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = request.app[STATE]
    rule = state.faults.fire(request.method, request.path)
    if rule is None:
        return await handler(request)
    state.usage.faults_fired += 1
    log.info("emulator.fault_fired", method=request.method, path=request.path, action=rule.action)
    if rule.latency_ms:
        await asyncio.sleep(rule.latency_ms / 1000)
    if rule.action == "drop":
        return _drop(request)
    if rule.per_record and "/composite/sobjects" in request.path:
        request[PER_RECORD_FAULT] = rule
        return await handler(request)
    if rule.body is not None:
        return web.Response(status=rule.status or 503, text=rule.body, content_type="text/html")
    if rule.status is not None:
        return _with_limit_info(state, request, error_response(rule.api_error()))
    return await handler(request)


def _drop(request: web.Request) -> web.StreamResponse:
    """Cut the TCP connection without answering."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=503)  # never reaches the peer: the transport is gone


@web.middleware
async def latency_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Delay REST and token calls by the configured latency."""
    latency = request.app[STATE].latency_ms
    if latency and request.path.startswith("/services/"):
        await asyncio.sleep(latency / 1000)
    return await handler(request)


@web.middleware
async def rest_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Version, session, allocation and error rendering for `/services/data/vXX.X/...`."""
    path = request.path
    if not path.startswith(DATA_PREFIX) or path.rstrip("/") == DATA_PREFIX:
        return await handler(request)
    state = request.app[STATE]
    match = _VERSIONED.match(path)
    if match is None or match.group(1) not in state.org.api_versions:
        body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        return _with_limit_info(state, request, json_response(body, status=404))
    session = state.tokens.session_for_header(request.headers.get("Authorization"))
    if session is None:
        return _with_limit_info(state, request, session_invalid())
    if state.usage.exhausted():
        return _with_limit_info(state, request, error_response(_LIMIT_EXCEEDED))
    state.usage.count(route_key(request))
    try:
        request[REST_CTX] = _rest_context(request, state, match.group(1), session.user_id)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ",".join(sorted(exc.allowed_methods))
        message = f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}"
        response = json_response([{"errorCode": "METHOD_NOT_ALLOWED", "message": message}], status=405)
    except web.HTTPNotFound:
        body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        response = json_response(body, status=404)
    except web.HTTPException:
        raise  # e.g. 413 for a body over the size limit: aiohttp answers it
    except Exception:
        # An emulator bug: answer the way Salesforce answers its own internal errors, and say so loudly.
        log.exception("emulator.unexpected_error", method=request.method, path=request.path)
        response = error_response(_UNKNOWN)
    return _with_limit_info(state, request, response)


def _rest_context(request: web.Request, state: EmulatorState, version: str, token_user: str) -> RestContext:
    """The caller of one REST request: version, acting user, `client=` label, query batch size."""
    headers = request.headers
    user_id = acting_user(headers.get("X-Emulator-User"), token_user)
    if user_id != token_user and state.store.user_by_id(user_id) is None:
        raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"X-Emulator-User: no such user {user_id}")
    client = call_options(headers.get("Sforce-Call-Options")).get("client") or None
    if _COMPOSITE.match(request.path) and not state.org.streaming.collections_client_origin:
        client = None
    return RestContext(
        version=version,
        user_id=user_id,
        client=client,
        batch_size=batch_size(headers.get("Sforce-Query-Options")),
    )


def _with_limit_info(
    state: EmulatorState, request: web.Request, response: web.StreamResponse
) -> web.StreamResponse:
    if request.path.startswith(DATA_PREFIX):
        response.headers["Sforce-Limit-Info"] = state.usage.header()
    return response


def route_key(request: web.Request) -> str:
    """`METHOD /resource/{pattern}` of a REST call, without the version prefix (for the stats)."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    canonical = canonical.replace("/services/data/{version}", "")
    canonical = re.sub(r"\{slash\}$", "", canonical) or "/"
    return f"{request.method} {canonical}"
