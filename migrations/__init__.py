"""The ledger's Alembic scripts, shipped in the wheel as `bridge._migrations` (see pyproject.toml)."""
