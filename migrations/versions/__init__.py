"""Alembic revisions of the ledger, oldest first (Alembic skips this file)."""
