"""The control API under `/__emulator/`: inspect records and counters, inject faults, expire sessions, etc.

Local test and demo plumbing (CONTRACT §6), JSON in and out, no token; never counted as API usage and
never subject to faults or latency.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from bridge import sfid
from bridge.emulator.context import json_response
from bridge.emulator.contracts import ApiError, DmlContext, change_event_channel
from bridge.emulator.faults import FaultSpecError, parse_rule
from bridge.emulator.state import STATE, EmulatorState

log = structlog.get_logger(__name__)
PREFIX = "/__emulator"


class ControlError(Exception):
    """A control request the emulator cannot carry out: answered 400 `{"error": ...}`."""


async def _body(request: web.Request) -> dict[str, Any]:
    if not await request.read():
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise ControlError(f"body: not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ControlError("body: expected a JSON object")
    return body


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE]


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Render control failures as JSON (400 `{"error"}`, or the Salesforce error of the store)."""
    if not request.path.startswith(PREFIX + "/"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except ControlError as exc:
        return json_response({"error": str(exc)}, status=400)
    except ApiError as exc:
        return json_response({"error": exc.message, "errorCode": exc.error_code}, status=exc.status)
    except web.HTTPNotFound:
        return json_response({"error": f"no control route {request.method} {request.path}"}, status=404)
    return response


async def get_records(request: web.Request) -> web.Response:
    """GET /__emulator/records/{sobject}[?include_deleted=1]: every record of the object."""
    state = _state(request)
    sobject = request.match_info["sobject"]
    if not state.store.sobject_exists(sobject):
        raise ControlError(f"sobject: unknown object {sobject!r}")
    include_deleted = request.query.get("include_deleted", "") in ("1", "true", "yes")
    records = list(state.store.records(sobject, include_deleted))
    return json_response({"sobject": sobject, "totalSize": len(records), "records": records})


async def get_created(request: web.Request) -> web.Response:
    """GET /__emulator/created/{sobject}?after=<replay id>[&field=F][&limit=N]: records created after a
    cursor, from the Change Data Capture log, each with its commit time (epoch seconds) and field F."""
    state = _state(request)
    entity = state.store.canonical_name(request.match_info["sobject"])
    channel_log = state.bus.channel_log(change_event_channel(entity)) if entity else None
    if channel_log is None:
        raise ControlError("sobject: unknown, or Change Data Capture is not enabled for it")
    try:
        after = int(request.query.get("after", "0"))
        limit = max(1, int(request.query.get("limit", "10000")))
    except ValueError as exc:
        raise ControlError("after/limit: expected integers") from exc
    field_name = request.query.get("field")
    stored = channel_log.after(after, limit)
    records = [
        {
            "id": record_id,
            "at": s.published_at,
            "value": s.event.fields.get(field_name) if field_name else None,
        }
        for s in stored
        if s.event.change_type == "CREATE"
        for record_id in s.event.record_ids
    ]
    cursor = stored[-1].replay_id if stored else after
    return json_response({"after": cursor, "records": records})


async def get_stats(request: web.Request) -> web.Response:
    """GET /__emulator/stats: API usage by route, token requests, streaming clients and deliveries."""
    state = _state(request)
    streaming = state.streaming.stats()
    return json_response(
        {
            "api_requests": {
                "total": state.usage.total_requests,
                "by_route": dict(sorted(state.usage.by_route.items())),
            },
            "api_usage": state.usage.used(),
            "api_allocation": state.usage.allocation,
            "token_requests": state.usage.token_requests,
            "faults_fired": state.usage.faults_fired,
            "streaming_clients": streaming.get("streaming_clients", 0),
            "delivered_events": streaming.get("delivered_events", 0),
        }
    )


async def post_faults(request: web.Request) -> web.Response:
    """POST /__emulator/faults: add one rule, or several as `{"rules": [...]}`."""
    state = _state(request)
    body = await _body(request)
    specs = body["rules"] if isinstance(body.get("rules"), list) else [body]
    try:
        rules = [parse_rule(spec) for spec in specs]
    except FaultSpecError as exc:
        raise ControlError(str(exc)) from exc
    for rule in rules:
        state.faults.add(rule)
    log.info("emulator.faults_added", count=len(rules))
    return json_response({"rules": [r.describe() for r in state.faults.rules()]}, status=201)


async def get_faults(request: web.Request) -> web.Response:
    """GET /__emulator/faults: the active rules."""
    return json_response({"rules": [r.describe() for r in _state(request).faults.rules()]})


async def delete_faults(request: web.Request) -> web.Response:
    """DELETE /__emulator/faults: clear every rule."""
    return json_response({"cleared": _state(request).faults.clear()})


async def expire_sessions(request: web.Request) -> web.Response:
    """POST /__emulator/sessions/expire: every access token (or the named one) becomes invalid."""
    state = _state(request)
    body = await _body(request)
    if "lifetime_seconds" in body:
        state.tokens.session_seconds = float(body["lifetime_seconds"])
    token = body.get("access_token")
    expired = state.tokens.expire(str(token) if token else None)
    log.info("emulator.sessions_expired", count=expired)
    return json_response({"expired": expired})


async def issue_refresh_token(request: web.Request) -> web.Response:
    """POST /__emulator/oauth/refresh-tokens {"username"[, "client_id"]}: a refresh token for that user."""
    state = _state(request)
    body = await _body(request)
    user = state.store.user_by_username(str(body.get("username", "")))
    if user is None:
        raise ControlError("username: no such user")
    token = state.tokens.issue_refresh(user.id, str(body.get("client_id", "")))
    return json_response({"refresh_token": token, "user_id": user.id}, status=201)


async def set_user_active(request: web.Request) -> web.Response:
    """POST /__emulator/users/active {"username", "active"}: (de)activate a user as an admin would in Setup;
    deactivating ends the user's sessions and refresh tokens (reactivating revives none of them)."""
    state = _state(request)
    body = await _body(request)
    user = state.store.user_by_username(str(body.get("username", "")))
    active = body.get("active")
    if user is None:
        raise ControlError("username: no such user")
    if not isinstance(active, bool):
        raise ControlError("active: expected a boolean")
    ctx = DmlContext(user_id=state.store.integration_user_id, change_origin="")
    with state.store.transaction(ctx) as txn:
        txn.update("User", user.id, {"IsActive": active})
    log.info("emulator.user_activation_set", active=active)
    return json_response({"Id": user.id, "IsActive": active})


async def forget_clients(request: web.Request) -> web.Response:
    """POST /__emulator/streaming/forget-clients: every CometD client id becomes unknown."""
    return json_response({"forgotten": _state(request).streaming.forget_clients()})


async def purge_events(request: web.Request) -> web.Response:
    """POST /__emulator/streaming/purge [{"older_than_seconds"}]: drop events older than that age
    (default: the retention window; 0 drops every event)."""
    body = await _body(request)
    older = body.get("older_than_seconds")
    purged = _state(request).bus.purge(None if older is None else float(older))
    return json_response({"purged": purged})


async def set_delivered(request: web.Request) -> web.Response:
    """POST /__emulator/streaming/delivered {"used"}: pretend that many change events were delivered today
    (DailyDeliveredPlatformEvents in /limits moves; at the maximum, connects fail the documented 403)."""
    state = _state(request)
    body = await _body(request)
    used = body.get("used")
    if isinstance(used, bool) or not isinstance(used, int):
        raise ControlError("used: expected an integer")
    state.streaming.set_delivered(used)
    return json_response({"delivered_events": state.streaming.stats()["delivered_events"]})


_SWITCHES = ("collections_client_origin", "merge_same_changes", "filter_deleted_values")


async def set_switches(request: web.Request) -> web.Response:
    """POST /__emulator/streaming/switches {"collections_client_origin"?, "merge_same_changes"?,
    "filter_deleted_values"?}: turn the org's change-event switches at run time (the org file's
    `[streaming]` keys of the same names)."""
    state = _state(request)
    body = await _body(request)
    unknown = sorted(set(body) - set(_SWITCHES))
    if unknown or not all(isinstance(value, bool) for value in body.values()):
        raise ControlError(f"expected booleans among {list(_SWITCHES)}, got {unknown or body}")
    streaming = replace(state.org.streaming, **body)
    state.org = replace(state.org, streaming=streaming)
    state.bus.merge_same_changes = streaming.merge_same_changes
    state.bus.filter_deleted_values = streaming.filter_deleted_values
    log.info("emulator.switches_set", **body)
    return await get_switches(request)


async def get_switches(request: web.Request) -> web.Response:
    """GET /__emulator/streaming/switches: the change-event switches in force."""
    streaming = _state(request).org.streaming
    return json_response({name: getattr(streaming, name) for name in _SWITCHES})


async def convert_lead(request: web.Request) -> web.Response:
    """POST /__emulator/leads/{id}/convert [{"create_opportunity"}]: convert as Salesforce does; answers
    the new ids (`accountId`, `contactId`, `opportunityId`)."""
    state = _state(request)
    body = await _body(request)
    user = request.headers.get("X-Emulator-User") or state.store.integration_user_id
    try:
        lead_id = sfid.to18(request.match_info["id"])
        ctx = DmlContext(user_id=sfid.to18(user), change_origin="")
    except ValueError as exc:
        raise ControlError("id / X-Emulator-User: not a Salesforce id") from exc
    result = state.store.convert_lead(lead_id, ctx, create_opportunity=bool(body.get("create_opportunity")))
    return json_response(dict(result))


async def publish_gap(request: web.Request) -> web.Response:
    """POST /__emulator/gap {"entity","record_ids","change_type"}: publish a gap event."""
    body = await _body(request)
    entity, ids, change_type = body.get("entity"), body.get("record_ids", []), body.get("change_type")
    if not isinstance(entity, str) or not isinstance(change_type, str) or not isinstance(ids, list):
        raise ControlError('expected {"entity": str, "record_ids": [str], "change_type": str}')
    try:
        _state(request).bus.publish_gap(entity, [str(i) for i in ids], change_type)
    except ValueError as exc:
        raise ControlError(str(exc)) from exc
    return json_response({"published": True}, status=201)


async def set_limits(request: web.Request) -> web.Response:
    """POST /__emulator/limits {"allocation"?, "used"?}: set the daily allocation and today's usage."""
    state = _state(request)
    body = await _body(request)
    try:
        allocation = int(body["allocation"]) if "allocation" in body else None
        used = int(body["used"]) if "used" in body else None
    except (TypeError, ValueError) as exc:
        raise ControlError("allocation/used: expected integers") from exc
    state.usage.set(allocation=allocation, used=used)
    return json_response({"allocation": state.usage.allocation, "used": state.usage.used()})


async def set_latency(request: web.Request) -> web.Response:
    """POST /__emulator/latency {"latency_ms"}: the delay added to every REST and token call."""
    state = _state(request)
    body = await _body(request)
    try:
        state.latency_ms = max(0, int(body.get("latency_ms", 0)))
    except (TypeError, ValueError) as exc:
        raise ControlError("latency_ms: expected an integer") from exc
    return json_response({"latency_ms": state.latency_ms})


async def get_requests(request: web.Request) -> web.Response:
    """GET /__emulator/requests[?since=ISO]: the org's recent API requests, tokens as fingerprints."""
    raw = request.query.get("since")
    try:
        since = datetime.fromisoformat(raw) if raw else None
    except ValueError as exc:
        raise ControlError(f"since: not an ISO 8601 time: {raw!r}") from exc
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    entries = _state(request).requests.since(since)
    return json_response({"requests": [e.to_json() for e in entries]})


async def reset(request: web.Request) -> web.Response:
    """POST /__emulator/reset: the org back to its seed; events, faults, cursors and counters cleared."""
    state = _state(request)
    state.store.reset()
    state.bus.reset()
    state.streaming.forget_clients()
    state.faults.clear()
    state.cursors.clear()
    state.usage.reset()
    state.requests.clear()
    log.info("emulator.reset")
    return json_response({"reset": True})


def register(app: web.Application) -> None:
    """Add the control routes to the app."""
    app.router.add_get(PREFIX + "/records/{sobject}", get_records)
    app.router.add_get(PREFIX + "/stats", get_stats)
    app.router.add_get(PREFIX + "/requests", get_requests)
    app.router.add_get(PREFIX + "/created/{sobject}", get_created)
    app.router.add_get(PREFIX + "/faults", get_faults)
    app.router.add_post(PREFIX + "/faults", post_faults)
    app.router.add_delete(PREFIX + "/faults", delete_faults)
    app.router.add_post(PREFIX + "/sessions/expire", expire_sessions)
    app.router.add_post(PREFIX + "/oauth/refresh-tokens", issue_refresh_token)
    app.router.add_post(PREFIX + "/users/active", set_user_active)
    app.router.add_post(PREFIX + "/streaming/forget-clients", forget_clients)
    app.router.add_post(PREFIX + "/streaming/purge", purge_events)
    app.router.add_post(PREFIX + "/streaming/delivered", set_delivered)
    app.router.add_get(PREFIX + "/streaming/switches", get_switches)
    app.router.add_post(PREFIX + "/streaming/switches", set_switches)
    app.router.add_post(PREFIX + "/leads/{id}/convert", convert_lead)
    app.router.add_post(PREFIX + "/gap", publish_gap)
    app.router.add_post(PREFIX + "/limits", set_limits)
    app.router.add_post(PREFIX + "/latency", set_latency)
    app.router.add_post(PREFIX + "/reset", reset)
