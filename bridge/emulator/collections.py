"""sObject Collections (`/composite/sobjects`): up to 200 records a call, one transaction, ordered results.

Every documented form: create (POST), retrieve (GET `?ids=&fields=`, or POST `{ids, fields}` for up to
2,000 ids), update (PATCH), upsert (PATCH `/{SObject}/{ExternalIdField}`, API 46.0+), delete (DELETE
`?ids=&allOrNone=`). https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections.html
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.emulator.collections_wire import (
    COLLECTIONS_VERSION,
    MAX_CHUNKS,
    MAX_RETRIEVE,
    ROLLED_BACK,
    UPSERT_VERSION,
    check_size,
    failure,
    flag,
    require_version,
    retrieve_arguments,
    saved,
    too_many,
    valid_id,
)
from bridge.emulator.context import REST_CTX, RestContext, read_json, require_object
from bridge.emulator.contracts import ApiError
from bridge.emulator.faults import FaultRule
from bridge.emulator.rest import ID_IN_BODY, Reply, method_not_allowed, strip_attributes
from bridge.emulator.schema import FieldDef
from bridge.emulator.state import STATE, EmulatorState
from bridge.emulator.store import Txn
from bridge.emulator.store_rows import unique_key

PER_RECORD_FAULT = web.RequestKey("per_record_fault", FaultRule)

RecordOp = Callable[[Txn], dict[str, Any]]


class _RollBack(Exception):
    """Raised inside the transaction to undo an allOrNone call that had a failing record."""


@dataclass(frozen=True, slots=True)
class _Planned:
    """One record's operation, or the error that stops it before it runs."""

    known_id: str | None
    run: RecordOp | None = None
    error: ApiError | None = None
    key: str | None = None  # the External ID value an upsert matches on


