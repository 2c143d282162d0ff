"""The Composite resource (`POST /composite`): up to 25 dependent subrequests, `@{ref.field}`, allOrNone.

https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-composite-post.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from bridge.emulator.collections import Collections
from bridge.emulator.context import REST_CTX, RestContext, read_json, require_object
from bridge.emulator.contracts import ApiError
from bridge.emulator.rest import Operations, Reply, not_found
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store import Txn

MAX_SUBREQUESTS = 25
MAX_HEAVY_SUBREQUESTS = 5  # "up to 5 of these subrequests can be sObject Collections or query operations"
_HEAVY = re.compile(r"^/services/data/v\d+\.\d/(?:composite/sobjects|query|queryAll)(?:[/?]|$)")
_REFERENCE = re.compile(r"@\{([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])+)\}")
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_REF_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")
_FORBIDDEN_HEADERS = frozenset({"accept", "authorization", "content-type"})
HALTED_MESSAGE = "The transaction was rolled back since another operation in the same transaction failed."


@dataclass(frozen=True, slots=True)
class Subrequest:
    """One validated entry of `compositeRequest`."""

    method: str
    url: str
    reference_id: str
    body: Any


class _Halt(Exception):
    """Raised inside the allOrNone transaction to undo every subrequest."""


class Unresolved(Exception):
    """A `@{ref...}` that names a failed, later or missing result."""

    def __init__(self, expression: str, reference: str) -> None:
        super().__init__(expression)
        self.expression = expression
        self.reference = reference


def parse_envelope(envelope: Any) -> tuple[bool, list[Subrequest]]:
    """(allOrNone, subrequests); 400 for a malformed envelope, before anything runs."""
    body = require_object(envelope)
    raw = body.get("compositeRequest")
    if not isinstance(raw, list) or not raw:
        raise ApiError(
            400, "JSON_PARSER_ERROR", "compositeRequest: expected a non-empty array of subrequests"
        )
    if len(raw) > MAX_SUBREQUESTS:
        raise ApiError(
            400, "LIMIT_EXCEEDED", f"Limit Exceeded: at most {MAX_SUBREQUESTS} subrequests allowed"
        )
    seen: set[str] = set()
    subrequests = [_subrequest(item, seen) for item in raw]
    heavy = sum(bool(_HEAVY.match(sub.url)) for sub in subrequests)
    if heavy > MAX_HEAVY_SUBREQUESTS:
        raise ApiError(
            400,
            "LIMIT_EXCEEDED",
            f"Limit Exceeded: at most {MAX_HEAVY_SUBREQUESTS} sObject Collections or query subrequests"
            f" allowed ({heavy} sent)",
        )
    return bool(body.get("allOrNone", False)), subrequests


def _subrequest(item: Any, seen: set[str]) -> Subrequest:
    entry = require_object(item, "subrequest")
    missing = [k for k in ("method", "url", "referenceId") if not entry.get(k)]
    if missing:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Required fields are missing: {missing}")
    reference_id = str(entry["referenceId"])
    if not _REF_ID.match(reference_id):
        raise ApiError(400, "INVALID_INPUT", f"Invalid referenceId: {reference_id}")
    if reference_id in seen:
        raise ApiError(400, "INVALID_INPUT", f"Duplicate referenceId provided in the request: {reference_id}")
    seen.add(reference_id)
    headers = entry.get("httpHeaders") or {}
    if not isinstance(headers, dict) or any(h.lower() in _FORBIDDEN_HEADERS for h in headers):
        raise ApiError(400, "INVALID_INPUT", "Subrequests may not set Accept, Authorization or Content-Type")
    return Subrequest(str(entry["method"]).upper(), str(entry["url"]), reference_id, entry.get("body"))


def resolve(path: str, results: Mapping[str, Any]) -> Any:
    """The value of `ref.field[0].x` among earlier successful results; Unresolved when absent."""
    name, _, _ = path.partition(".")
    name = name.partition("[")[0]
    if name not in results:
        raise Unresolved(path, name)
    value: Any = results[name]
    for key, index in _PATH_PART.findall(path[len(name) :]):
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            raise Unresolved(path, name)
    return value


def substitute(value: Any, results: Mapping[str, Any]) -> Any:
    """Replace every `@{...}` in strings of a JSON value; a string that is one reference keeps its type."""
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return resolve(whole.group(1) + whole.group(2), results)
        return _REFERENCE.sub(lambda m: _text(resolve(m.group(1) + m.group(2), results)), value)
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def halted(message: str = HALTED_MESSAGE) -> dict[str, Any]:
    """A PROCESSING_HALTED subresponse."""
    return _subresponse(Reply(400, [{"errorCode": "PROCESSING_HALTED", "message": message}]), None)


def _subresponse(reply: Reply, reference_id: str | None) -> dict[str, Any]:
    return {
        "body": reply.body,
        "httpHeaders": reply.headers or {},
        "httpStatusCode": reply.status,
        "referenceId": reference_id,
    }


class Composite:
    """Runs one composite request for one caller."""

    def __init__(self, state: EmulatorState, ctx: RestContext) -> None:
        self.state = state
        self.ctx = ctx

    def run(self, all_or_none: bool, subrequests: list[Subrequest]) -> dict[str, Any]:
        """The `compositeResponse` for the subrequests, in order."""
        if not all_or_none:
            return {"compositeResponse": self._each(subrequests, None)}
        responses: list[dict[str, Any]] = []
        try:
            with self.state.store.transaction(self.ctx.dml) as txn:
                responses = self._each(subrequests, txn)
                if any(r["httpStatusCode"] >= 400 for r in responses):
                    raise _Halt
        except _Halt:
            responses = [self._after_rollback(r) for r in responses]
        return {"compositeResponse": responses}

    @staticmethod
    def _after_rollback(response: dict[str, Any]) -> dict[str, Any]:
        if response["httpStatusCode"] >= 400:
            return response
        return {**halted(), "referenceId": response["referenceId"]}

    def _each(self, subrequests: list[Subrequest], txn: Txn | None) -> list[dict[str, Any]]:
        results: dict[str, Any] = {}
        responses: list[dict[str, Any]] = []
        failed = False
        for sub in subrequests:
            if failed and txn is not None:
                responses.append({**halted(), "referenceId": sub.reference_id})
                continue
            response = self._one(sub, results, txn)
            responses.append(response)
            if response["httpStatusCode"] < 400:
                results[sub.reference_id] = response["body"]
            else:
                failed = True
        return responses

    def _one(self, sub: Subrequest, results: Mapping[str, Any], txn: Txn | None) -> dict[str, Any]:
        try:
            url = substitute(sub.url, results)
            body = substitute(sub.body, results)
        except Unresolved as exc:
            message = f"Invalid reference specified. No value for {exc.expression} found in {exc.reference}."
            return {**halted(message), "referenceId": sub.reference_id}
        try:
            with _savepoint(txn):
                reply = self._dispatch(sub.method, str(url), body, txn)
        except ApiError as exc:
            reply = Reply(exc.status, exc.body())
        return _subresponse(reply, sub.reference_id)

    def _dispatch(self, method: str, url: str, body: Any, txn: Txn | None) -> Reply:
        parts = urlsplit(url)
        match = _VERSIONED.match(parts.path)
        if match is None or match.group(1) not in self.state.org.api_versions:
            raise not_found()
        ctx = self.ctx.with_version(match.group(1))
        segments = [unquote(p) for p in (match.group(2) or "").split("/") if p]
        query = dict(parse_qsl(parts.query))
        if segments[:1] == ["sobjects"] and len(segments) >= 2:
            reply = Operations(self.state, ctx, txn).by_path(
                segments[1], segments[2:], method, body, _fields(query)
            )
            return _with_location(reply, method, self.state.store.canonical_name(segments[1]), ctx)
        if segments[:2] == ["composite", "sobjects"]:
            return Collections(self.state, ctx, txn).dispatch(method, segments[2:], body, query)
        if segments[:1] in (["query"], ["queryAll"]) and method == "GET":
            ops = Operations(self.state, ctx, txn)
            if len(segments) == 2:
                return ops.query_more(segments[1])
            return ops.query(query.get("q"), include_deleted=segments[0] == "queryAll")
        raise not_found()


def _with_location(reply: Reply, method: str, sobject: str | None, ctx: RestContext) -> Reply:
    """A create's `Location` header, naming the object by its canonical spelling."""
    if method == "POST" and reply.status == 201 and isinstance(reply.body, dict) and sobject:
        location = f"{ctx.base}/sobjects/{sobject}/{reply.body['id']}"
        return Reply(reply.status, reply.body, {"Location": location})
    return reply


def _fields(query: Mapping[str, str]) -> list[str] | None:
    raw = query.get("fields")
    return [f for f in raw.split(",") if f] if raw else None


@contextmanager
def _savepoint(txn: Txn | None) -> Iterator[None]:
    """A failing subrequest inside an allOrNone transaction undoes only its own partial work."""
    if txn is None:
        yield
    else:
        with txn.savepoint():
            yield


async def handle_composite(request: web.Request) -> web.StreamResponse:
    """POST /composite."""
    all_or_none, subrequests = parse_envelope(await read_json(request))
    composite = Composite(request.app[STATE], request[REST_CTX])
    return Reply(200, composite.run(all_or_none, subrequests)).response()
