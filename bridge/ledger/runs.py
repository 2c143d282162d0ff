"""Reconciliation runs and the drift they find (a scoped ledger's: its org's runs and drift only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from bridge.ledger.scope import scope_of
from bridge.ledger.tables import DRIFT, RUNS
from bridge.ledger.workset import insert_many
from bridge.records.ledger import DriftItem, JsonObject, ReconciliationRun

# A run in these states stopped before its last chunk: a crash left it running, or it paused.
UNFINISHED_STATES = ("running", "paused")


def start_run(
    connection: Connection, requested_by: str, scope: JsonObject, dry_run: bool, now: datetime
) -> int:
    """Open a run in state 'running' for the scope's org (every org: the default org); returns its id."""
    values = {
        "org_id": scope_of(connection).written_org(),
        "requested_by": requested_by,
        "scope": dict(scope),
        "dry_run": dry_run,
        "state": "running",
        "started_at": now,
    }
    result = connection.execute(insert(RUNS).values(values).returning(RUNS.c.id))
    return int(result.scalar_one())


def finish_run(connection: Connection, run_id: int, state: str, summary: JsonObject, now: datetime) -> None:
    """Close a run with its final state and summary."""
    values = {"state": state, "summary": dict(summary), "finished_at": now}
    where = (RUNS.c.id == run_id) & scope_of(connection).rows(RUNS)
    connection.execute(update(RUNS).where(where).values(values))


def get_run(connection: Connection, run_id: int) -> ReconciliationRun | None:
    """One run, or None."""
    query = select(RUNS).where(RUNS.c.id == run_id, scope_of(connection).rows(RUNS))
    m = connection.execute(query).mappings().first()
    return ReconciliationRun(**dict(m)) if m is not None else None


def unfinished_runs(connection: Connection, requested_by: str) -> list[ReconciliationRun]:
    """Runs by this requester that stopped before their last chunk (paused, or left running), oldest first."""
    query = (
        select(RUNS)
        .where(
            RUNS.c.requested_by == requested_by,
            RUNS.c.state.in_(UNFINISHED_STATES),
            scope_of(connection).rows(RUNS),
        )
        .order_by(RUNS.c.id)
    )
    return [ReconciliationRun(**dict(m)) for m in connection.execute(query).mappings()]


def add_drift(connection: Connection, items: Sequence[DriftItem]) -> None:
    """Store drift items (one executemany); an item naming no org gets the scope's."""
    scope = scope_of(connection)
    rows: list[dict[str, Any]] = [
        {
            "run_id": d.run_id,
            "org_id": scope.written_org(d.org_id),
            "kind": d.kind,
            "link_id": d.link_id,
            "booking_id": d.booking_id,
            "salesforce_id": d.salesforce_id,
            "detail": dict(d.detail),
            "repaired": d.repaired,
        }
        for d in items
    ]
    insert_many(connection, DRIFT, rows)


def list_drift(
    connection: Connection,
    *,
    run_id: int | None = None,
    link_id: str | None = None,
    booking_id: str | None = None,
    limit: int = 100,
) -> list[DriftItem]:
    """Drift items, newest first."""
    query = _drift_query(connection, select(DRIFT), run_id, link_id, booking_id)
    query = query.order_by(DRIFT.c.id.desc()).limit(limit)
    return [DriftItem(**dict(m)) for m in connection.execute(query).mappings()]


def count_drift(
    connection: Connection,
    *,
    run_id: int | None = None,
    link_id: str | None = None,
    booking_id: str | None = None,
    repaired: bool | None = None,
) -> int:
    """How many items `list_drift` matches, without its limit; `repaired` narrows to repaired or not."""
    query = _drift_query(connection, select(func.count()).select_from(DRIFT), run_id, link_id, booking_id)
    if repaired is not None:
        query = query.where(DRIFT.c.repaired.is_(repaired))
    return int(connection.execute(query).scalar_one())


def _drift_query(
    connection: Connection, query: Any, run_id: int | None, link_id: str | None, booking_id: str | None
) -> Any:
    """`query` narrowed by the drift listing's filters and the connection's org scope."""
    query = query.where(scope_of(connection).rows(DRIFT))
    if run_id is not None:
        query = query.where(DRIFT.c.run_id == run_id)
    if link_id is not None:
        query = query.where(DRIFT.c.link_id == link_id)
    if booking_id is not None:
        query = query.where(DRIFT.c.booking_id == booking_id)
    return query
