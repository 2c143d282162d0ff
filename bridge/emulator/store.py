"""The record store of the emulated org: transactions, reads, queries, describe, users, persistence."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ApiError, ChangePublisher, DmlContext
from bridge.emulator.org import OrgConfig, OrgFileError, OrgUser, seed_id
from bridge.emulator.schema import ObjectDef, describe_object
from bridge.emulator.store_changes import OVERFLOW_THRESHOLD, Commit, change_events
from bridge.emulator.store_lead import convert
from bridge.emulator.store_query import QueryResult, render_record, run_query
from bridge.emulator.store_rows import Row, RowTable
from bridge.emulator.store_sqlite import StateFile
from bridge.emulator.store_txn import Txn, normalize_id, not_found, record_time, utc
from bridge.emulator.validation import EventRules

__all__ = ["OrgStore", "QueryResult", "Txn"]


class OrgStore:
    """Every record of one emulated org, with Salesforce's rules, change events and optional persistence."""

    def __init__(
        self,
        org: OrgConfig,
        publisher: ChangePublisher,
        clock: Callable[[], datetime],
        state_file: Path | None = None,
        *,
        on_deactivated: Callable[[str], object] | None = None,
    ) -> None:
        self.org = org
        self._on_deactivated = on_deactivated  # told the id of each User a commit makes inactive
        self.schema = org.schema
        self._publisher = publisher
        self._clock = clock
        self._lock = threading.RLock()
        self._table = RowTable(org.schema)
        self._counter = 0
        self._commits = 0
        self._overflow_at = int(org.streaming.extra.get("overflow_threshold", OVERFLOW_THRESHOLD))
        self._passwords = {u.id: u.password for u in org.seed.users if u.password is not None}
        self._rules = EventRules(org.lead_whatid_rule, org.multiday_events)
        self._state = StateFile(state_file) if state_file is not None else None
        if self._state is not None and not self._state.is_empty():
            rows, self._counter = self._state.load(org.schema)
            for row in rows:
                self._table.put(row)
        else:
            self._seed()

    # -- users -----------------------------------------------------------------------------------------

    @property
    def integration_user_id(self) -> str:
        """The user the bridge logs in as (`bridge@example.com` in the default org)."""
        user = self.user_by_username(self.org.integration_username)
        if user is None:
            raise LookupError("the org file names no integration user")
        return user.id

    def authenticate(self, username: str, password: str) -> OrgUser | None:
        """The active user with these credentials, or None."""
        user = self.user_by_username(username)
        if user is None or not user.is_active or self._passwords.get(user.id) != password:
            return None
        return user

    def user_by_username(self, username: str) -> OrgUser | None:
        """The user (seeded or created via REST) with this username, case-insensitive."""
        with self._lock:
            ids = self._table.matching("User", "Username", username)
            return self.user_by_id(next(iter(ids))) if ids else None

    def user_by_id(self, user_id: str) -> OrgUser | None:
        """The user with this 15- or 18-character id, or None."""
        if not sfid.is_valid(user_id):
            return None
        with self._lock:
            row = self._table.get(sfid.to18(user_id))
            if row is None or row.sobject != "User":
                return None
            v = row.values
            return OrgUser(
                id=row.id,
                username=v["Username"],
                email=v["Email"],
                last_name=v["LastName"],
                is_active=bool(v.get("IsActive")),
                password=self._passwords.get(row.id),
            )

    # -- transactions ----------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, ctx: DmlContext, *, all_or_none: bool = True) -> Iterator[Txn]:
        """One Salesforce transaction: commits, persists and publishes on success; keeps nothing on error.

        `all_or_none` is informational: per-record rollback for allOrNone=false uses `Txn.savepoint()`.
        """
        with self._lock:
            txn = Txn(self._table, self.schema, self._rules, ctx, record_time(self._clock()), self._next_id)
            try:
                yield txn
            except BaseException:
                txn.rollback()
                raise
            self._commit(txn)

    def _commit(self, txn: Txn) -> None:
        if self._state is not None and txn.undo:
            touched = dict.fromkeys(record_id for record_id, _ in txn.undo)
            self._state.write(((rid, self._table.get(rid)) for rid in touched), self._counter)
        if self._on_deactivated is not None:
            for user_id in self._deactivated_users(txn):
                self._on_deactivated(user_id)
        if not txn.changes:
            return
        self._commits += 1
        stamp = int(utc(self._clock()).timestamp() * 1000)
        commit = Commit(txn.ctx, str(uuid.uuid4()), stamp, self._commits)
        events = change_events(txn.changes, commit, self._overflow_at)
        self._publisher.publish(events)

    def _deactivated_users(self, txn: Txn) -> list[str]:
        """Users active before the transaction and inactive after it."""
        before: dict[str, Row | None] = {}
        for record_id, old in txn.undo:
            before.setdefault(record_id, old)  # the first undo entry holds the state before the transaction
        out = []
        for record_id, old in before.items():
            if old is None or old.sobject != "User" or not old.values.get("IsActive"):
                continue
            now = self._table.get(record_id)
            if now is not None and not now.values.get("IsActive"):
                out.append(record_id)
        return out

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        segment = self.org.id_segment
        return sfid.to18(f"{prefix}{segment}{self._counter:0{12 - len(segment)}d}")

    def convert_lead(
        self, lead_id: str, ctx: DmlContext, *, create_opportunity: bool = False
    ) -> dict[str, str]:
        """Convert a Lead as Salesforce does (reference §3.4): {"accountId","contactId","opportunityId"?}."""
        with self.transaction(ctx) as txn:
            return convert(
                txn, lead_id, create_opportunity, self.org.streaming.emit_event_updates_on_lead_convert
            )

    # -- reads -----------------------------------------------------------------------------------------

    def get(
        self,
        sobject: str,
        record_id: str,
        fields: Sequence[str] | None = None,
        *,
        api_version: str | None = None,
    ) -> dict[str, Any]:
        """The REST JSON of one live record; 404 NOT_FOUND when missing or deleted, 400 MALFORMED_ID."""
        obj = self._object(sobject)
        rid = normalize_id(record_id)
        with self._lock:
            row = self._table.get(rid)
            if row is None or row.deleted or row.sobject != obj.name:
                raise not_found()
            return render_record(obj, row.values, self._fields(obj, fields), self._version(api_version))

    def get_by_external_id(
        self,
        sobject: str,
        field: str,
        value: str,
        fields: Sequence[str] | None = None,
        *,
        api_version: str | None = None,
    ) -> dict[str, Any]:
        """REST JSON of the live record whose External ID `field` is `value`; 404, or 300 on duplicates."""
        obj = self._object(sobject)
        f = obj.field(field)
        if f is not None and f.type == "id":
            return self.get(obj.name, value, fields, api_version=api_version)
        if f is None or not (f.external_id or f.unique):
            raise ApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}"
            )
        with self._lock:
            ids = sorted(self._table.matching(obj.name, f.name, value))
            if not ids:
                raise not_found()
            if len(ids) > 1:
                raise ApiError(300, "MULTIPLE_CHOICES", f"{f.name} matches {len(ids)} records", ids)
            return render_record(
                obj, self._table.rows[ids[0]].values, self._fields(obj, fields), self._version(api_version)
            )

    def field_names(self, sobject: str, fields: Sequence[str]) -> list[str]:
        """The canonical spelling of each named field; 400 INVALID_FIELD for a field the object lacks."""
        return self._fields(self._object(sobject), fields)

    def record_counts(self) -> dict[str, int]:
        """How many live records each object holds (objects without any left out)."""
        with self._lock:
            counts = {
                name: sum(1 for r in self._table.of_type(name) if not r.deleted)
                for name in self._table.by_type
            }
            return {name: n for name, n in sorted(counts.items()) if n}

    def records(self, sobject: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of one object as REST JSON (for the control API)."""
        obj = self._object(sobject)
        with self._lock:
            names = obj.field_names()
            return [
                render_record(obj, row.values, names, self._version(None))
                for row in self._table.of_type(obj.name)
                if include_deleted or not row.deleted
            ]

    def sobject_for_id(self, record_id: str) -> str | None:
        """The canonical object name of the record `record_id` (by key prefix), or None."""
        obj = self.schema.for_id(record_id) if isinstance(record_id, str) else None
        return obj.name if obj is not None else None

    def query(
        self, text: str, *, include_deleted: bool = False, api_version: str | None = None
    ) -> QueryResult:
        """Run a SOQL query (the subset in soql.py) over every matching row."""
        with self._lock:
            return run_query(
                self._table, text, include_deleted, utc(self._clock()), self._version(api_version)
            )

    # -- describe ------------------------------------------------------------------------------------------

    def sobject_exists(self, name: str) -> bool:
        """True when the org defines this object (case-insensitive)."""
        return self.schema.get(name) is not None

    def canonical_name(self, name: str) -> str | None:
        """The object's canonical spelling (`event` -> `Event`), or None."""
        obj = self.schema.get(name)
        return obj.name if obj is not None else None

    def describe(self, sobject: str, api_version: str) -> dict[str, Any]:
        """`/sobjects/{name}/describe` JSON."""
        return describe_object(self._object(sobject), api_version, full=True)

    def describe_global(self, api_version: str) -> dict[str, Any]:
        """`/sobjects` JSON."""
        return {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [describe_object(o, api_version, full=False) for o in self.schema.objects.values()],
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the org back to its seed (no change events)."""
        with self._lock:
            self._table.clear()
            if self._state is not None:
                self._state.wipe()
            self._seed()

    def close(self) -> None:
        """Close the state file."""
        if self._state is not None:
            self._state.close()

    def _seed(self) -> None:
        """Insert the org file's users and records with stable ids; persisted, never published."""
        seed = self.org.seed
        ctx = DmlContext(seed.users[0].id, "")
        txn = Txn(self._table, self.schema, self._rules, ctx, record_time(self._clock()), self._next_id)
        user_obj = self._object("User")
        for u in seed.users:
            given = {
                "Username": u.username,
                "Email": u.email,
                "LastName": u.last_name,
                "IsActive": u.is_active,
            }
            txn.insert(user_obj, given, u.id)
        keys = dict(seed.user_keys)
        for n, rec in enumerate(seed.records, start=1):
            obj = self.schema.get(rec.sobject)
            if obj is None:
                raise OrgFileError(f"records[{n}].sobject: unknown object {rec.sobject!r}")
            values = {
                k: keys.get(v[1:], v) if isinstance(v, str) and v.startswith("@") else v
                for k, v in rec.fields.items()
            }
            try:
                record_id = txn.insert(
                    obj, txn.coerce_input(obj, values, creating=True), seed_id(obj.prefix, n)
                )
            except ApiError as exc:
                raise OrgFileError(f"records[{n}]: {exc.error_code}: {exc.message}") from exc
            if rec.key:
                keys[rec.key] = record_id
        if self._state is not None:
            self._state.write(((rid, self._table.get(rid)) for rid, _ in txn.undo), self._counter)

    # -- helpers ---------------------------------------------------------------------------------------

    def _object(self, sobject: str) -> ObjectDef:
        obj = self.schema.get(sobject)
        if obj is None:
            raise not_found()
        return obj

    def _fields(self, obj: ObjectDef, fields: Sequence[str] | None) -> list[str]:
        if not fields:
            return obj.field_names()
        out = []
        for name in fields:
            f = obj.field(name.strip())
            if f is None:
                raise ApiError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}", [name]
                )
            out.append(f.name)
        return out

    def _version(self, api_version: str | None) -> str:
        return api_version or self.org.api_versions[-1]
