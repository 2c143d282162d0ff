"""Idempotent source set-up and checks: the publication, the durable slot, and a readiness report.

Synchronous psycopg2 on purpose: these run once at start-up or from `mogli-bridge setup`, and the caller
runs them in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import structlog
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from bridge.errors import ConfigurationError
from bridge.records.source import SourceTable

log = structlog.get_logger(__name__)

TABLES: tuple[str, ...] = tuple(t.value for t in SourceTable)
# The tables and column of CONTRACT §9: optional while tenancy is off, so an older scheduling database works.
TENANCY_TABLES: tuple[str, ...] = (SourceTable.ORGANIZATIONS.value, SourceTable.CONNECTIONS.value)
TENANCY_COLUMN = ("users", "organization_id")
PLUGIN = "pgoutput"


@contextmanager
def _connect(dsn: str) -> Iterator[PgConnection]:
    conn = psycopg2.connect(dsn, connect_timeout=10)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def _published(conn: PgConnection, schema: str, publication: str) -> set[str] | None:
    """Tables of `schema` in the publication, or None when the publication does not exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
        if cur.fetchone() is None:
            return None
        cur.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s",
            (publication, schema),
        )
        return {row[0] for row in cur.fetchall()}


def _tenancy_missing(conn: PgConnection, schema: str) -> list[str]:
    """The tenancy tables and column (CONTRACT §9) the scheduling database lacks, qualified by schema."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')""",
            (schema, list(TENANCY_TABLES)),
        )
        tables = {row[0] for row in cur.fetchall()}
        table, column = TENANCY_COLUMN
        cur.execute(
            """SELECT 1 FROM information_schema.columns
               WHERE table_schema = %s AND table_name = %s AND column_name = %s""",
            (schema, table, column),
        )
        has_column = cur.fetchone() is not None
    missing = [f"{schema}.{t}" for t in TENANCY_TABLES if t not in tables]
    return missing + ([] if has_column else [f"{schema}.{table}.{column}"])


def tenancy_schema(dsn: str, schema: str, *, tenancy: bool) -> tuple[str, ...]:
    """The tenancy tables the stream can carry; their absence is a ConfigurationError with tenancy on.

    With tenancy off an older scheduling database works without them: one log line says so.
    """
    with _connect(dsn) as conn:
        missing = _tenancy_missing(conn, schema)
    if missing and tenancy:
        raise ConfigurationError(
            "tenancy.enabled = true, but the scheduling database lacks "
            f"{', '.join(missing)} (CONTRACT §9: add them, or set tenancy.enabled = false)",
            key="tenancy.enabled",
        )
    if missing:
        log.info("source.tenancy_schema_absent", missing=missing)
    return tuple(t for t in TENANCY_TABLES if f"{schema}.{t}" not in missing)


def ensure_publication(dsn: str, schema: str, publication: str, *, tenancy: bool = False) -> bool:
    """Create the publication for the scheduler tables, or add missing ones; True if created.

    The tenancy tables are included when the database has them; with `tenancy` their absence raises
    ConfigurationError naming what is missing.
    """
    present_tenancy = tenancy_schema(dsn, schema, tenancy=tenancy)
    wanted = [t for t in TABLES if t not in TENANCY_TABLES or t in present_tenancy]
    tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in wanted)
    with _connect(dsn) as conn, conn.cursor() as cur:
        present = _published(conn, schema, publication)
        if present is None:
            cur.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication), tables)
            )
            log.info("source.publication_created", publication=publication)
            return True
        missing = [t for t in wanted if t not in present]
        if missing:
            cur.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(publication),
                    sql.SQL(", ").join(sql.Identifier(schema, t) for t in missing),
                )
            )
            if set(missing) & set(TENANCY_TABLES):
                # The stream carries a newly published table's changes from now on, not the rows it holds.
                log.warning(
                    "source.publication_extended",
                    publication=publication,
                    added=missing,
                    hint="rows already in these tables reach the ledger with a new snapshot: "
                    "mogli-bridge setup --reset-source",
                )
            else:
                log.info("source.publication_extended", publication=publication, added=missing)
        return False


def slot_exists(dsn: str, slot: str) -> bool:
    """True when a replication slot of that name exists in the cluster."""
    with _connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        return cur.fetchone() is not None


def ensure_slot(dsn: str, slot: str) -> bool:
    """Create a durable logical pgoutput slot in the DSN's database if missing; True if created."""
    with _connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if cur.fetchone() is not None:
            return False
        try:
            cur.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN))
        except psycopg2.errors.DuplicateObject:
            return False  # created concurrently by someone else
        log.info("source.slot_created", slot=slot)
        return True


