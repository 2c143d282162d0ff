"""One Salesforce DML transaction on the emulated org: create, update, upsert, delete, undelete."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.emulator.contracts import ApiError, DmlContext
from bridge.emulator.schema import ObjectDef, Schema
from bridge.emulator.store_related import cascade_targets, check_invitee_caps
from bridge.emulator.store_rows import Row, RowTable
from bridge.emulator.validation import (
    EventRules,
    bad_type,
    canonical_id,
    coerce,
    derive_event,
    full_name,
    render_cdc,
    required_missing,
)

# Never part of a change event body (reference §5.2); derived compound names are left out too.
_CDC_SKIP = frozenset({"Id", "IsDeleted", "SystemModstamp"})
_PERSON_OBJECTS = frozenset({"User", "Contact", "Lead"})


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A change event of the transaction, before it gets its transaction key and sequence number."""

    entity: str
    change_type: str
    record_id: str
    fields: Mapping[str, Any]
    changed_fields: tuple[str, ...]
    snapshot: Mapping[str, Any] = field(default_factory=dict)  # every rendered value, for channel filters


def not_found() -> ApiError:
    """The 404 Salesforce answers for a missing record or resource."""
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def entity_deleted(status: int = 404, fields: tuple[str, ...] = ()) -> ApiError:
    """ENTITY_IS_DELETED: the record is in the recycle bin."""
    return ApiError(status, "ENTITY_IS_DELETED", "entity is deleted", fields)


def converted_lead(fields: list[str]) -> ApiError:
    """CANNOT_UPDATE_CONVERTED_LEAD: a converted Lead can be neither changed nor referenced."""
    return ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", fields)


def normalize_id(record_id: str) -> str:
    """An 18-character id, or ApiError MALFORMED_ID."""
    try:
        return canonical_id(record_id)
    except (ValueError, AttributeError, TypeError) as exc:
        raise ApiError(400, "MALFORMED_ID", f"malformed id {record_id}") from exc


