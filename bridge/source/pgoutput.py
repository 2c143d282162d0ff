"""A pure decoder of pgoutput protocol version 1 messages into typed wire records.

Layouts are in network byte order with NUL-terminated strings (PostgreSQL's "Logical Replication Message
Formats"). Values stay in their text form here; `values.py` converts them by type OID. An unchanged TOASTed
value (`'u'`) is the `UNCHANGED` sentinel, never None: treating it as NULL would silently erase data.
These records never leave `bridge/source/`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class ProtocolError(ValueError):
    """The bytes are not a well-formed pgoutput v1 message."""


class Unchanged(enum.Enum):
    """Marker type for a TOASTed value the server did not send because it did not change."""

    TOAST = "unchanged-toast"


UNCHANGED = Unchanged.TOAST

TupleValue = str | bytes | None | Unchanged
"""One column of TupleData: text, binary (only with `binary 'true'`), NULL or unchanged TOAST."""


@dataclass(frozen=True, slots=True)
class Begin:
    """Start of a transaction. `final_lsn` is the LSN of its commit record."""

    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """End of a transaction. `end_lsn` is the position to acknowledge."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    """The replication origin a transaction was written under."""

    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a Relation message."""

    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's current shape; sent before its first change in a session and after any ALTER."""

    relid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """A non-built-in data type used by a published column."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """A new row."""

    relid: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """A changed row. `old_kind` is 'K' (key columns only), 'O' (whole old row) or None (no old tuple)."""

    relid: int
    old_kind: str | None
    old: tuple[TupleValue, ...] | None
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    """A removed row; `old` holds the key ('K') or the whole old row ('O')."""

    relid: int
    old_kind: str
    old: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    """One TRUNCATE statement over one or more tables."""

    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Message:
    """A `pg_logical_emit_message` payload (only sent with the `messages` option)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


WireMessage = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message


