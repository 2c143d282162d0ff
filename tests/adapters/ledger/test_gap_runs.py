"""The ledger query behind resuming gap reconciliations: the unfinished runs of one requester."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from bridge.ledger import runs
from bridge.ledger.engine import make_engine
from bridge.ledger.migrate import upgrade_to_head
from tests.adapters.ledger.factory import NOW


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    """An engine on a ledger migrated to head."""
    upgrade_to_head(ledger_url)
    built = make_engine(ledger_url)
    try:
        yield built
    finally:
        built.dispose()


def _run(engine: Engine, requested_by: str, since: str, state: str | None = None) -> int:
    """Open a run by change time; close it in `state` unless None (left running)."""
    with engine.begin() as connection:
        run_id = runs.start_run(connection, requested_by, {"changed_since": since}, False, NOW)
        if state is not None:
            runs.finish_run(connection, run_id, state, {"message": state}, NOW)
    return run_id


def test_unfinished_runs_are_the_requesters_paused_and_running_runs_oldest_first(engine: Engine) -> None:
    """Paused runs and runs left running (a crash) of the requester are listed, oldest first; finished and
    failed runs, and other requesters' runs, are not."""
    left_running = _run(engine, "streaming", "2030-01-01T00:00:00+00:00")
    paused = _run(engine, "streaming", "2030-01-02T00:00:00+00:00", "paused")
    _run(engine, "streaming", "2030-01-03T00:00:00+00:00", "finished")
    _run(engine, "streaming", "2030-01-04T00:00:00+00:00", "failed")
    _run(engine, "admin-api", "2030-01-05T00:00:00+00:00", "paused")
    _run(engine, "cli", "2030-01-06T00:00:00+00:00")
    with engine.connect() as connection:
        found = runs.unfinished_runs(connection, "streaming")
    assert [(r.id, r.state) for r in found] == [(left_running, "running"), (paused, "paused")]
    assert [dict(r.scope)["changed_since"] for r in found] == [
        "2030-01-01T00:00:00+00:00",
        "2030-01-02T00:00:00+00:00",
    ]
