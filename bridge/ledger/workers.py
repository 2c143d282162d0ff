"""Several workers (issue 14): membership, org leases and the fencing check, on the ledger's tables.

Only PostgreSQL coordinates workers: every time compared or stored here is the database's `now()` (one
`SELECT now()` per transaction, constant within it), so clock skew between hosts changes nothing. On SQLite
the same functions work for one worker (no row locks are emitted; the time is this host's).

Locks, and why no two rounds deadlock: a round updates only rows this worker holds, and takes unowned or
expired leases with `SELECT ... FOR UPDATE SKIP LOCKED` (it never waits for a row another worker has
locked); missing `org_leases` rows are inserted in key order. A fenced write holds its org's lease row
`FOR SHARE` until it commits, so a taker skips that org for the round, and an outcome is recorded either
before the take or never.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from bridge.errors import LeaseLost
from bridge.ledger.scope import scope_of
from bridge.ledger.tables import ORG_LEASES, ORGS, WORKERS, UtcDateTime
from bridge.records.ledger import DEFAULT_ORG, LeaseRound, OrgState, WorkerRecord

# How long an expired worker still shows in `list_workers` (status shows who just died).
RECENTLY_EXPIRED = timedelta(seconds=60)

__all__ = [
    "RECENTLY_EXPIRED",
    "check_fence",
    "database_now",
    "heartbeat",
    "lease_round",
    "leave",
    "list_workers",
    "org_workers",
    "release_leases",
    "served_orgs",
]


def database_now(connection: Connection) -> datetime:
    """The database's transaction time (PostgreSQL `now()`); this host's UTC time on SQLite."""
    if connection.dialect.name != "postgresql":
        return datetime.now(UTC)
    value = connection.execute(text("SELECT now()")).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def _now_expression(connection: Connection) -> ColumnElement[datetime]:
    """`now()` inside a statement (no extra round trip on PostgreSQL); a bound time on SQLite."""
    if connection.dialect.name == "postgresql":
        return func.now()
    return bindparam("now_", datetime.now(UTC), type_=UtcDateTime())


def check_fence(connection: Connection) -> None:
    """Raise LeaseLost unless the scope's fence still holds its org's lease; nothing for an unfenced scope.

    Runs first in every write transaction of a fenced scoped ledger (Ledger._write, call, the claims). On
    PostgreSQL the lease row is then held FOR SHARE until this transaction ends: a taker cannot change it
    (its SKIP LOCKED passes it by; a release waits), so what this transaction records is recorded under the
    lease it checked.
    """
    scope = scope_of(connection)
    fence = scope.fence
    if fence is None or scope.every:
        return
    org = scope.key or DEFAULT_ORG
    query = (
        select(literal(1))
        .select_from(ORG_LEASES)
        .where(
            ORG_LEASES.c.org_id == org,
            ORG_LEASES.c.worker_id == fence.worker_id,
            ORG_LEASES.c.epoch == fence.epoch,
            ORG_LEASES.c.lease_until > _now_expression(connection),
        )
        .with_for_update(read=True)
    )
    if connection.execute(query).first() is None:
        raise LeaseLost(org, fence.worker_id, fence.epoch)


def heartbeat(
    connection: Connection,
    worker_id: str,
    host: str,
    pid: int,
    *,
    reader: bool,
    draining: bool,
    lease_seconds: float,
) -> None:
    """Upsert the worker's row: alive until now() + lease, with its reader and draining flags."""
    now = database_now(connection)
    values = {
        "host": host,
        "pid": pid,
        "heartbeat_at": now,
        "lease_until": now + timedelta(seconds=lease_seconds),
        "reader": reader,
        "draining": draining,
    }
    done = connection.execute(update(WORKERS).where(WORKERS.c.worker_id == worker_id).values(values))
    if done.rowcount == 0:
        statement = _insert(connection, WORKERS).values({"worker_id": worker_id, "started_at": now, **values})
        connection.execute(statement.on_conflict_do_update(index_elements=[WORKERS.c.worker_id], set_=values))


