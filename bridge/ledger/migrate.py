"""Alembic, programmatically: bring a ledger to the newest schema and report its revision."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from bridge.ledger.engine import make_engine

MIGRATIONS_PACKAGE = "bridge._migrations"


def migrations_dir() -> Path:
    """Where the installed `bridge._migrations` package (the repository's `migrations/`) lies on disk."""
    scripts = resources.files(MIGRATIONS_PACKAGE)
    # Alembic reads its scripts from a folder: an installed wheel or a checkout gives one, a zip would not.
    if not isinstance(scripts, Path):
        raise RuntimeError(f"{MIGRATIONS_PACKAGE} is not a folder on disk ({scripts!r}); install unzipped")
    return scripts


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
