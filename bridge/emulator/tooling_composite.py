"""The Tooling API's Composite resource: `POST .../tooling/composite` runs a series of Tooling requests in one
call, counted as one API request (api_tooling: "Improve Performance with the Composite Resource").

The envelope is the REST Composite's (`compositeRequest` of at most 25 subrequests, `referenceId`,
`@{ref.field}` references to earlier results, `allOrNone`). Inside, the emulator serves what it serves
outside for the channel objects: creating a channel or a member, and changing a member's filter. Any other
subrequest is answered 404 NOT_FOUND: a tool must not count on more than it was shown to work with. With
`allOrNone`, a failure undoes the records created and the filters changed before it, and every other
subrequest is answered PROCESSING_HALTED.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.emulator.composite import Subrequest, Unresolved, halted, parse_envelope, substitute
from bridge.emulator.context import REST_CTX, read_json, require_object
from bridge.emulator.contracts import ApiError
from bridge.emulator.rest import Reply
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store_txn import not_found
from bridge.emulator.tooling import TYPES, create_record, field_resolver, patch_record

_MIN_VERSION = 40.0
_SOBJECT = re.compile(
    r"^/services/data/v(?P<version>\d+\.\d)/tooling/sobjects/(?P<type>\w+)(?:/(?P<id>\w+))?/?$"
)
Undo = Callable[[], None]


async def handle_tooling_composite(request: web.Request) -> web.StreamResponse:
    """POST .../tooling/composite."""
    if float(request[REST_CTX].version) < _MIN_VERSION:
        raise not_found()
    all_or_none, subrequests = parse_envelope(await read_json(request))
    state = request.app[STATE]
    undo: list[Undo] = []
    responses = _each(state, subrequests, undo, all_or_none)
    if all_or_none and any(r["httpStatusCode"] >= 400 for r in responses):
        for step in reversed(undo):
            step()
        state.bus.sync_channels()
        responses = [
            r if r["httpStatusCode"] >= 400 else {**halted(), "referenceId": r["referenceId"]}
            for r in responses
        ]
    return Reply(200, {"compositeResponse": responses}).response()


def _each(
    state: EmulatorState, subrequests: list[Subrequest], undo: list[Undo], all_or_none: bool
) -> list[dict[str, Any]]:
    results: dict[str, Any] = {}
    responses: list[dict[str, Any]] = []
    failed = False
    for sub in subrequests:
        if failed and all_or_none:
            responses.append({**halted(), "referenceId": sub.reference_id})
            continue
        try:
            url, body = substitute(sub.url, results), substitute(sub.body, results)
        except Unresolved as exc:
            message = f"Invalid reference specified. No value for {exc.expression} found in {exc.reference}."
            responses.append({**halted(message), "referenceId": sub.reference_id})
            failed = True
            continue
        try:
            status, reply = _one(state, sub.method, str(url), body, undo)
        except ApiError as exc:
            status, reply = exc.status, exc.body()
        responses.append(
            {"body": reply, "httpHeaders": {}, "httpStatusCode": status, "referenceId": sub.reference_id}
        )
        if status < 400:
            results[sub.reference_id] = reply
        else:
            failed = True
    return responses


def _one(state: EmulatorState, method: str, url: str, body: Any, undo: list[Undo]) -> tuple[int, Any]:
    """Run one subrequest; (status, body). ApiError when refused."""
    match = _SOBJECT.match(url.split("?")[0])
    if match is None or match.group("version") not in state.org.api_versions:
        raise not_found()
    type_name = TYPES.get(match.group("type").lower())
    version, record_id = match.group("version"), match.group("id")
    if type_name is None or float(version) < _MIN_VERSION:
        raise not_found()
    registry = state.bus.channels
    if method == "POST" and record_id is None:
        created = create_record(state, version, type_name, require_object(body))

        def uncreate() -> None:
            registry.remove(created)

        undo.append(uncreate)
        return 201, {"id": created, "success": True, "errors": [], "warnings": [], "infos": []}
    if method == "PATCH" and record_id is not None:
        member = next((m for m in registry.members() if m.id == record_id), None)
        if member is None:
            raise not_found()
        member_id, before = member.id, member.filter_text
        patch_record(state, version, type_name, member_id, require_object(body))

        def unpatch() -> None:
            registry.set_filter(member_id, before, field_resolver(state))

        undo.append(unpatch)
        return 204, None
    raise not_found()


def register(app: web.Application, prefix: str) -> None:
    """Add the route under `prefix` (`/services/data/{version}`)."""
    app.router.add_post(prefix + "/tooling/composite", handle_tooling_composite)