def _insert(connection: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which has ON CONFLICT (PostgreSQL's or SQLite's)."""
    return postgresql.insert(table) if connection.dialect.name == "postgresql" else sqlite.insert(table)


def served_orgs(connection: Connection) -> list[str]:
    """The orgs workers serve, sorted: 'default' always, another while connected and not disconnected."""
    query = select(ORGS.c.org_id).where(
        or_(
            ORGS.c.org_id == DEFAULT_ORG,
            and_(ORGS.c.connection == "connected", ORGS.c.state != OrgState.DISCONNECTED.value),
        )
    )
    served = set(connection.execute(query).scalars())
    served.add(DEFAULT_ORG)
    return sorted(served)


def _create_missing(connection: Connection, served: Sequence[str]) -> None:
    """Insert the missing `org_leases` rows, in key order (two rounds inserting the same keys wait for each
    other in one order, never in a cycle); a row a concurrent round inserted first is left as it is."""
    known = set(
        connection.execute(select(ORG_LEASES.c.org_id).where(ORG_LEASES.c.org_id.in_(served))).scalars()
    )
    missing = [{"org_id": org, "epoch": 0} for org in served if org not in known]
    if missing:
        statement = _insert(connection, ORG_LEASES).values(missing)
        connection.execute(statement.on_conflict_do_nothing(index_elements=[ORG_LEASES.c.org_id]))


def _live_others(connection: Connection, worker_id: str, now: datetime) -> int:
    """Workers other than this one with a live lease that are not draining."""
    query = select(func.count()).where(
        WORKERS.c.worker_id != worker_id, WORKERS.c.lease_until > now, WORKERS.c.draining.is_(False)
    )
    return int(connection.execute(query).scalar_one())


def _held(connection: Connection, worker_id: str) -> dict[str, int]:
    """Every org whose lease this worker holds, with its epoch."""
    query = select(ORG_LEASES.c.org_id, ORG_LEASES.c.epoch).where(ORG_LEASES.c.worker_id == worker_id)
    return {org: int(epoch) for org, epoch in connection.execute(query)}


def _take(
    connection: Connection, worker_id: str, served: Sequence[str], want: int, now: datetime, until: datetime
) -> None:
    """Take up to `want` unowned or expired leases (unowned first), skipping rows another transaction holds
    locked (a fenced write, a concurrent taker); each take raises the org's epoch."""
    free = or_(
        ORG_LEASES.c.worker_id.is_(None), ORG_LEASES.c.lease_until.is_(None), ORG_LEASES.c.lease_until <= now
    )
    query = (
        select(ORG_LEASES.c.org_id)
        .where(ORG_LEASES.c.org_id.in_(served), free)
        .order_by(ORG_LEASES.c.worker_id.is_not(None), ORG_LEASES.c.org_id)
        .limit(want)
        .with_for_update(skip_locked=True)
    )
    taken = list(connection.execute(query).scalars())
    if taken:
        values = {
            "worker_id": worker_id,
            "epoch": ORG_LEASES.c.epoch + 1,
            "lease_until": until,
            "taken_at": now,
        }
        connection.execute(update(ORG_LEASES).where(ORG_LEASES.c.org_id.in_(taken)).values(values))


def lock_leases(connection: Connection, org_ids: Sequence[str]) -> None:
    """Hold these orgs' lease rows FOR SHARE, taken in org order (PostgreSQL; nothing on SQLite).

    Every transaction that locks several lease rows takes them in org order (a group commit's fences here,
    a round's or a release's own rows in `_lock_own`), so two of them never wait for each other in a cycle.
    """
    if org_ids and connection.dialect.name == "postgresql":
        query = (
            select(ORG_LEASES.c.org_id)
            .where(ORG_LEASES.c.org_id.in_(sorted(org_ids)))
            .order_by(ORG_LEASES.c.org_id)
            .with_for_update(read=True)
        )
        connection.execute(query).all()


def _lock_own(connection: Connection, worker_id: str) -> None:
    """Lock this worker's lease rows for update in org order before changing them (see lock_leases)."""
    if connection.dialect.name == "postgresql":
        query = (
            select(ORG_LEASES.c.org_id)
            .where(ORG_LEASES.c.worker_id == worker_id)
            .order_by(ORG_LEASES.c.org_id)
            .with_for_update(key_share=True)
        )
        connection.execute(query).all()


def lease_round(
    connection: Connection, worker_id: str, *, lease_seconds: float, draining: bool
) -> LeaseRound:
    """One worker's round, in one transaction: serve its fair share of the orgs (see the module docstring).

    Releases its leases of orgs no longer served, renews the others (epoch kept), takes unowned or expired
    leases up to share = ceil(orgs / live workers) (0 when draining), and names as surplus what it holds
    above its share: the daemon drains those orgs and releases them, and a lighter worker takes them.
    """
    now = database_now(connection)
    until = now + timedelta(seconds=lease_seconds)
    served = served_orgs(connection)
    _create_missing(connection, served)
    _lock_own(connection, worker_id)
    mine = ORG_LEASES.c.worker_id == worker_id
    connection.execute(
        update(ORG_LEASES)
        .where(mine, ORG_LEASES.c.org_id.not_in(served))
        .values(worker_id=None, lease_until=None)
    )
    connection.execute(update(ORG_LEASES).where(mine).values(lease_until=until))
    live = _live_others(connection, worker_id, now) + (0 if draining else 1)
    share = 0 if draining else math.ceil(len(served) / live)
    held = _held(connection, worker_id)
    if len(held) < share:
        _take(connection, worker_id, served, share - len(held), now, until)
        held = _held(connection, worker_id)
    surplus = tuple(sorted(held)[share:]) if len(held) > share else ()
    return LeaseRound(held=held, surplus=surplus, live_workers=live, share=share)


def release_leases(connection: Connection, worker_id: str, org_ids: Collection[str]) -> None:
    """Give these orgs' leases back (epoch kept, so the next take raises it); only those this worker holds."""
    if org_ids:
        _lock_own(connection, worker_id)
        statement = (
            update(ORG_LEASES)
            .where(ORG_LEASES.c.worker_id == worker_id, ORG_LEASES.c.org_id.in_(sorted(org_ids)))
            .values(worker_id=None, lease_until=None)
        )
        connection.execute(statement)


def leave(connection: Connection, worker_id: str) -> None:
    """A stopped worker: every lease it holds released and its `workers` row deleted."""
    _lock_own(connection, worker_id)
    release = (
        update(ORG_LEASES).where(ORG_LEASES.c.worker_id == worker_id).values(worker_id=None, lease_until=None)
    )
    connection.execute(release)
    connection.execute(delete(WORKERS).where(WORKERS.c.worker_id == worker_id))


def _live_leases(connection: Connection, now: datetime) -> list[tuple[str, str]]:
    """(org, worker) of every lease not yet expired, sorted by org."""
    query = (
        select(ORG_LEASES.c.org_id, ORG_LEASES.c.worker_id)
        .where(ORG_LEASES.c.worker_id.is_not(None), ORG_LEASES.c.lease_until > now)
        .order_by(ORG_LEASES.c.org_id)
    )
    return [(org, worker) for org, worker in connection.execute(query)]


def list_workers(connection: Connection) -> list[WorkerRecord]:
    """Live workers and those expired in the last RECENTLY_EXPIRED, oldest first, each with the orgs it
    holds under a lease not yet expired."""
    now = database_now(connection)
    orgs: dict[str, list[str]] = {}
    for org, worker in _live_leases(connection, now):
        orgs.setdefault(worker, []).append(org)
    query = (
        select(WORKERS)
        .where(WORKERS.c.lease_until > now - RECENTLY_EXPIRED)
        .order_by(WORKERS.c.started_at, WORKERS.c.worker_id)
    )
    return [
        WorkerRecord(
            worker_id=m["worker_id"],
            host=m["host"],
            pid=m["pid"],
            reader=bool(m["reader"]),
            draining=bool(m["draining"]),
            started_at=m["started_at"],
            lease_until=m["lease_until"],
            orgs=tuple(orgs.get(m["worker_id"], ())),
        )
        for m in connection.execute(query).mappings()
    ]


def org_workers(connection: Connection) -> dict[str, str | None]:
    """Every org of the `orgs` table -> the worker holding a live lease on it (None: nobody now)."""
    now = database_now(connection)
    workers: dict[str, str | None] = dict.fromkeys(connection.execute(select(ORGS.c.org_id)).scalars())
    workers.update(dict(_live_leases(connection, now)))
    return workers
