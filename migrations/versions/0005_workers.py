"""Several workers (issue 14): the `workers` membership table and the `org_leases` of every org.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Both start empty: a worker writes its row at its first heartbeat, and its first lease round creates the
missing `org_leases` rows. A single daemon (SQLite, or tenancy off) never reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bridge.ledger.tables import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `workers` and `org_leases`."""
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.Text(), primary_key=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=False),
        sa.Column("reader", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "org_leases",
        sa.Column("org_id", sa.Text(), primary_key=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("taken_at", UtcDateTime(), nullable=True),
    )


def downgrade() -> None:
    """Drop them (no other table refers to them)."""
    op.drop_table("org_leases")
    op.drop_table("workers")
