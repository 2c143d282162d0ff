"""sObject resources: create, read, update, delete, upsert and read/delete by External ID, describe.

`Operations` runs one resource operation and answers a `Reply`; the aiohttp handlers and the Composite
resource both go through it, so a composite subrequest behaves exactly like the same standalone call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from bridge.emulator.context import REST_CTX, RestContext, json_response, read_json, require_object
from bridge.emulator.contracts import ApiError
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store import Txn

T = TypeVar("T")
ID_IN_BODY = "The Id field should not be specified in the sobject data."
UPSERT_BODY_VERSION = 46.0  # from this API version an upsert that updates answers 200 with a body


@dataclass(frozen=True, slots=True)
class Reply:
    """An operation's HTTP answer: status and JSON body (None: no body)."""

    status: int
    body: Any = None
    headers: dict[str, str] | None = None

    def response(self) -> web.Response:
        """As an aiohttp response."""
        if self.body is None:
            return web.Response(status=self.status, headers=self.headers)
        return json_response(self.body, self.status, self.headers)


def not_found() -> ApiError:
    """Salesforce's 404 for an unknown resource or record."""
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def success(record_id: str, created: bool | None = None) -> dict[str, Any]:
    """The `{id, success, errors[, created]}` save result."""
    body: dict[str, Any] = {"id": record_id, "success": True, "errors": []}
    if created is not None:
        body["created"] = created
    return body


def strip_attributes(fields: dict[str, Any]) -> dict[str, Any]:
    """The field map without its `attributes` member."""
    return {k: v for k, v in fields.items() if k != "attributes"}


class Operations:
    """sObject operations for one caller; writes join `txn` when given, else run in their own transaction."""

    def __init__(self, state: EmulatorState, ctx: RestContext, txn: Txn | None = None) -> None:
        self.state = state
        self.ctx = ctx
        self.txn = txn

    @contextmanager
    def _transaction(self) -> Iterator[Txn]:
        if self.txn is not None:
            yield self.txn
        else:
            with self.state.store.transaction(self.ctx.dml) as txn:
                yield txn

    def _write(self, work: Callable[[Txn], T]) -> T:
        with self._transaction() as txn:
            return work(txn)

    def object_name(self, sobject: str) -> str:
        """The canonical name of an sObject type; 404 NOT_FOUND when the org has no such object."""
        name = self.state.store.canonical_name(sobject)
        if name is None:
            raise not_found()
        return name

    def create(self, sobject: str, body: Any) -> Reply:
        """POST /sobjects/{sobject}: 201 with the new id."""
        name = self.object_name(sobject)
        fields = strip_attributes(require_object(body))
        new_id = self._write(lambda txn: txn.create(name, fields))
        return Reply(201, success(new_id))

    def read(self, sobject: str, record_id: str, fields: list[str] | None = None) -> Reply:
        """GET /sobjects/{sobject}/{id}: the record with `attributes`."""
        name = self.object_name(sobject)
        record = self.state.store.get(name, record_id, fields, api_version=self.ctx.version)
        return Reply(200, record)

    def update(self, sobject: str, record_id: str, body: Any) -> Reply:
        """PATCH /sobjects/{sobject}/{id}: 204."""
        name = self.object_name(sobject)
        fields = strip_attributes(require_object(body))
        target = record_id
        self._write(lambda txn: txn.update(name, target, fields))
        return Reply(204)

    def delete(self, sobject: str, record_id: str) -> Reply:
        """DELETE /sobjects/{sobject}/{id}: 204, the record goes to the recycle bin."""
        self.object_name(sobject)
        target = record_id
        self._write(lambda txn: txn.delete(target))
        return Reply(204)

    def upsert(self, sobject: str, ext_field: str, value: str, body: Any) -> Reply:
        """PATCH /sobjects/{sobject}/{field}/{value}: 201 created, 200 (204 before v46) updated."""
        name = self.object_name(sobject)
        fields = strip_attributes(require_object(body))
        check_upsert_body(fields, ext_field)
        try:
            record_id, created = self._write(lambda txn: txn.upsert(name, ext_field, value, fields))
        except ApiError as exc:
            if exc.status != 300:
                raise
            return Reply(300, [f"{self.ctx.base}/sobjects/{name}/{rid}" for rid in exc.fields])
        if created:
            return Reply(201, success(record_id, created=True))
        if float(self.ctx.version) < UPSERT_BODY_VERSION:
            return Reply(204)
        return Reply(200, success(record_id, created=False))

    def read_by_external_id(
        self, sobject: str, ext_field: str, value: str, fields: list[str] | None
    ) -> Reply:
        """GET /sobjects/{sobject}/{field}/{value}."""
        name = self.object_name(sobject)
        record = self.state.store.get_by_external_id(
            name, ext_field, value, fields=fields, api_version=self.ctx.version
        )
        return Reply(200, record)

    def delete_by_external_id(self, sobject: str, ext_field: str, value: str) -> Reply:
        """DELETE /sobjects/{sobject}/{field}/{value}: 204."""
        name = self.object_name(sobject)
        record = self.state.store.get_by_external_id(
            name, ext_field, value, fields=["Id"], api_version=self.ctx.version
        )
        target = str(record["Id"])
        self._write(lambda txn: txn.delete(target))
        return Reply(204)

    def basic_info(self, sobject: str) -> Reply:
        """GET /sobjects/{sobject}: the object's short description and recent items."""
        name = self.object_name(sobject)
        described = self.state.store.describe(name, self.ctx.version)
        short_keys = ("name", "label", "labelPlural", "keyPrefix", "custom", "createable", "updateable")
        object_describe = {k: described[k] for k in short_keys if k in described}
        object_describe["urls"] = described.get("urls", {})
        return Reply(200, {"objectDescribe": object_describe, "recentItems": []})

    def describe(self, sobject: str) -> Reply:
        """GET /sobjects/{sobject}/describe."""
        name = self.object_name(sobject)
        return Reply(200, self.state.store.describe(name, self.ctx.version))

    def describe_global(self) -> Reply:
        """GET /sobjects: describeGlobal."""
        return Reply(200, self.state.store.describe_global(self.ctx.version))

    def query(self, soql: str | None, include_deleted: bool = False) -> Reply:
        """GET /query?q= (and /queryAll): the first batch, with `nextRecordsUrl` while more remain."""
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        result = self.state.store.query(soql, include_deleted=include_deleted, api_version=self.ctx.version)
        page = self.state.cursors.first_page(
            result.records, result.total_size, self.ctx.batch_size, self.ctx.base
        )
        return Reply(200, page)

    def query_more(self, locator: str) -> Reply:
        """GET /query/{locator}-{offset}: the next batch of an open query."""
        return Reply(200, self.state.cursors.next_page(locator, self.ctx.base))

    def by_path(
        self, sobject: str, tail: list[str], method: str, body: Any, fields: list[str] | None
    ) -> Reply:
        """Dispatch `/sobjects/{sobject}/...` by method and path shape (shared with Composite)."""
        if not tail:
            if method == "POST":
                return self.create(sobject, body)
            if method == "GET":
                return self.basic_info(sobject)
        elif len(tail) == 1 and tail[0] == "describe" and method == "GET":
            return self.describe(sobject)
        elif len(tail) == 1:
            return self._by_id(sobject, tail[0], method, body, fields)
        elif len(tail) == 2:
            return self._by_external_id(sobject, tail[0], tail[1], method, body, fields)
        raise method_not_allowed(method)

    def _by_id(self, sobject: str, record_id: str, method: str, body: Any, fields: list[str] | None) -> Reply:
        if method == "GET":
            return self.read(sobject, record_id, fields)
        if method == "PATCH":
            return self.update(sobject, record_id, body)
        if method == "DELETE":
            return self.delete(sobject, record_id)
        if method == "POST" and record_id.lower() == "id":
            return self.create(sobject, body)
        raise method_not_allowed(method)

    def _by_external_id(
        self, sobject: str, field: str, value: str, method: str, body: Any, fields: list[str] | None
    ) -> Reply:
        if method == "PATCH":
            return self.upsert(sobject, field, value, body)
        if method == "GET":
            return self.read_by_external_id(sobject, field, value, fields)
        if method == "DELETE":
            return self.delete_by_external_id(sobject, field, value)
        raise method_not_allowed(method)


