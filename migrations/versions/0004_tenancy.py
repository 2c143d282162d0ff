"""Many orgs (CONTRACT §9): `org_id` on the tables that hold an org's rows, and the `orgs` table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

An existing ledger keeps all of its data: every row belongs to the default org of `[salesforce]`, whose
org_id is NULL, so the new columns start NULL. The default org gets its `orgs` row ('default', active).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from bridge.ledger.tables import UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORG_TABLES = ("users", "links", "activities", "journal", "reconciliation_runs", "drift")


def upgrade() -> None:
    """Add org_id columns, their indexes and the `orgs` table with the default org's row."""
    orgs = op.create_table(
        "orgs",
        sa.Column("org_id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text()),
        sa.Column("login_url", sa.Text()),
        sa.Column("username", sa.Text()),
        sa.Column("connection", sa.Text()),
        sa.Column("salesforce_org_id", sa.Text()),
        sa.Column("instance_url", sa.Text()),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("api_used", sa.Integer()),
        sa.Column("api_limit", sa.Integer()),
        sa.Column("state_since", UtcDateTime()),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    now = datetime.now(UTC)
    op.bulk_insert(orgs, [{"org_id": "default", "state": "active", "state_since": now, "updated_at": now}])
    for table in ORG_TABLES:
        op.add_column(table, sa.Column("org_id", sa.Text(), nullable=True))
    op.create_index("ix_users_org_id", "users", ["org_id"])
    op.create_index("ix_links_org_id_state", "links", ["org_id", "state"])
    op.create_index(
        "ix_activities_org_id_state_updated_at", "activities", ["org_id", "state", "updated_at", "booking_id"]
    )


def downgrade() -> None:
    """Drop them again (rows of other orgs then look like the default org's: downgrade only an unused one)."""
    op.drop_index("ix_activities_org_id_state_updated_at", table_name="activities")
    op.drop_index("ix_links_org_id_state", table_name="links")
    op.drop_index("ix_users_org_id", table_name="users")
    for table in reversed(ORG_TABLES):
        # A plain DROP COLUMN (SQLite 3.35+ has it): a batch copy of the table would break the analyst views
        # that read it.
        op.drop_column(table, "org_id")
    op.drop_table("orgs")
