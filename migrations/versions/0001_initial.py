"""The initial ledger: users, links, activities, journal, checkpoints, reconciliation runs and drift.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sync_columns() -> list[sa.Column[object]]:
    """The outbox columns links and activities share (fresh objects per table)."""
    return [
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("synced_version", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", _TS, nullable=True),
    ]


def upgrade() -> None:
    """Create every ledger table and its indexes."""
    # Long by nature: Alembic's one upgrade() per revision, the whole initial schema top to bottom.
    op.create_table(
        "users",
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("salesforce_user_id", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "links",
        sa.Column("link_id", sa.Text(), primary_key=True),
        sa.Column("link_type", sa.Text(), nullable=True),
        sa.Column("owner_user_id", sa.Text(), nullable=True),
        sa.Column("owner_salesforce_id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=True),
        sa.Column("source_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("mogli_event_id", sa.Text(), nullable=True),
        *_sync_columns(),
        sa.Column("first_booked_at", _TS, nullable=True),
        sa.Column("synced_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_links_state_next_attempt_at", "links", ["state", "next_attempt_at"])
    op.create_index("ix_links_owner_user_id", "links", ["owner_user_id"])
    op.create_table(
        "activities",
        sa.Column("booking_id", sa.Text(), primary_key=True),
        sa.Column("link_id", sa.Text(), nullable=True),
        sa.Column("activity_id", sa.Text(), nullable=True),
        sa.Column("owner_salesforce_id", sa.Text(), nullable=True),
        sa.Column("who_id", sa.Text(), nullable=True),
        sa.Column("what_id", sa.Text(), nullable=True),
        sa.Column("start_at", _TS, nullable=True),
        sa.Column("end_at", _TS, nullable=True),
        sa.Column("assigned_user_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("related_record_id", sa.Text(), nullable=True),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("source_deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        *_sync_columns(),
        sa.Column("source_lsn", sa.BigInteger(), nullable=True),
        sa.Column("synced_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_activities_state_next_attempt_at", "activities", ["state", "next_attempt_at"])
    op.create_index("ix_activities_link_id", "activities", ["link_id"])
    op.create_index("ix_activities_assigned_user_id", "activities", ["assigned_user_id"])
    op.create_index("ix_activities_activity_id", "activities", ["activity_id"])
    op.create_table(
        "journal",
        sa.Column("id", _KEY, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_journal_entity_entity_key", "journal", ["entity", "entity_key"])
    op.create_index("ix_journal_at", "journal", ["at"])
    op.create_table(
        "checkpoints",
        sa.Column("stream", sa.Text(), primary_key=True),
        sa.Column("position", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", _KEY, primary_key=True, autoincrement=True),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
    )
    op.create_table(
        "drift",
        sa.Column("id", _KEY, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", _KEY, sa.ForeignKey("reconciliation_runs.id", name="fk_drift_run_id"), nullable=False
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("link_id", sa.Text(), nullable=True),
        sa.Column("booking_id", sa.Text(), nullable=True),
        sa.Column("salesforce_id", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("repaired", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index("ix_drift_run_id", "drift", ["run_id"])


def downgrade() -> None:
    """Drop every ledger table."""
    for table in ("drift", "reconciliation_runs", "checkpoints", "journal", "activities", "links", "users"):
        op.drop_table(table)
