"""Views for analysts: per-link summary, failures by reason, daily volumes, drift per reconciliation run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

The views are plain SQL over the tables of 0001 and answer the same on SQLite and PostgreSQL; only the
"day of a timestamp" expression differs (days are UTC days).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("v_link_summary", "v_failures_by_reason", "v_daily_volume", "v_reconciliation_drift")

_LINK_SUMMARY = """
CREATE VIEW v_link_summary AS
SELECT l.link_id, l.link_type, l.title, l.mogli_event_id, l.state AS link_state,
       COUNT(a.booking_id) AS bookings,
       SUM(CASE WHEN a.state = 'pending' THEN 1 ELSE 0 END) AS pending,
       SUM(CASE WHEN a.state = 'synced' THEN 1 ELSE 0 END) AS synced,
       SUM(CASE WHEN a.state = 'failed' THEN 1 ELSE 0 END) AS failed,
       SUM(CASE WHEN a.state = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
       SUM(CASE WHEN a.state = 'deleted_in_salesforce' THEN 1 ELSE 0 END) AS deleted_in_salesforce,
       SUM(CASE WHEN a.state = 'skipped' THEN 1 ELSE 0 END) AS skipped,
       l.synced_at AS mogli_event_synced_at,
       MAX(a.synced_at) AS last_booking_synced_at
FROM links l LEFT JOIN activities a ON a.link_id = l.link_id
GROUP BY l.link_id, l.link_type, l.title, l.mogli_event_id, l.state, l.synced_at
"""

_FAILURES = """
CREATE VIEW v_failures_by_reason AS
SELECT entity, COALESCE(error_code, 'UNKNOWN') AS error_code, COUNT(*) AS failures,
       MIN(updated_at) AS first_seen, MAX(updated_at) AS last_seen
FROM (
    SELECT 'link' AS entity, error_code, updated_at FROM links WHERE state = 'failed'
    UNION ALL
    SELECT 'activity' AS entity, error_code, updated_at FROM activities WHERE state = 'failed'
) failed
GROUP BY entity, COALESCE(error_code, 'UNKNOWN')
"""

_DAILY = """
CREATE VIEW v_daily_volume AS
SELECT {day} AS day, direction, entity, action, COUNT(*) AS changes
FROM journal
GROUP BY {day}, direction, entity, action
"""

_DRIFT = """
CREATE VIEW v_reconciliation_drift AS
SELECT r.id AS run_id, r.requested_by, r.dry_run, r.state, r.started_at, r.finished_at,
       COUNT(d.id) AS drift_found,
       SUM(CASE WHEN d.repaired THEN 1 ELSE 0 END) AS drift_repaired
FROM reconciliation_runs r LEFT JOIN drift d ON d.run_id = r.id
GROUP BY r.id, r.requested_by, r.dry_run, r.state, r.started_at, r.finished_at
"""


def _day_expression() -> str:
    """The UTC calendar day of `journal.at` as text YYYY-MM-DD."""
    if op.get_bind().dialect.name == "postgresql":
        return "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return "substr(at, 1, 10)"  # SQLite keeps naive UTC text, 'YYYY-MM-DD HH:MM:SS...'


def upgrade() -> None:
    """Create the analyst views."""
    op.execute(_LINK_SUMMARY)
    op.execute(_FAILURES)
    op.execute(_DAILY.format(day=_day_expression()))
    op.execute(_DRIFT)


def downgrade() -> None:
    """Drop the analyst views."""
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
