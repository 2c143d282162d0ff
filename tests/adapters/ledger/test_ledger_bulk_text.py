"""The SQLite bulk path (`bulk_execute`) stores exactly the text SQLAlchemy's ordinary path stores: the
ledger's text timestamps sort and compare the same whichever path wrote them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.ledger.tables import UtcDateTime
from bridge.ledger.workset import bulk_execute

METADATA = sa.MetaData()
ROWS = sa.Table(
    "rows",
    METADATA,
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("at", UtcDateTime()),
    sa.Column("problems", sa.JSON),
)
VALUES = [
    (datetime(2026, 11, 24, 12, 0, tzinfo=UTC), []),  # no microseconds: still written with six digits
    (datetime(2026, 11, 24, 12, 0, 0, 5, tzinfo=UTC), ["bad value"]),
    (datetime(2026, 11, 24, 13, 30, tzinfo=timezone(timedelta(hours=2))), {"a": 1}),  # stored as UTC
    (None, None),
]


def _stored(engine: sa.Engine, bulk: bool) -> list[tuple[object, ...]]:
    METADATA.drop_all(engine)
    METADATA.create_all(engine)
    rows = [{"k": i, "at": at, "problems": problems} for i, (at, problems) in enumerate(VALUES)]
    with engine.begin() as connection:
        if bulk:
            bulk_execute(connection, sa.insert(ROWS), rows)
        else:
            for row in rows:
                connection.execute(sa.insert(ROWS), row)
    with engine.connect() as connection:
        return [tuple(r) for r in connection.exec_driver_sql("SELECT k, at, problems FROM rows ORDER BY k")]


def test_the_bulk_path_writes_the_text_the_ordinary_path_writes(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    try:
        ordinary, bulk = _stored(engine, bulk=False), _stored(engine, bulk=True)
    finally:
        engine.dispose()
    assert bulk == ordinary
    assert ordinary[0][1] == "2026-11-24 12:00:00.000000" and ordinary[2][1] == "2026-11-24 11:30:00.000000"


def test_the_bulk_path_refuses_a_naive_timestamp(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    METADATA.create_all(engine)
    naive = [{"k": i, "at": datetime(2026, 11, 24, 12, 0), "problems": []} for i in range(2)]
    try:
        with engine.begin() as connection, pytest.raises(ValueError, match="timezone-aware"):
            bulk_execute(connection, sa.insert(ROWS), naive)
    finally:
        engine.dispose()
