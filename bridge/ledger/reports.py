"""Operator read models: recent reconciliation runs, drift totals and every stream checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select

from bridge.ledger.tables import CHECKPOINTS, DRIFT, RUNS
from bridge.records.ledger import ReconciliationRun


@dataclass(frozen=True, slots=True)
class DriftTotals:
    """Drift items over every reconciliation run: how many were found and how many repaired."""

    found: int
    repaired: int


def list_runs(connection: Connection, limit: int) -> list[ReconciliationRun]:
    """The newest reconciliation runs first."""
    query = select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
    return [ReconciliationRun(**dict(m)) for m in connection.execute(query).mappings()]


def drift_totals(connection: Connection) -> DriftTotals:
    """Counts of drift items found and repaired, over all runs."""
    repaired = func.sum(case((DRIFT.c.repaired, 1), else_=0))
    found, fixed = connection.execute(select(func.count(), repaired).select_from(DRIFT)).one()
    return DriftTotals(found=int(found or 0), repaired=int(fixed or 0))


def list_checkpoints(connection: Connection) -> dict[str, str]:
    """Every stream position, keyed by stream name."""
    query = select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position)
    return {str(stream): str(position) for stream, position in connection.execute(query)}