class Txn:
    """The DML of one transaction; OrgStore.transaction() commits or rolls it back."""

    def __init__(
        self,
        table: RowTable,
        schema: Schema,
        rules: EventRules,
        ctx: DmlContext,
        now: datetime,
        new_id: Callable[[str], str],
    ) -> None:
        self._table, self._schema, self._rules, self.ctx, self.now = table, schema, rules, ctx, now
        self._new_id = new_id
        self.undo: list[tuple[str, Row | None]] = []
        self.changes: list[PendingChange] = []

    # -- public DML -------------------------------------------------------------------------------------

    def create(self, sobject: str, fields: Mapping[str, Any]) -> str:
        """Insert one record; returns its 18-character id."""
        obj = self._object(sobject)
        given = self.coerce_input(obj, fields, creating=True)
        return self.insert(obj, given, self._new_id(obj.prefix))

    def update(self, sobject: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Change fields of one live record."""
        obj = self._object(sobject)
        row = self._live(normalize_id(record_id), obj)
        if row.values.get("IsConverted") and obj.name == "Lead":
            raise converted_lead(["Id"])
        given = self.coerce_input(obj, {k: v for k, v in fields.items() if k.lower() != "id"}, creating=False)
        self.apply(row, given)

    def upsert(self, sobject: str, ext_field: str, value: str, fields: Mapping[str, Any]) -> tuple[str, bool]:
        """Update the record whose External ID `ext_field` equals `value`, or create it: (id, created)."""
        obj = self._object(sobject)
        f = obj.field(ext_field)
        if f is None or not (f.external_id or f.unique or f.type == "id"):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {ext_field}",
            )
        body = {k: v for k, v in fields.items() if k.lower() != f.name.lower()}
        if f.type == "id":
            return self._upsert_by_id(obj, value, body)
        matches = self._table.matching(obj.name, f.name, coerce(f, value))
        if len(matches) > 1:
            raise ApiError(
                300, "MULTIPLE_CHOICES", f"{f.name} matches {len(matches)} records", sorted(matches)
            )
        if matches:
            self.update(obj.name, next(iter(matches)), body)
            return next(iter(matches)), False
        return self.create(obj.name, {**body, f.name: value}), True

    def delete(self, record_id: str) -> None:
        """Move a record, and what Salesforce deletes with it, to the recycle bin."""
        rid = normalize_id(record_id)
        row = self._table.get(rid)
        if row is None:
            raise not_found()
        if row.deleted:
            raise entity_deleted()
        if row.sobject == "User":
            raise ApiError(400, "DELETE_FAILED", "You cannot delete a user; deactivate it instead")
        for victim in [row, *cascade_targets(self._table, row)]:
            gone = victim.copy()
            gone.deleted, gone.cascade_root = True, rid
            gone.values.update(IsDeleted=True, SystemModstamp=self.now)
            self.write(gone)
            self._change(gone, "DELETE", {}, ())

    def undelete(self, record_id: str) -> None:
        """Restore a record from the recycle bin with everything its delete took."""
        rid = normalize_id(record_id)
        row = self._table.get(rid)
        if row is None:
            raise not_found()
        if not row.deleted:
            raise ApiError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin")
        victims = {r.id: r for r in self._table.cascaded_by(rid) if r.deleted}
        victims[rid] = row
        for victim in [row, *(v for k, v in victims.items() if k != rid)]:
            back = victim.copy()
            back.deleted, back.cascade_root = False, None
            back.values.update(IsDeleted=False, SystemModstamp=self.now)
            self._check_unique(self._schema_obj(back), back.values, back.id)
            self.write(back)
            self._change(back, "UNDELETE", _body(back.values), ())

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo everything done inside the block when it raises (then re-raise)."""
        mark_undo, mark_changes = len(self.undo), len(self.changes)
        try:
            yield
        except BaseException:
            self.rollback(mark_undo)
            del self.changes[mark_changes:]
            raise

    # -- building blocks also used by lead conversion -----------------------------------------------------

    def insert(self, obj: ObjectDef, given: dict[str, Any], record_id: str) -> str:
        """Validate and store a new record whose input is already coerced."""
        values = self._defaults(obj)
        values.update(given)
        values.update(
            Id=record_id,
            IsDeleted=False,
            CreatedDate=self.now,
            CreatedById=self.ctx.user_id,
            LastModifiedDate=self.now,
            LastModifiedById=self.ctx.user_id,
            SystemModstamp=self.now,
        )
        self._validate(obj, values, set(given), None)
        row = Row(obj.name, values)
        self.write(row)
        self._change(row, "CREATE", _body(values), ())
        return record_id

    def apply(self, row: Row, given: Mapping[str, Any], *, emit: bool = True) -> None:
        """Validate and store changed fields of a live row; emits an UPDATE change event when `emit`."""
        obj = self._schema_obj(row)
        values = {**row.values, **given}
        self._validate(obj, values, set(given), row.id)
        # An update that changes no value is still a save: Salesforce stamps it and publishes an UPDATE.
        changed = [k for k, v in values.items() if row.values.get(k) != v]
        values.update(LastModifiedDate=self.now, LastModifiedById=self.ctx.user_id, SystemModstamp=self.now)
        new = Row(row.sobject, values)
        self.write(new)
        if emit:
            changed += ["LastModifiedDate"]
            if row.values.get("LastModifiedById") != self.ctx.user_id:
                changed += ["LastModifiedById"]
            self._change(new, "UPDATE", {k: render_cdc(values[k]) for k in changed}, tuple(changed))

    def write(self, row: Row) -> None:
        """Store a row, remembering what it replaced for rollback."""
        self.undo.append((row.id, self._table.put(row)))

    def rollback(self, mark: int = 0) -> None:
        """Undo every write after position `mark` of the undo log."""
        while len(self.undo) > mark:
            record_id, old = self.undo.pop()
            if old is None:
                self._table.remove(record_id)
            else:
                self._table.put(old)

    def live(self, record_id: str, sobject: str) -> Row:
        """The live row `record_id` of object `sobject`, or ApiError."""
        return self._live(normalize_id(record_id), self._object(sobject))

    def object(self, sobject: str) -> ObjectDef:
        """The object definition named `sobject`, or 404 NOT_FOUND."""
        return self._object(sobject)

    def new_id(self, prefix: str) -> str:
        """A fresh 18-character id with key prefix `prefix`."""
        return self._new_id(prefix)

    def referrers(self, record_id: str) -> list[Row]:
        """Rows whose lookups point at `record_id`."""
        return self._table.referrers(record_id)

    # -- internals -------------------------------------------------------------------------------------

    def _object(self, sobject: str) -> ObjectDef:
        obj = self._schema.get(sobject)
        if obj is None:
            raise not_found()
        return obj

    def _schema_obj(self, row: Row) -> ObjectDef:
        return self._object(row.sobject)

    def _live(self, rid: str, obj: ObjectDef) -> Row:
        row = self._table.get(rid)
        if row is None or row.sobject != obj.name:
            raise not_found()
        if row.deleted:
            raise entity_deleted()
        return row

    def _upsert_by_id(self, obj: ObjectDef, value: str, body: Mapping[str, Any]) -> tuple[str, bool]:
        if not value:
            return self.create(obj.name, body), True
        self.update(obj.name, value, body)
        return normalize_id(value), False

    def coerce_input(self, obj: ObjectDef, fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
        """Input field map -> canonical names and stored values; INVALID_FIELD / read-only errors."""
        out: dict[str, Any] = {}
        for key, raw in fields.items():
            if key == "attributes":
                continue
            f = obj.field(key)
            if f is None:
                raise ApiError(
                    400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [key]
                )
            if not (f.createable if creating else f.updateable):
                raise ApiError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {f.name}. Please check the security settings of this"
                    " field and verify that it is read/write for your profile or permission set.",
                    [f.name],
                )
            out[f.name] = coerce(f, raw)
        return out

    def _defaults(self, obj: ObjectDef) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in obj.fields.values():
            if f.default == "$user":
                values[f.name] = self.ctx.user_id
            elif f.default is not None:
                values[f.name] = f.default
            elif f.type == "boolean":
                values[f.name] = False
        return values

    def _validate(self, obj: ObjectDef, values: dict[str, Any], given: set[str], own_id: str | None) -> None:
        """Every rule for a record about to be stored; fills derived fields in `values`."""
        if obj.name in _PERSON_OBJECTS:
            values["Name"] = full_name(values)
        error = required_missing(obj, values)
        if error is not None:
            raise error
        for name in given | ({"OwnerId"} if own_id is None else set()):
            f = obj.field(name)
            if f is not None and f.type == "reference" and values.get(f.name) is not None:
                self._check_lookup(obj, f.name, values[f.name])
        if obj.name == "Event":
            derive_event(values, given, self._rules)
            values["AccountId"] = self._event_account(values)
        elif obj.name == "EventRelation" and own_id is None:
            check_invitee_caps(self._table, values)
        self._check_unique(obj, values, own_id)

    def _check_lookup(self, obj: ObjectDef, field_name: str, target_id: str) -> None:
        f = obj.fields[field_name.lower()]
        target_obj = self._schema.for_id(target_id)
        if target_obj is None or target_obj.name not in f.reference_to:
            raise bad_type(f, target_id)
        target = self._table.get(target_id)
        if target is None:
            raise ApiError(
                400,
                "INVALID_CROSS_REFERENCE_KEY",
                f"{f.id_label}: invalid cross reference id",
                [f.name],
            )
        if target.deleted:
            raise entity_deleted(400, (f.name,))
        if target.sobject == "Lead" and target.values.get("IsConverted"):
            raise converted_lead([f.name])
        if field_name == "OwnerId" and not target.values.get("IsActive"):
            raise ApiError(
                400,
                "INACTIVE_OWNER_OR_USER",
                f"operation performed with inactive user [{target_id}] as owner of {obj.name.lower()}",
                ["OwnerId"],
            )

    def _event_account(self, values: Mapping[str, Any]) -> str | None:
        for key in ("WhatId", "WhoId"):
            target = self._table.get(values.get(key) or "")
            if target is None:
                continue
            if target.sobject == "Account":
                return target.id
            account = target.values.get("AccountId")
            if account:
                return str(account)
        return None

    def _check_unique(self, obj: ObjectDef, values: Mapping[str, Any], own_id: str | None) -> None:
        for f in obj.fields.values():
            if not (f.unique or f.external_id) or values.get(f.name) is None:
                continue
            others = self._table.matching(obj.name, f.name, values[f.name]) - {own_id}
            if others and f.unique:
                other = sorted(others)[0]
                raise ApiError(
                    400,
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {f.name} duplicates value on record with id: {other}",
                    [f.name],
                )

    def _change(self, row: Row, change_type: str, body: Mapping[str, Any], changed: tuple[str, ...]) -> None:
        snapshot = {k: render_cdc(v) for k, v in row.values.items()}
        self.changes.append(PendingChange(row.sobject, change_type, row.id, body, changed, snapshot))


def _body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The CREATE/UNDELETE change-event body: every non-null field except the never-sent ones."""
    return {k: render_cdc(v) for k, v in values.items() if v is not None and k not in _CDC_SKIP}


def utc(now: datetime) -> datetime:
    """The clock's value as an aware UTC datetime with millisecond precision (what Salesforce stores)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    return now.astimezone(UTC).replace(microsecond=now.microsecond // 1000 * 1000)


def record_time(now: datetime) -> datetime:
    """The clock's value as Salesforce stores it in datetime fields: UTC, whole seconds."""
    return utc(now).replace(microsecond=0)
