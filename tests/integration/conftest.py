"""Replication fixtures: one private cluster per available PostgreSQL version (pg15 system, pg16 pgserver).

Each test gets its own database (reference schema + publication) and its own slot name; the slot is dropped
at teardown, waiting for a just-closed walsender to let go of it.
"""

from __future__ import annotations

import itertools
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import SourceSettings
from bridge.devtools.localpg import LocalPostgres, available_bindirs
from bridge.source.setup import drop_slot, ensure_publication
from tests.integration.replication_support import SourceDb, execute

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "bridge" / "schema" / "scheduler_schema.sql"
_counter = itertools.count(1)


def _major(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1].split(".")[0])


def _bindirs() -> list[Path]:
    # Importing pgserver (localpg does, to find its binaries) warns when XDG_RUNTIME_DIR is unset.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return available_bindirs()


_VERSIONS = {_major(b): b for b in reversed(_bindirs())}  # system binaries win per version


@pytest.fixture(scope="session", params=sorted(_VERSIONS), ids=[f"pg{v}" for v in sorted(_VERSIONS)])
def source_cluster(request: pytest.FixtureRequest) -> Iterator[LocalPostgres]:
    """A wal_level=logical cluster per available PostgreSQL major version."""
    pg = LocalPostgres(bindir=_VERSIONS[request.param])
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def source_db(source_cluster: LocalPostgres) -> Iterator[SourceDb]:
    """A fresh database with the reference schema and publication; drops the test's slot afterwards."""
    n = next(_counter)
    dsn = source_cluster.create_database(f"repl{n}")
    execute(dsn, SCHEMA_SQL.read_text())
    ensure_publication(dsn, "scheduler", "mogli_bridge")
    settings = SourceSettings(
        dsn=dsn,
        slot=f"test_slot_{n}",
        publication="mogli_bridge",
        status_interval_seconds=0.2,
        reconnect_max_seconds=2.0,
        queue_size=16,
    )
    yield SourceDb(source_cluster, dsn, settings)
    drop_slot(dsn, settings.slot)