class _Reader:
    """A cursor over one message's bytes that raises ProtocolError instead of IndexError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        """The next n raw bytes."""
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"message truncated: wanted {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> int:
        """One big-endian integer of struct format `fmt`."""
        value: int = struct.unpack("!" + fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def u8(self) -> int:
        """Unsigned byte."""
        return self.unpack("B")

    def i16(self) -> int:
        """Signed 16-bit integer."""
        return self.unpack("h")

    def i32(self) -> int:
        """Signed 32-bit integer."""
        return self.unpack("i")

    def u32(self) -> int:
        """Unsigned 32-bit integer (OIDs, xids)."""
        return self.unpack("I")

    def u64(self) -> int:
        """Unsigned 64-bit integer (LSNs)."""
        return self.unpack("Q")

    def timestamp(self) -> datetime:
        """Microseconds since 2000-01-01 UTC as an aware datetime."""
        return PG_EPOCH + timedelta(microseconds=self.unpack("q"))

    def string(self) -> str:
        """A NUL-terminated UTF-8 string."""
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolError(f"unterminated string at offset {self.pos}")
        text = self.data[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return text

    def char(self) -> str:
        """One byte as a one-letter tag."""
        return chr(self.u8())

    def done(self) -> None:
        """Fail unless every byte was consumed."""
        if self.pos != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.pos} trailing bytes")


_COUNT = struct.Struct("!h")
_LENGTH = struct.Struct("!i")
_NULL, _UNCHANGED_TOAST, _TEXT, _BINARY = b"nutb"  # TupleData column kinds, as byte values


def _tuple(r: _Reader) -> tuple[TupleValue, ...]:
    """TupleData, read straight off the buffer: the hot path of a backlog (one call per changed row)."""
    data, pos, size = r.data, r.pos, len(r.data)
    if pos + 2 > size:
        raise ProtocolError(f"message truncated: wanted 2 bytes at offset {pos}")
    (count,) = _COUNT.unpack_from(data, pos)
    pos += 2
    values: list[TupleValue] = []
    for _ in range(count):
        if pos >= size:
            raise ProtocolError(f"message truncated: wanted 1 bytes at offset {pos}")
        kind = data[pos]
        pos += 1
        if kind in (_TEXT, _BINARY):
            if pos + 4 > size:
                raise ProtocolError(f"message truncated: wanted 4 bytes at offset {pos}")
            (length,) = _LENGTH.unpack_from(data, pos)
            pos += 4
            if length < 0 or pos + length > size:
                raise ProtocolError(f"message truncated: wanted {length} bytes at offset {pos}")
            chunk = data[pos : pos + length]
            pos += length
            values.append(chunk.decode("utf-8", errors="replace") if kind == _TEXT else chunk)
        elif kind == _NULL:
            values.append(None)
        elif kind == _UNCHANGED_TOAST:
            values.append(UNCHANGED)
        else:
            raise ProtocolError(f"unknown tuple column kind {chr(kind)!r}")
    r.pos = pos
    return tuple(values)


def _relation(r: _Reader) -> Relation:
    relid, namespace, name, identity = r.u32(), r.string(), r.string(), r.char()
    columns = []
    for _ in range(r.i16()):
        flags = r.u8()
        columns.append(
            Column(name=r.string(), type_oid=r.u32(), type_modifier=r.i32(), is_key=bool(flags & 1))
        )
    return Relation(relid, namespace or "pg_catalog", name, identity, tuple(columns))


def _update(r: _Reader) -> Update:
    relid = r.u32()
    kind = r.char()
    old_kind: str | None = None
    old = None
    if kind in ("K", "O"):
        old_kind, old = kind, _tuple(r)
        kind = r.char()
    if kind != "N":
        raise ProtocolError(f"update: expected new tuple 'N', got {kind!r}")
    return Update(relid, old_kind, old, _tuple(r))


def _delete(r: _Reader) -> Delete:
    relid = r.u32()
    kind = r.char()
    if kind not in ("K", "O"):
        raise ProtocolError(f"delete: expected 'K' or 'O', got {kind!r}")
    return Delete(relid, kind, _tuple(r))


def _truncate(r: _Reader) -> Truncate:
    count, options = r.i32(), r.u8()
    relids = tuple(r.u32() for _ in range(count))
    return Truncate(relids, cascade=bool(options & 1), restart_identity=bool(options & 2))


def _message(r: _Reader) -> Message:
    transactional, lsn, prefix = bool(r.u8() & 1), r.u64(), r.string()
    return Message(transactional, lsn, prefix, r.take(r.i32()))


def _insert(r: _Reader) -> Insert:
    relid = r.u32()
    if (kind := r.char()) != "N":
        raise ProtocolError(f"insert: expected new tuple 'N', got {kind!r}")
    return Insert(relid, _tuple(r))


def decode(payload: bytes) -> WireMessage:
    """Decode one pgoutput v1 message; raises ProtocolError on anything malformed or unknown."""
    if not payload:
        raise ProtocolError("empty message")
    r = _Reader(bytes(payload))
    tag = r.char()
    msg: WireMessage
    if tag == "B":
        msg = Begin(final_lsn=r.u64(), commit_time=r.timestamp(), xid=r.u32())
    elif tag == "C":
        msg = Commit(flags=r.u8(), commit_lsn=r.u64(), end_lsn=r.u64(), commit_time=r.timestamp())
    elif tag == "O":
        msg = Origin(origin_lsn=r.u64(), name=r.string())
    elif tag == "R":
        msg = _relation(r)
    elif tag == "Y":
        msg = Type(oid=r.u32(), namespace=r.string(), name=r.string())
    elif tag == "I":
        msg = _insert(r)
    elif tag == "U":
        msg = _update(r)
    elif tag == "D":
        msg = _delete(r)
    elif tag == "T":
        msg = _truncate(r)
    elif tag == "M":
        msg = _message(r)
    else:
        raise ProtocolError(f"unknown or unsupported pgoutput message {tag!r} (protocol version 1 expected)")
    r.done()
    return msg