def method_not_allowed(method: str) -> ApiError:
    """405 for a method the resource does not take."""
    return ApiError(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE"
    )


def check_upsert_body(fields: dict[str, Any], ext_field: str) -> None:
    """An upsert body may carry neither `Id` nor the External ID field named in the URL."""
    for key in fields:
        if key.lower() == "id":
            raise ApiError(400, "INVALID_FIELD", ID_IN_BODY)
        if key.lower() == ext_field.lower():
            raise ApiError(
                400, "INVALID_FIELD", f"{ext_field} is specified in the URL and in the request body", [key]
            )


def requested_fields(request: web.Request) -> list[str] | None:
    """The `?fields=A,B` list, or None."""
    raw = request.query.get("fields")
    return [f.strip() for f in raw.split(",") if f.strip()] if raw else None


async def handle_sobject(request: web.Request) -> web.StreamResponse:
    """Every `/sobjects/{sobject}[/...]` route."""
    info = request.match_info
    tail = [info[k] for k in ("id", "field", "value") if k in info]
    if request.path.rstrip("/").endswith("/describe") and not tail:
        tail = ["describe"]
    body = await read_json(request) if request.method in ("POST", "PATCH") else None
    ops = Operations(request.app[STATE], request[REST_CTX])
    reply = ops.by_path(info["sobject"], tail, request.method, body, requested_fields(request))
    return reply.response()


async def handle_describe_global(request: web.Request) -> web.StreamResponse:
    """GET /sobjects."""
    return Operations(request.app[STATE], request[REST_CTX]).describe_global().response()


async def handle_query(request: web.Request) -> web.StreamResponse:
    """GET /query?q= and /queryAll?q=."""
    include_deleted = request.path.rstrip("/").endswith("queryAll")
    ops = Operations(request.app[STATE], request[REST_CTX])
    return ops.query(request.query.get("q"), include_deleted).response()


async def handle_query_more(request: web.Request) -> web.StreamResponse:
    """GET /query/{locator} and /queryAll/{locator}."""
    ops = Operations(request.app[STATE], request[REST_CTX])
    return ops.query_more(request.match_info["locator"]).response()
