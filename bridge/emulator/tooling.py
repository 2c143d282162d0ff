"""The Tooling API's change-event channel objects: PlatformEventChannel and PlatformEventChannelMember.

`POST /services/data/vXX.X/tooling/sobjects/{type}` with `{"FullName", "Metadata"}` creates one and answers
201 `{id, success, errors, warnings, infos}` (a FullName already taken: 400 DUPLICATE_DEVELOPER_NAME);
`GET`, `PATCH` (a member's filterExpression) and `DELETE .../{type}/{id}` read, change and remove one
(DELETE of a channel takes its members); `GET .../tooling/query?q=SELECT ... FROM {type} [WHERE ...]`
lists them, so a setup can be idempotent. The objects exist from API 47.0; filter expressions on members
need API 56.0 or later (cdc-filter-tooling-api-add-filter.html).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.emulator.channels import STANDARD_CHANNEL, ChannelError, ChannelMember, CustomChannel
from bridge.emulator.context import REST_CTX, json_response, read_json, require_object
from bridge.emulator.contracts import ApiError, change_event_channel
from bridge.emulator.filters import FilterError, parse_filter
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store_txn import not_found

CHANNEL, MEMBER = "PlatformEventChannel", "PlatformEventChannelMember"
TYPES = {CHANNEL.lower(): CHANNEL, MEMBER.lower(): MEMBER}
_MIN_VERSION, _MIN_FILTER_VERSION = 47.0, 56.0  # the channel objects; filters on their members
_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<type>\w+)(?:\s+WHERE\s+(?P<where>.+?))?\s*$", re.I | re.S
)


def register(app: web.Application, prefix: str) -> None:
    """Add the Tooling routes under `prefix` (`/services/data/{version}`)."""
    app.router.add_post(prefix + "/tooling/sobjects/{type}", handle_create)
    for method in ("GET", "PATCH", "DELETE"):
        app.router.add_route(method, prefix + "/tooling/sobjects/{type}/{id}", handle_record)
    app.router.add_get(prefix + "/tooling/query", handle_query)
    app.router.add_get(prefix + "/tooling/query/", handle_query)


async def handle_create(request: web.Request) -> web.StreamResponse:
    """POST .../tooling/sobjects/{PlatformEventChannel|PlatformEventChannelMember}."""
    body = require_object(await read_json(request))
    record_id = create_record(request.app[STATE], request[REST_CTX].version, _type(request), body)
    return json_response({"id": record_id, "success": True, "errors": [], "warnings": [], "infos": []}, 201)


def create_record(state: EmulatorState, version: str, type_name: str, body: dict[str, Any]) -> str:
    """Create a channel or a member from `{"FullName", "Metadata"}`; its id. ApiError when refused."""
    full_name = body.get("FullName")
    metadata = body.get("Metadata")
    if not isinstance(full_name, str) or not isinstance(metadata, dict):
        raise ApiError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [FullName, Metadata]")
    try:
        if type_name == CHANNEL:
            created: CustomChannel | ChannelMember = state.bus.channels.add_channel(
                full_name, str(metadata.get("label") or ""), str(metadata.get("channelType") or "")
            )
            state.bus.sync_channels()
        else:
            created = _add_member(state, version, full_name, metadata)
    except ChannelError as exc:
        raise ApiError(400, exc.code, exc.message, exc.fields) from exc
    return created.id


async def handle_record(request: web.Request) -> web.StreamResponse:
    """GET, PATCH (a member's filterExpression only) or DELETE .../tooling/sobjects/{type}/{id}."""
    state = request.app[STATE]
    type_name = _type(request)
    record_id = request.match_info["id"]
    rows = {row["Id"]: row for row in _rows(state, type_name, request[REST_CTX].base)}
    row = rows.get(record_id) or next((r for k, r in rows.items() if k[:15] == record_id[:15]), None)
    if row is None:
        raise not_found()
    if request.method == "GET":
        return json_response(row)
    if request.method == "PATCH":
        body = require_object(await read_json(request))
        patch_record(state, request[REST_CTX].version, type_name, row["Id"], body)
        return web.Response(status=204)
    state.bus.channels.remove(row["Id"])
    state.bus.sync_channels()
    return web.Response(status=204)


async def handle_query(request: web.Request) -> web.StreamResponse:
    """GET .../tooling/query?q=SELECT fields FROM type [WHERE condition] over the channel objects."""
    state = request.app[STATE]
    soql = request.query.get("q", "")
    match = _QUERY.match(soql)
    if match is None or match.group("type").lower() not in TYPES:
        raise ApiError(400, "MALFORMED_QUERY", f"unsupported Tooling query: {soql}")
    type_name = TYPES[match.group("type").lower()]
    rows = _rows(state, type_name, request[REST_CTX].base)
    names = {key.lower(): key for key in _fields(type_name)}
    wanted = [field.strip() for field in match.group("fields").split(",")]
    unknown = [field for field in wanted if field.lower() not in names]
    if unknown:
        raise ApiError(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{type_name}'")
    if match.group("where"):
        try:
            condition = parse_filter(match.group("where"), lambda name: names.get(name.lower()))
        except FilterError as exc:
            raise ApiError(400, "MALFORMED_QUERY", str(exc)) from exc
        rows = [row for row in rows if condition.matches({}, row)]
    records = [
        {"attributes": row["attributes"], **{names[f.lower()]: row[names[f.lower()]] for f in wanted}}
        for row in rows
    ]
    body = {
        "size": len(records),
        "totalSize": len(records),
        "done": True,
        "queryLocator": None,
        "entityTypeName": type_name,
        "records": records,
    }
    return json_response(body)


def _type(request: web.Request) -> str:
    type_name = TYPES.get(request.match_info["type"].lower())
    if type_name is None or float(request[REST_CTX].version) < _MIN_VERSION:
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
    return type_name


def patch_record(
    state: EmulatorState, version: str, type_name: str, record_id: str, body: dict[str, Any]
) -> None:
    """Change a member's filter expression; EventChannel and SelectedEntity can't be updated."""
    metadata = body.get("Metadata")
    if type_name != MEMBER or not isinstance(metadata, dict) or set(metadata) - {"filterExpression"}:
        raise ApiError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "only a member's filterExpression can change")
    filter_text = metadata.get("filterExpression")
    _check_filter_version(version, filter_text)
    try:
        changed = state.bus.channels.set_filter(
            record_id, str(filter_text) if filter_text else None, field_resolver(state)
        )
    except ChannelError as exc:
        raise ApiError(400, exc.code, exc.message, exc.fields) from exc
    if changed is None:
        raise not_found()


def _check_filter_version(version: str, filter_text: object) -> None:
    if filter_text is not None and float(version) < _MIN_FILTER_VERSION:
        raise ApiError(400, "INVALID_FIELD", "filterExpression: available in API version 56.0 and later")


def field_resolver(state: EmulatorState) -> Callable[[str, str], str | None]:
    """Canonical name of an entity's field, None when the entity has no such field."""

    def resolve_field(entity: str, name: str) -> str | None:
        obj = state.store.schema.get(entity)
        found = obj.field(name) if obj is not None else None
        return found.name if found is not None else None

    return resolve_field


def _add_member(
    state: EmulatorState, version: str, full_name: str, metadata: dict[str, Any]
) -> ChannelMember:
    filter_text = metadata.get("filterExpression")
    _check_filter_version(version, filter_text)
    enabled = {
        change_event_channel(entity)[len("/data/") :]: entity for entity in state.org.streaming.cdc_entities
    }
    return state.bus.channels.add_member(
        full_name,
        str(metadata.get("eventChannel") or ""),
        str(metadata.get("selectedEntity") or ""),
        str(filter_text) if filter_text else None,
        entity_of=enabled.get,
        resolve_field=field_resolver(state),
    )


def _fields(type_name: str) -> tuple[str, ...]:
    if type_name == CHANNEL:
        return ("Id", "DeveloperName", "MasterLabel", "ChannelType", "FullName", "Metadata")
    return (
        "Id",
        "DeveloperName",
        "EventChannel",
        "SelectedEntity",
        "FilterExpression",
        "FullName",
        "Metadata",
    )


def _rows(state: EmulatorState, type_name: str, base: str) -> list[dict[str, Any]]:
    """Every record of one channel object as the Tooling API renders it."""
    registry = state.bus.channels
    if type_name == CHANNEL:
        return [
            {
                "attributes": {"type": CHANNEL, "url": f"{base}/tooling/sobjects/{CHANNEL}/{c.id}"},
                "Id": c.id,
                "DeveloperName": c.full_name[: -len("__chn")],
                "MasterLabel": c.label,
                "ChannelType": "data",
                "FullName": c.full_name,
                "Metadata": {"channelType": "data", "label": c.label},
            }
            for c in registry.channels()
        ]
    rows = []
    for m in registry.members():
        channel = registry.channel(m.channel)
        rows.append(
            {
                "attributes": {"type": MEMBER, "url": f"{base}/tooling/sobjects/{MEMBER}/{m.id}"},
                "Id": m.id,
                "DeveloperName": m.full_name,
                "EventChannel": channel.id if channel is not None else STANDARD_CHANNEL,
                "SelectedEntity": m.selected_entity,
                "FilterExpression": m.filter_text,
                "FullName": m.full_name,
                "Metadata": {
                    "eventChannel": m.channel,
                    "selectedEntity": m.selected_entity,
                    "filterExpression": m.filter_text,
                },
            }
        )
    return rows