def drop_slot(dsn: str, slot: str, wait_seconds: float = 10.0) -> bool:
    """Drop the slot if it exists, waiting for a just-closed walsender to let go; True if dropped."""
    deadline = time.monotonic() + wait_seconds
    with _connect(dsn) as conn, conn.cursor() as cur:
        while True:
            try:
                cur.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (slot,),
                )
                dropped = cur.rowcount > 0
                if dropped:
                    log.info("source.slot_dropped", slot=slot)
                return dropped
            except psycopg2.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What `check_source` found; `ready` is True when `problems` is empty."""

    ready: bool
    problems: tuple[str, ...]
    server_version: int
    wal_level: str
    tables_present: tuple[str, ...]
    publication_exists: bool
    slot_exists: bool


def _one(conn: PgConnection, query: str, args: tuple[object, ...] = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(query, args)
        row = cur.fetchone()
        return None if row is None else row[0]


def _table_problems(conn: PgConnection, schema: str, tenancy: bool) -> tuple[list[str], list[str]]:
    """Tables present, and problems with them (identity, privileges); tenancy tables may lack without it."""
    present: list[str] = []
    problems: list[str] = []
    with conn.cursor() as cur:
        for table in TABLES:
            cur.execute(
                """SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                                                  AND i.indisprimary),
                          has_table_privilege(c.oid, 'SELECT')
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')""",
                (schema, table),
            )
            row = cur.fetchone()
            if row is None:
                if tenancy or table not in TENANCY_TABLES:
                    problems.append(f"table {schema}.{table} does not exist")
                continue
            present.append(table)
            identity, has_pk, can_select = row
            if identity == "n" or (identity == "d" and not has_pk):
                problems.append(
                    f"table {schema}.{table} has no replica identity: add a primary key or run "
                    f"ALTER TABLE {schema}.{table} REPLICA IDENTITY FULL"
                )
            if not can_select:
                problems.append(f"the connecting role cannot SELECT from {schema}.{table}")
    return present, problems


def _slot_problems(conn: PgConnection, slot: str) -> tuple[bool, list[str]]:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT s.plugin, s.database = current_database(), s.wal_status
               FROM pg_replication_slots s WHERE s.slot_name = %s""",
            (slot,),
        )
        row = cur.fetchone()
    if row is None:
        return False, [f"replication slot {slot} does not exist (mogli-bridge setup creates it)"]
    plugin, same_db, wal_status = row
    problems = []
    if plugin != PLUGIN or not same_db:
        problems.append(f"replication slot {slot} exists but is not a {PLUGIN} slot of this database")
    if wal_status == "lost":
        problems.append(
            f"replication slot {slot} has lost required WAL: run `mogli-bridge setup --reset-source`, "
            "then `mogli-bridge reconcile`"
        )
    return True, problems


def check_source(
    dsn: str, schema: str, slot: str, publication: str, *, tenancy: bool = False
) -> SourceReport:
    """Check wal_level, tables, replica identity, publication, slot and privileges; never changes anything.

    With `tenancy` the tables and column of CONTRACT §9 are required too.
    """
    with _connect(dsn) as conn:
        version = int(str(_one(conn, "SHOW server_version_num"))) // 10000
        wal_level = str(_one(conn, "SHOW wal_level"))
        problems: list[str] = []
        if wal_level != "logical":
            problems.append(f"wal_level is {wal_level}; set wal_level = logical and restart PostgreSQL")
        if not _one(conn, "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"):
            problems.append(
                "the connecting role lacks the REPLICATION attribute (ALTER ROLE ... REPLICATION)"
            )
        present, table_problems = _table_problems(conn, schema, tenancy)
        problems += table_problems
        column = f"{schema}.{'.'.join(TENANCY_COLUMN)}"
        if tenancy and column in _tenancy_missing(conn, schema):
            problems.append(f"column {column} does not exist (tenancy.enabled = true needs it)")
        wanted = [t for t in TABLES if t in present or t not in TENANCY_TABLES]
        published = _published(conn, schema, publication)
        if published is None:
            problems.append(f"publication {publication} does not exist (mogli-bridge setup creates it)")
        elif missing := [t for t in wanted if t not in published]:
            problems.append(
                f"publication {publication} lacks {', '.join(missing)} (mogli-bridge setup adds them)"
            )
        has_slot, slot_problems = _slot_problems(conn, slot)
        problems += slot_problems
    return SourceReport(
        ready=not problems,
        problems=tuple(problems),
        server_version=version,
        wal_level=wal_level,
        tables_present=tuple(present),
        publication_exists=published is not None,
        slot_exists=has_slot,
    )
