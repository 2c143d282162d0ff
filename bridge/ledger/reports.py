"""Operator read models: recent reconciliation runs, drift totals and stream checkpoints (of the scope)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select

from bridge.ledger.scope import SOURCE_STREAMS, scope_of, split_stream
from bridge.ledger.tables import CHECKPOINTS, DRIFT, RUNS
from bridge.records.ledger import ReconciliationRun


@dataclass(frozen=True, slots=True)
class DriftTotals:
    """Drift items over every reconciliation run: how many were found and how many repaired."""

    found: int
    repaired: int


def list_runs(connection: Connection, limit: int) -> list[ReconciliationRun]:
    """The newest reconciliation runs first."""
    query = select(RUNS).where(scope_of(connection).rows(RUNS)).order_by(RUNS.c.id.desc()).limit(limit)
    return [ReconciliationRun(**dict(m)) for m in connection.execute(query).mappings()]


def drift_totals(connection: Connection) -> DriftTotals:
    """Counts of drift items found and repaired, over all runs."""
    repaired = func.sum(case((DRIFT.c.repaired, 1), else_=0))
    query = select(func.count(), repaired).select_from(DRIFT).where(scope_of(connection).rows(DRIFT))
    found, fixed = connection.execute(query).one()
    return DriftTotals(found=int(found or 0), repaired=int(fixed or 0))


def list_checkpoints(connection: Connection) -> dict[str, str]:
    """Stream positions by stream name: every stream for every org; for one org its channels under their
    bare names, and the global source positions."""
    scope = scope_of(connection)
    query = select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position)
    positions: dict[str, str] = {}
    for stream, position in connection.execute(query):
        org_id, channel = split_stream(str(stream))
        if scope.every:
            positions[str(stream)] = str(position)
        elif channel in SOURCE_STREAMS or scope.holds(org_id):
            positions[channel] = str(position)
    return positions
