"""What the wheel ships: every package, the Alembic scripts as a package, one scheduler schema."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from bridge.ledger.migrate import head_revision, migrations_dir

ROOT = Path(__file__).resolve().parents[2]


def _setuptools_table() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return table


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """Each folder of Python modules under bridge/ (and migrations/ as bridge._migrations) is a package
    the wheel ships: pyproject.toml lists them by hand, so a folder left out would vanish from the wheel."""
    setuptools = _setuptools_table()
    listed = set(setuptools["packages"])
    folders = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in {module.parent for module in (ROOT / "bridge").rglob("*.py")}
        if "__pycache__" not in folder.parts
    }
    folders |= {"bridge.schema"}  # data only: scheduler_schema.sql for `setup --create-demo-schema`
    folders |= {
        "bridge._migrations" + "".join(f".{p}" for p in folder.relative_to(ROOT / "migrations").parts)
        for folder in {module.parent for module in (ROOT / "migrations").rglob("*.py")}
        if "__pycache__" not in folder.parts
    }
    assert listed == folders
    assert setuptools["package-dir"] == {"bridge._migrations": "migrations"}


def test_alembic_scripts_are_found_through_the_installed_package() -> None:
    """migrate.py reads the Alembic scripts from the package bridge._migrations (the repository's
    migrations/ folder), not from a path relative to the checkout; the head revision is found there."""
    package_folder = resources.files("bridge._migrations")
    assert isinstance(package_folder, Path)
    assert package_folder.resolve() == (ROOT / "migrations").resolve()
    assert migrations_dir() == package_folder
    assert (migrations_dir() / "env.py").is_file()
    assert (migrations_dir() / "script.py.mako").is_file()
    shipped = {script.name.split("_")[0] for script in (migrations_dir() / "versions").glob("[0-9]*.py")}
    assert head_revision() in shipped


def test_config_copy_of_the_scheduler_schema_is_the_packaged_one() -> None:
    """config/scheduler_schema.sql (the contract's name for it, a link) reads byte for byte as the packaged
    bridge/schema/scheduler_schema.sql, the one source of truth the wheel ships and the tests load."""
    packaged = resources.files("bridge.schema").joinpath("scheduler_schema.sql").read_bytes()
    assert packaged == (ROOT / "config" / "scheduler_schema.sql").read_bytes()
    assert b"CREATE TABLE scheduler.bookings" in packaged