class Collections:
    """Runs collection operations for one caller, inside `txn` when given (Composite), else its own."""

    def __init__(self, state: EmulatorState, ctx: RestContext, txn: Txn | None = None) -> None:
        self.state = state
        self.ctx = ctx
        self.txn = txn

    def dispatch(
        self,
        method: str,
        path: list[str],
        body: Any,
        query: Mapping[str, str],
        fault: FaultRule | None = None,
    ) -> Reply:
        """Route `/composite/sobjects[/{sobject}[/{field}]]` by method; 404 below the resource's version."""
        require_version(self.ctx.version, UPSERT_VERSION if len(path) == 2 else COLLECTIONS_VERSION)
        if len(path) == 1 and method in ("GET", "POST"):
            ids, fields = retrieve_arguments(method, body, query)
            return self.retrieve(path[0], ids, fields)
        if method == "DELETE" and not path:
            ids = [i for i in query.get("ids", "").split(",") if i]
            return self.run(self.plan_delete(ids), flag(query.get("allOrNone")), fault)
        if method in ("POST", "PATCH"):
            envelope = require_object(body)
            records = envelope.get("records")
            if not isinstance(records, list):
                raise ApiError(400, "JSON_PARSER_ERROR", "records: expected an array of sObjects")
            all_or_none = bool(envelope.get("allOrNone", False))
            if method == "POST" and not path:
                return self.run(self.plan_create(records), all_or_none, fault)
            if method == "PATCH" and not path:
                return self.run(self.plan_update(records), all_or_none, fault)
            if method == "PATCH" and len(path) == 2:
                return self.run(self.plan_upsert(path[0], path[1], records), all_or_none, fault)
        raise method_not_allowed(method)

    def plan_create(self, records: list[Any]) -> list[_Planned]:
        """One create per record; `attributes.type` names the object."""
        check_size(len(records))
        self._check_chunks(records)
        return [self._create_one(record) for record in records]

    def _create_one(self, record: Any) -> _Planned:
        try:
            sobject, fields = self._typed(record)
            if any(k.lower() == "id" for k in fields):
                raise ApiError(400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
        except ApiError as exc:
            return _Planned(None, error=exc)
        return _Planned(None, lambda txn: saved(txn.create(sobject, fields)))

    def plan_update(self, records: list[Any]) -> list[_Planned]:
        """One update per record; each carries its `Id`."""
        check_size(len(records))
        self._check_chunks(records)
        return [self._update_one(record) for record in records]

    def _update_one(self, record: Any) -> _Planned:
        raw_id = (
            next((v for k, v in record.items() if k.lower() == "id"), None)
            if isinstance(record, dict)
            else None
        )
        try:
            sobject, fields = self._typed(record)
            if not raw_id:
                raise ApiError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            record_id = valid_id(str(raw_id))
        except ApiError as exc:
            return _Planned(str(raw_id) if raw_id else None, error=exc)
        values = {k: v for k, v in fields.items() if k.lower() != "id"}
        return _Planned(record_id, lambda txn: saved(_update(txn, sobject, record_id, values)))

    def _check_chunks(self, records: list[Any]) -> None:
        """At most 10 chunks (runs of records of one type) a call, as the create page documents."""
        types = [self._type_of(record) for record in records]
        chunks = sum(1 for n, t in enumerate(types) if n == 0 or t != types[n - 1])
        if chunks > MAX_CHUNKS:
            raise ApiError(
                400,
                "EXCEEDED_MAX_TYPES_LIMIT",
                f"Cannot have more than {MAX_CHUNKS} chunks in a single operation. Please rearrange the"
                " data to reduce chunking.",
            )

    def _type_of(self, record: Any) -> str | None:
        attributes = record.get("attributes") if isinstance(record, dict) else None
        named = attributes.get("type") if isinstance(attributes, dict) else None
        return self.state.store.canonical_name(named) if isinstance(named, str) else None

    def plan_upsert(self, sobject: str, ext_field: str, records: list[Any]) -> list[_Planned]:
        """One upsert per record, matched on the External ID value each record carries.

        The URL's field must be an External ID field (never `Id`): else the whole call is refused. A
        record of another type, or without `attributes.type`, fails alone; so does every record whose
        External ID value another record of the call repeats.
        """
        check_size(len(records))
        name = self._object(sobject)
        field = self._external_id_field(name, ext_field)
        return _refuse_repeated_keys([self._upsert_one(name, field, record) for record in records], field)

    def _external_id_field(self, sobject: str, ext_field: str) -> FieldDef:
        obj = self.state.store.schema.get(sobject)
        field = obj.field(ext_field) if obj is not None else None
        if field is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {ext_field}",
            )
        if not field.external_id:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field name provided, {field.name} is not an External ID or indexed field for {sobject}",
                [field.name],
            )
        return field

    def _upsert_one(self, sobject: str, field: FieldDef, record: Any) -> _Planned:
        try:
            named, fields = self._typed(record)
            if named != sobject:
                raise ApiError(
                    400,
                    "INVALID_TYPE",
                    f"Record type {named} does not match the type {sobject} of this upsert request",
                )
            if any(k.lower() == "id" for k in fields):
                raise ApiError(400, "INVALID_FIELD", ID_IN_BODY)
            key = next((k for k in fields if k.lower() == field.name.lower()), None)
            if key is None or fields[key] in (None, ""):
                raise ApiError(400, "MISSING_ARGUMENT", f"{field.name} not specified", [field.name])
        except ApiError as exc:
            return _Planned(None, error=exc)
        value = str(fields[key])
        values = {k: v for k, v in fields.items() if k != key}
        ext_field = field.name

        def run(txn: Txn) -> dict[str, Any]:
            try:
                record_id, created = txn.upsert(sobject, ext_field, value, values)
            except ApiError as exc:
                if exc.status != 300:
                    raise
                message = f"{ext_field}: more than one record found for external id field: {exc.fields}"
                raise ApiError(400, "DUPLICATE_EXTERNAL_ID", message) from exc
            return {**saved(record_id), "created": created}

        return _Planned(None, run, key=value)

    def plan_delete(self, ids: list[str]) -> list[_Planned]:
        """One delete per id."""
        check_size(len(ids))
        planned: list[_Planned] = []
        for raw in ids:
            try:
                record_id = valid_id(raw)
            except ApiError as exc:
                planned.append(_Planned(raw, error=exc))
                continue
            planned.append(_Planned(record_id, _deleter(record_id)))
        return planned

    def run(self, planned: list[_Planned], all_or_none: bool, fault: FaultRule | None = None) -> Reply:
        """Run the planned records in one transaction; with allOrNone, any failure undoes them all."""
        if fault is not None:
            error = fault.api_error().record_error()
            return Reply(200, [failure(p.known_id, error) for p in planned])
        results: list[dict[str, Any]] = []
        try:
            with self._scope(all_or_none) as txn:
                results = self._apply(txn, planned)
                if all_or_none and not all(r["success"] for r in results):
                    raise _RollBack
        except _RollBack:
            results = [
                r if not r["success"] else failure(p.known_id, ROLLED_BACK)
                for p, r in zip(planned, results, strict=True)
            ]
        return Reply(200, results)

    def _scope(self, all_or_none: bool) -> AbstractContextManager[Txn]:
        if self.txn is None:
            return self.state.store.transaction(self.ctx.dml, all_or_none=all_or_none)
        return _within(self.txn)

    @staticmethod
    def _apply(txn: Txn, planned: list[_Planned]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for item in planned:
            if item.error is not None or item.run is None:
                error = item.error or ApiError(400, "UNKNOWN_EXCEPTION", "not executed")
                results.append(failure(item.known_id, error.record_error()))
                continue
            try:
                with txn.savepoint():
                    results.append(item.run(txn))
            except ApiError as exc:
                results.append(failure(item.known_id, exc.record_error()))
        return results

    def retrieve(self, sobject: str, ids: list[str], fields: list[str]) -> Reply:
        """The records in id order, null for an unknown or malformed id or one of another type.

        A field the object does not have answers 400 for the whole call, as Salesforce documents.
        """
        name = self._object(sobject)
        if not ids:
            raise ApiError(400, "MISSING_ARGUMENT", "The ids parameter is required", ["ids"])
        if not fields:
            raise ApiError(400, "MISSING_ARGUMENT", "The fields parameter is required", ["fields"])
        if len(ids) > MAX_RETRIEVE:
            raise too_many(len(ids), MAX_RETRIEVE)
        store, version = self.state.store, self.ctx.version
        columns = store.field_names(name, fields)
        found: list[Any] = []
        for raw in ids:
            try:
                found.append(store.get(name, valid_id(raw), columns, api_version=version))
            except ApiError:
                found.append(None)
        return Reply(200, found)

    def _typed(self, record: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(record, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "each record must be a JSON object")
        attributes = record.get("attributes") or {}
        sobject = attributes.get("type") if isinstance(attributes, dict) else None
        if not sobject:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        return self._object(str(sobject)), strip_attributes(record)

    def _object(self, sobject: str) -> str:
        name = self.state.store.canonical_name(sobject)
        if name is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        return name


@contextmanager
def _within(txn: Txn) -> Iterator[Txn]:
    """Join an outer transaction through a savepoint, so an allOrNone rollback undoes only this call."""
    with txn.savepoint():
        yield txn


def _deleter(record_id: str) -> RecordOp:
    return lambda txn: saved(_delete(txn, record_id))


def _update(txn: Txn, sobject: str, record_id: str, fields: dict[str, Any]) -> str:
    txn.update(sobject, record_id, fields)
    return record_id


def _delete(txn: Txn, record_id: str) -> str:
    txn.delete(record_id)
    return record_id


def _refuse_repeated_keys(planned: list[_Planned], field: FieldDef) -> list[_Planned]:
    """Fail every record whose External ID value another record of the same call also carries.

    Observed (Salesforce StackExchange 104048, 296121): DUPLICATE_VALUE "Duplicate external id
    specified: <value>" on the field, from the first occurrence on.
    """
    counts: dict[Any, int] = {}
    for item in planned:
        if item.key is not None:
            counts[unique_key(item.key)] = counts.get(unique_key(item.key), 0) + 1
    out: list[_Planned] = []
    for item in planned:
        if item.key is not None and counts[unique_key(item.key)] > 1:
            message = f"Duplicate external id specified: {item.key}"
            item = _Planned(None, error=ApiError(400, "DUPLICATE_VALUE", message, [field.name]))
        out.append(item)
    return out


async def handle_collections(request: web.Request) -> web.StreamResponse:
    """Every `/composite/sobjects[/...]` route."""
    path = [request.match_info[k] for k in ("sobject", "field") if k in request.match_info]
    body = await read_json(request) if request.method in ("POST", "PATCH") else None
    collections = Collections(request.app[STATE], request[REST_CTX])
    fault = request.get(PER_RECORD_FAULT)
    return collections.dispatch(request.method, path, body, request.query, fault).response()
