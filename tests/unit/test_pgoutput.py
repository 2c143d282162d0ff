"""The pgoutput v1 decoder and the transaction assembler, on hand-built message bytes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest

from bridge.records.source import ChangeOp, LinkRow, SourceTable, UserRow
from bridge.source.assembly import TransactionAssembler
from bridge.source.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    ProtocolError,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)

TS = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
TS_MICROS = (TS - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
UUID_A = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
UUID_B = "b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"


def s(text: str) -> bytes:
    return text.encode() + b"\x00"


def tup(*values: object) -> bytes:
    """TupleData: str -> 't', None -> 'n', UNCHANGED -> 'u', bytes -> 'b'."""
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + struct.pack("!i", len(v)) + v
        else:
            data = str(v).encode()
            out += b"t" + struct.pack("!i", len(data)) + data
    return out


def begin(xid: int = 700, final_lsn: int = 0x1_0000_0100) -> bytes:
    return b"B" + struct.pack("!Qqi", final_lsn, TS_MICROS, xid)


def commit(end_lsn: int = 0x1_0000_0200, commit_lsn: int = 0x1_0000_0100) -> bytes:
    return b"C" + struct.pack("!BQQq", 0, commit_lsn, end_lsn, TS_MICROS)


def relation(
    relid: int, nsp: str, name: str, cols: list[tuple[str, int, bool]], ident: bytes = b"d"
) -> bytes:
    out = b"R" + struct.pack("!I", relid) + s(nsp) + s(name) + ident + struct.pack("!h", len(cols))
    for col_name, oid, key in cols:
        out += struct.pack("!B", 1 if key else 0) + s(col_name) + struct.pack("!Ii", oid, -1)
    return out


USERS_COLS = [
    ("id", 2950, True),
    ("email", 25, False),
    ("full_name", 25, False),
    ("salesforce_user_id", 25, False),
]
LINK_COLS = [
    ("id", 2950, True),
    ("link_type", 25, False),
    ("owner_id", 2950, False),
    ("title", 25, False),
    ("description", 25, False),
    ("duration_minutes", 23, False),
    ("is_active", 16, False),
]


def test_begin_and_commit_carry_lsns_time_and_xid() -> None:
    """Begin gives final LSN, commit time and xid; Commit gives commit and end LSN."""
    assert decode(begin(xid=42, final_lsn=99)) == Begin(final_lsn=99, commit_time=TS, xid=42)
    assert decode(commit(end_lsn=300, commit_lsn=200)) == Commit(0, 200, 300, TS)


def test_origin_relation_and_type_messages() -> None:
    """Origin names, Relation columns with key flags and identity, and Type messages decode."""
    assert decode(b"O" + struct.pack("!Q", 5) + s("cdc_daemon")) == Origin(5, "cdc_daemon")
    rel = decode(relation(16400, "scheduler", "users", USERS_COLS[:2], ident=b"f"))
    assert rel == Relation(
        16400, "scheduler", "users", "f", (Column("id", 2950, -1, True), Column("email", 25, -1, False))
    )
    assert decode(b"Y" + struct.pack("!I", 16386) + s("public") + s("mood")) == Type(16386, "public", "mood")


def test_insert_with_null_text_binary_and_unchanged_values() -> None:
    """TupleData keeps NULL, text, binary and unchanged-TOAST apart; 'u' is never None."""
    msg = decode(b"I" + struct.pack("!I", 7) + b"N" + tup("x", None, UNCHANGED, b"\x00\x01"))
    assert msg == Insert(7, ("x", None, UNCHANGED, b"\x00\x01"))
    assert isinstance(msg, Insert) and msg.new[2] is not None


def test_update_without_old_tuple_with_key_and_with_old_row() -> None:
    """Update has no old tuple, a 'K' key tuple, or an 'O' full old row."""
    assert decode(b"U" + struct.pack("!I", 7) + b"N" + tup("1", "b")) == Update(7, None, None, ("1", "b"))
    assert decode(b"U" + struct.pack("!I", 7) + b"K" + tup("0", None) + b"N" + tup("1", "b")) == Update(
        7, "K", ("0", None), ("1", "b")
    )
    assert decode(b"U" + struct.pack("!I", 7) + b"O" + tup("1", "a") + b"N" + tup("1", "b")) == Update(
        7, "O", ("1", "a"), ("1", "b")
    )


def test_delete_truncate_and_message() -> None:
    """Delete keeps its key tuple; Truncate its relids and options; Message its prefix and bytes."""
    assert decode(b"D" + struct.pack("!I", 7) + b"K" + tup("1", None)) == Delete(7, "K", ("1", None))
    assert decode(b"T" + struct.pack("!iBII", 2, 3, 7, 8)) == Truncate(
        (7, 8), cascade=True, restart_identity=True
    )
    msg = b"M" + struct.pack("!BQ", 1, 77) + s("mogli-bridge.heartbeat") + struct.pack("!i", 2) + b"hi"
    assert decode(msg) == Message(True, 77, "mogli-bridge.heartbeat", b"hi")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"Z",
        b"S" + struct.pack("!IB", 1, 1),  # v2 stream start: not requested, so a violation
        begin()[:-1],
        commit() + b"x",
        b"I" + struct.pack("!I", 7) + b"X" + tup("1"),
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"q",
        b"D" + struct.pack("!I", 7) + b"N" + tup("1"),
        b"O" + struct.pack("!Q", 5) + b"unterminated",
        b"I" + struct.pack("!I", 7) + b"N" + b"\x00",  # half a column count
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 2) + b"n",  # a column short
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"t\x00\x00",  # half a length
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"t" + struct.pack("!i", 9) + b"short",
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"b" + struct.pack("!i", -1),
    ],
)
def test_malformed_messages_raise_protocol_error(payload: bytes) -> None:
    """Truncated, trailing, unknown or out-of-protocol bytes raise ProtocolError, never IndexError."""
    with pytest.raises(ProtocolError):
        decode(payload)


def feed_all(asm: TransactionAssembler, *payloads: bytes) -> list[object]:
    return [tx for p in payloads if (tx := asm.feed(decode(p))) is not None]


def test_assembler_builds_one_transaction_per_commit() -> None:
    """Begin..Commit becomes one SourceTransaction with end LSN, xid, origin and typed rows."""
    asm = TransactionAssembler("scheduler")
    (tx,) = feed_all(
        asm,
        relation(1, "scheduler", "users", USERS_COLS),
        begin(xid=9),
        b"O" + struct.pack("!Q", 1) + s("cdc_daemon_1"),
        b"I" + struct.pack("!I", 1) + b"N" + tup(UUID_A, "p@x.invalid", "P", "005000000000001AAA"),
        commit(end_lsn=500),
    )
    assert tx.end_lsn == 500 and tx.xid == 9 and tx.origin == "cdc_daemon_1" and tx.commit_time == TS
    (change,) = tx.changes
    assert change.op is ChangeOp.INSERT and change.table is SourceTable.USERS
    assert change.row == UserRow(id=UUID_A, salesforce_user_id="005000000000001AAA")


def test_assembler_skips_other_tables_and_schemas() -> None:
    """Changes of unpublished or foreign-schema tables are left out; the transaction still completes."""
    asm = TransactionAssembler("scheduler")
    (tx,) = feed_all(
        asm,
        relation(1, "public", "users", USERS_COLS),
        relation(2, "scheduler", "audit", [("id", 23, True)]),
        begin(),
        b"I" + struct.pack("!I", 1) + b"N" + tup(UUID_A, "e", "n", None),
        b"I" + struct.pack("!I", 2) + b"N" + tup("1"),
        commit(),
    )
    assert tx.changes == ()


def test_assembler_delete_carries_only_the_id_and_truncate_has_no_row() -> None:
    """DELETE rows carry only the id; TRUNCATE gives one row-less change per scheduler table."""
    asm = TransactionAssembler("scheduler")
    (tx,) = feed_all(
        asm,
        relation(1, "scheduler", "users", USERS_COLS),
        relation(2, "scheduler", "scheduling_links", LINK_COLS),
        begin(),
        b"D" + struct.pack("!I", 1) + b"K" + tup(UUID_A, None, None, None),
        b"T" + struct.pack("!iBII", 2, 0, 1, 2),
        commit(),
    )
    delete, trunc_users, trunc_links = tx.changes
    assert delete.op is ChangeOp.DELETE and delete.row == UserRow(id=UUID_A)
    assert (trunc_users.table, trunc_users.op, trunc_users.row) == (
        SourceTable.USERS,
        ChangeOp.TRUNCATE,
        None,
    )
    assert trunc_links.table is SourceTable.LINKS


def test_assembler_unchanged_toast_and_full_identity_fill() -> None:
    """An unchanged TOASTed description is listed in `unchanged`, unless an 'O' old row supplies it."""
    asm = TransactionAssembler("scheduler")
    new = (UUID_B, "one_on_one", UUID_A, "Intro", UNCHANGED, "30", "t")
    old = (UUID_B, "one_on_one", UUID_A, "Old", "long text", "30", "t")
    (tx,) = feed_all(
        asm,
        relation(2, "scheduler", "scheduling_links", LINK_COLS),
        begin(),
        b"U" + struct.pack("!I", 2) + b"N" + tup(*new),
        b"U" + struct.pack("!I", 2) + b"O" + tup(*old) + b"N" + tup(*new),
        commit(),
    )
    plain, full = (c.row for c in tx.changes)
    assert isinstance(plain, LinkRow) and plain.unchanged == {"description"} and plain.description is None
    assert plain.duration_minutes == 30 and plain.is_active is True and plain.title == "Intro"
    assert isinstance(full, LinkRow) and full.unchanged == frozenset() and full.description == "long text"


def test_assembler_follows_a_relation_that_gains_a_column() -> None:
    """A new Relation message mid-stream (ALTER TABLE ADD COLUMN) replaces the cached shape."""
    asm = TransactionAssembler("scheduler")
    feed_all(asm, relation(1, "scheduler", "users", USERS_COLS))
    (tx,) = feed_all(
        asm,
        relation(1, "scheduler", "users", [*USERS_COLS, ("nickname", 25, False)]),
        begin(),
        b"I" + struct.pack("!I", 1) + b"N" + tup(UUID_A, "e", "n", None, "nick"),
        commit(),
    )
    assert tx.changes[0].row == UserRow(id=UUID_A)


@pytest.mark.parametrize(
    "payloads",
    [
        [commit()],
        [begin(), begin()],
        [b"I" + struct.pack("!I", 1) + b"N" + tup("1")],
        [begin(), b"I" + struct.pack("!I", 99) + b"N" + tup("1")],
        [
            relation(1, "scheduler", "users", USERS_COLS),
            begin(),
            b"I" + struct.pack("!I", 1) + b"N" + tup("1"),
        ],
    ],
    ids=["commit-without-begin", "nested-begin", "change-outside-txn", "unknown-relid", "width-mismatch"],
)
def test_assembler_rejects_protocol_violations(payloads: list[bytes]) -> None:
    """Out-of-order or inconsistent messages are protocol violations, not silently dropped data."""
    asm = TransactionAssembler("scheduler")
    with pytest.raises(ProtocolError):
        feed_all(asm, *payloads)


def test_assembler_reset_forgets_relations_and_open_transaction() -> None:
    """After reset() (a new connection) a change needs a fresh Relation message first."""
    asm = TransactionAssembler("scheduler")
    feed_all(asm, relation(1, "scheduler", "users", USERS_COLS), begin())
    asm.reset()
    feed_all(asm, begin())
    with pytest.raises(ProtocolError):
        feed_all(asm, b"I" + struct.pack("!I", 1) + b"N" + tup(UUID_A, "e", "n", None))


def test_assembler_turns_a_primary_key_change_into_delete_and_insert() -> None:
    """An UPDATE that changes the id ('K' old key) is a DELETE of the old id and an INSERT of the new."""
    asm = TransactionAssembler("scheduler")
    (tx,) = feed_all(
        asm,
        relation(1, "scheduler", "users", USERS_COLS),
        begin(),
        b"U"
        + struct.pack("!I", 1)
        + b"K"
        + tup(UUID_A, None, None, None)
        + b"N"
        + tup(UUID_B, "e", "n", "005"),
        b"U"
        + struct.pack("!I", 1)
        + b"O"
        + tup(UUID_B, "e", "n", "005")
        + b"N"
        + tup(UUID_B, "e", "n", "006"),
        commit(),
    )
    assert [(c.op, c.row) for c in tx.changes] == [
        (ChangeOp.DELETE, UserRow(id=UUID_A)),
        (ChangeOp.INSERT, UserRow(id=UUID_B, salesforce_user_id="005")),
        (ChangeOp.UPDATE, UserRow(id=UUID_B, salesforce_user_id="006")),
    ]
