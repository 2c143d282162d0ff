"""Alembic, programmatically: bring a ledger to the newest schema and report its revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from bridge.ledger.engine import make_engine


def migrations_dir() -> Path:
    """The repository's top-level `migrations/` directory."""
    # bridge/ledger/migrate.py -> repository root
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given ledger URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["ledger_url"] = url
    return config


def upgrade_to_head(url: str) -> str | None:
    """Apply every missing migration; returns the revision the ledger is at afterwards."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        return _revision(engine)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The ledger's schema revision, or None for an empty database."""
    engine = make_engine(url)
    try:
        return _revision(engine)
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision the code ships."""
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
