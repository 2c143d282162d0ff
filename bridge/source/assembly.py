"""Wire messages of one replication session to whole SourceTransactions.

The relation cache lives here: pgoutput sends a Relation message before a table's first change in every
walsender session and again after any ALTER TABLE, so the cache is keyed by relid, overwritten on every
Relation, and must be `reset()` for each new connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bridge.records.source import ChangeOp, SourceChange, SourceTable, SourceTransaction
from bridge.source.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    ProtocolError,
    Relation,
    Truncate,
    TupleValue,
    Type,
    Unchanged,
    Update,
    WireMessage,
)
from bridge.source.rows import build_row

_TABLES = {t.value: t for t in SourceTable}


@dataclass(slots=True)
class _Open:
    xid: int
    commit_time: datetime
    origin: str | None = None
    changes: list[SourceChange] = field(default_factory=list)


def _fill_unchanged(
    new: tuple[TupleValue, ...], old: tuple[TupleValue, ...] | None
) -> tuple[TupleValue, ...]:
    """With REPLICA IDENTITY FULL the old tuple carries the values the new one marks unchanged."""
    if old is None or len(old) != len(new):
        return new
    return tuple(
        o if isinstance(n, Unchanged) and not isinstance(o, Unchanged) else n
        for n, o in zip(new, old, strict=True)
    )


class TransactionAssembler:
    """Feeds on decoded wire messages; returns a SourceTransaction at each Commit."""

    def __init__(self, schema: str) -> None:
        self._schema = schema
        self._relations: dict[int, Relation] = {}
        self._open: _Open | None = None

    def reset(self) -> None:
        """Forget the relation cache and any half-received transaction (a new session starts)."""
        self._relations.clear()
        self._open = None

    def feed(self, msg: WireMessage) -> SourceTransaction | None:
        """Consume one message; a completed transaction is returned at its Commit."""
        if isinstance(msg, Relation):
            self._relations[msg.relid] = msg
        elif isinstance(msg, Type | Message):
            pass  # built-in types need no Type message; emitted messages are not requested
        elif isinstance(msg, Begin):
            if self._open is not None:
                raise ProtocolError(f"Begin of xid {msg.xid} inside open xid {self._open.xid}")
            self._open = _Open(xid=msg.xid, commit_time=msg.commit_time)
        elif isinstance(msg, Commit):
            return self._commit(msg)
        else:
            self._change(msg)
        return None

    def _commit(self, msg: Commit) -> SourceTransaction:
        if self._open is None:
            raise ProtocolError("Commit without Begin")
        tx = SourceTransaction(
            end_lsn=msg.end_lsn,
            commit_time=msg.commit_time,
            changes=tuple(self._open.changes),
            xid=self._open.xid,
            origin=self._open.origin,
        )
        self._open = None
        return tx

    def _table(self, relid: int) -> tuple[SourceTable | None, Relation]:
        relation = self._relations.get(relid)
        if relation is None:
            raise ProtocolError(f"change for relation {relid} before its Relation message")
        if relation.namespace != self._schema:
            return None, relation
        return _TABLES.get(relation.name), relation

    def _change(self, msg: Origin | Insert | Update | Delete | Truncate) -> None:
        if self._open is None:
            raise ProtocolError(f"{type(msg).__name__} outside a transaction")
        if isinstance(msg, Origin):
            self._open.origin = msg.name
            return
        if isinstance(msg, Truncate):
            for relid in msg.relids:
                table, _ = self._table(relid)
                if table is not None:
                    self._open.changes.append(SourceChange(table, ChangeOp.TRUNCATE, None))
            return
        table, relation = self._table(msg.relid)
        if table is None:
            return
        try:
            self._open.changes.extend(_row_changes(table, relation, msg))
        except ValueError as exc:  # tuple width differs from the cached Relation
            raise ProtocolError(f"{table}: {exc}") from exc


def _row_changes(table: SourceTable, relation: Relation, msg: Insert | Update | Delete) -> list[SourceChange]:
    """The changes one row message stands for; an update of the primary key is a delete plus an insert."""
    columns = relation.columns
    if isinstance(msg, Insert):
        return [SourceChange(table, ChangeOp.INSERT, build_row(table, columns, msg.new))]
    if isinstance(msg, Delete):
        return [SourceChange(table, ChangeOp.DELETE, build_row(table, columns, msg.old, key_only=True))]
    row = build_row(table, columns, _fill_unchanged(msg.new, msg.old if msg.old_kind == "O" else None))
    if msg.old is not None:
        old_key = build_row(table, columns, msg.old, key_only=True)
        if old_key.id and old_key.id != row.id:
            return [SourceChange(table, ChangeOp.DELETE, old_key), SourceChange(table, ChangeOp.INSERT, row)]
    return [SourceChange(table, ChangeOp.UPDATE, row)]
