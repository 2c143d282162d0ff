"""`orgs` and `--org` through `bridge.cli.main`, on a SQLite ledger holding the default org and a second
org inserted by SQL: the org rows in every format, listings, status, retry and reconcile restricted to one
org, and unknown orgs or a ledger not set up refused with exit 2 and one line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.admin import AdminServer
from bridge.cli import main
from bridge.config import AdminSettings
from bridge.devtools.localpg import free_port
from bridge.devtools.stack import write_config
from bridge.ledger import upgrade_to_head
from bridge.ledger.repository import Ledger
from bridge.ledger.tables import ACTIVITIES
from bridge.metrics import BridgeMetrics
from bridge.records.ledger import DEFAULT_ORG
from tests.adapters.admin.conftest import TOKEN, Harness, Make
from tests.adapters.admin.fakes import FakeOptions, FakeRunner
from tests.adapters.admin.filled import Filled
from tests.adapters.admin.orgs_world import CHANNEL, OtherOrg, add_default_rows, add_org


@dataclass(frozen=True)
class Two:
    """A config whose ledger holds the default org's rows and another org's."""

    config: Path
    url: str
    default: OtherOrg
    other: OtherOrg


def _config(tmp_path: Path, url: str, admin_port: int | None = None) -> Path:
    return write_config(
        tmp_path / "bridge.toml",
        dsn="postgresql://nobody@127.0.0.1:1/none",
        ledger_url=url,
        emulator_url="http://127.0.0.1:1",
        admin_port=admin_port or free_port(),
        admin_token=TOKEN,
    )


@pytest.fixture
def two(tmp_path: Path) -> Two:
    """A set-up ledger with the default org's rows and a second org's; nobody listens on admin.listen."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    default = add_default_rows(url)
    other = add_org(url, name="Acme Clinics")
    return Two(_config(tmp_path, url), url, default, other)


def _run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _states(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {b: s for b, s in c.execute(sa.select(ACTIVITIES.c.booking_id, ACTIVITIES.c.state))}
    finally:
        engine.dispose()


def test_orgs_json_has_one_row_per_org_with_counts_budget_and_whole_positions(
    two: Two, capsys: pytest.CaptureFixture[str]
) -> None:
    """`orgs --format json`: the default org as 'default' first, then the other org; each with its own
    pending (a link and two bookings) and failed counts, API budget, whole positions and an empty worker."""
    code, out, _ = _run(capsys, two.config, "orgs", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["org_id"] for r in rows] == [DEFAULT_ORG, two.other.org_id]
    default, other = rows
    assert (default["pending"], default["failed"], default["positions"]) == (3, 1, {CHANNEL: "815"})
    assert (other["name"], other["state"], other["pending"], other["failed"]) == (
        "Acme Clinics",
        "active",
        3,
        1,
    )
    assert (other["api_used"], other["api_limit"], other["worker"]) == (120, 15000, None)
    assert other["positions"] == {CHANNEL: two.other.position}


def test_orgs_csv_holds_every_column_and_full_ids(two: Two, capsys: pytest.CaptureFixture[str]) -> None:
    """`orgs --format csv`: the contract's columns in order and the org's whole id."""
    code, out, _ = _run(capsys, two.config, "orgs", "--format", "csv")
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == [
        "org_id", "name", "state", "reason", "pending", "failed",
        "api_used", "api_limit", "positions", "worker",
    ]  # fmt: skip
    rows = list(reader)
    assert rows[1]["org_id"] == two.other.org_id
    assert json.loads(rows[1]["positions"]) == {CHANNEL: two.other.position}


def test_orgs_table_fits_100_columns_and_says_how_many_it_shows(
    two: Two, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orgs --format table` on a 100-column terminal: no line wider, org ids shortened to 8 characters,
    the short positions, and 'showing 1 of 2' with --limit 1."""
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = _run(capsys, two.config, "orgs", "--format", "table", "--limit", "1")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "showing 1 of 2 orgs" in out
    assert DEFAULT_ORG in out and two.other.org_id[:8] not in out
    code, out, _ = _run(capsys, two.config, "orgs", "--format", "table")
    assert two.other.org_id[:8] in out and two.other.org_id not in out
    assert f"EventChangeEvent {two.other.position}" in out and "120/15000" in out
    code, out, _ = _run(capsys, two.config, "orgs", "--format", "table", "--wide")
    assert two.other.org_id in out and f'{{"{CHANNEL}": "{two.other.position}"}}' in out


def test_orgs_refuses_an_unknown_column(two: Two, capsys: pytest.CaptureFixture[str]) -> None:
    """`orgs --columns` with a name the listing lacks is exit 2 naming it."""
    code, _, err = _run(capsys, two.config, "orgs", "--columns", "org_id,colour")
    assert code == 2 and "'colour'" in err


def test_orgs_on_a_ledger_not_set_up_is_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`orgs` before `setup`: exit 2 and one line saying to run setup."""
    config = _config(tmp_path, f"sqlite:///{tmp_path}/empty.sqlite3")
    code, out, err = _run(capsys, config, "orgs")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "setup" in err


def test_ledger_with_org_lists_only_that_orgs_rows(two: Two, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger activities --org ID`: that org's bookings only; `--org default`: the default org's only; a
    table says which org it shows."""
    _, out, _ = _run(capsys, two.config, "ledger", "activities", "--org", two.other.org_id, "--format", "csv")
    assert {r["booking_id"] for r in csv.DictReader(io.StringIO(out))} == {
        *two.other.pending,
        two.other.failed,
    }
    _, out, _ = _run(capsys, two.config, "ledger", "failures", "--org", DEFAULT_ORG, "--format", "csv")
    assert [r["key"] for r in csv.DictReader(io.StringIO(out))] == [two.default.failed]
    _, out, _ = _run(capsys, two.config, "ledger", "links", "--org", two.other.org_id, "--format", "table")
    assert f"org {two.other.org_id} only" in out and "showing 1 of 1" in out


def test_ledger_with_org_refuses_an_unknown_org_and_another_orgs_booking(
    two: Two, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --org is exit 2 naming it; a booking of another org asked for with --org is exit 2 too."""
    code, _, err = _run(capsys, two.config, "ledger", "links", "--org", "ghost-org")
    assert code == 2 and "ghost-org" in err and err.strip().count("\n") == 0
    code, _, err = _run(
        capsys, two.config, "ledger", "journal", "--org", two.other.org_id, "--booking", two.default.failed
    )
    assert code == 2 and two.default.failed in err


def test_retry_with_org_requeues_only_that_orgs_failures_in_the_ledger(
    two: Two, capsys: pytest.CaptureFixture[str]
) -> None:
    """`retry --all-failed --org ID` without a daemon: that org's failed booking is pending again, the
    default org's stays failed; an unknown org is exit 2."""
    code, out, _ = _run(capsys, two.config, "retry", "--all-failed", "--org", two.other.org_id)
    assert code == 0 and "requeued 1 record(s)" in out
    states = _states(two.url)
    assert (states[two.other.failed], states[two.default.failed]) == ("pending", "failed")
    code, _, err = _run(capsys, two.config, "retry", "--all-failed", "--org", "ghost-org")
    assert code == 2 and "ghost-org" in err


def test_status_with_org_shows_that_orgs_figures(two: Two, capsys: pytest.CaptureFixture[str]) -> None:
    """`status --org ID --json`: the ledger's pending and failed are the org's, its positions its own, and
    the summary names the org, its state and API budget (the source is unreachable here: exit 1)."""
    add_org(two.url, name="Other", reason="API allocation exhausted", state="paused")
    code, out, _ = _run(capsys, two.config, "status", "--org", two.other.org_id, "--json")
    assert code == 1
    report = json.loads(out)
    assert (report["ledger"]["pending"], report["ledger"]["failed"]) == (3, 1)
    assert report["ledger"]["salesforce_stream_positions"] == {CHANNEL: two.other.position}
    summary = report["summary"]
    assert (summary["org"], summary["org_state"], summary["api_used"]) == (two.other.org_id, "active", 120)
    code, _, err = _run(capsys, two.config, "status", "--org", "ghost-org")
    assert code == 2 and "ghost-org" in err


def test_status_without_org_summarises_the_orgs_states_and_paused_reasons(
    two: Two, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --json` on a ledger of several orgs: how many are active, paused and disconnected, and why
    the paused one is paused; the ledger's figures cover every org."""
    paused = add_org(two.url, name="Other", reason="API allocation exhausted", state="paused")
    _, out, _ = _run(capsys, two.config, "status", "--json")
    report = json.loads(out)
    assert report["summary"]["orgs"] == (
        f"2 active, 1 paused, 0 disconnected (paused: {paused.org_id}: API allocation exhausted)"
    )
    assert report["ledger"]["failed"] == 3


def test_reconcile_with_an_unknown_org_is_exit_2(two: Two, capsys: pytest.CaptureFixture[str]) -> None:
    """`reconcile --org ghost` is refused before anything runs: exit 2 naming the org."""
    code, _, err = _run(capsys, two.config, "reconcile", "--org", "ghost-org", "--dry-run")
    assert code == 2 and "ghost-org" in err


@pytest.fixture
async def daemon(
    make: Make, tmp_path: Path
) -> AsyncIterator[tuple[Path, OtherOrg, dict[str | None, FakeRunner]]]:
    """A listening admin API over a ledger with two orgs, each org with its runner; and a config for it."""
    h: Harness = await make()
    url = str(h.ledger.engine.url)
    org = add_org(url)
    runners = {None: FakeRunner(h.ledger.scoped(None)), org.org_id: FakeRunner(h.ledger.scoped(org.org_id))}
    server: AdminServer[Any] = AdminServer(
        AdminSettings(listen="127.0.0.1:0", token=TOKEN),
        probe=h.server.probe,
        ledger=h.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=h.pusher.notify,
        make_options=FakeOptions,
        org_runner=runners.get,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.listening.wait(), 30)
    yield _config(tmp_path, url, server.port), org, runners
    stop.set()
    await task


async def test_reconcile_with_org_asks_the_daemon_for_a_run_of_that_org(
    daemon: tuple[Path, OtherOrg, dict[str | None, FakeRunner]],
) -> None:
    """`reconcile --org ID --json` with a daemon: the run is opened by that org's runner (not the default
    org's) and the command prints its outcome."""
    config, org, runners = daemon
    out = io.StringIO()

    def reconcile() -> int:
        from contextlib import redirect_stdout

        with redirect_stdout(out):
            return main(["--config", str(config), "reconcile", "--org", org.org_id, "--dry-run", "--json"])

    code = await asyncio.to_thread(reconcile)
    assert code == 0
    assert len(runners[org.org_id].started) == 1 and not runners[None].started
    outcome = json.loads(out.getvalue())
    assert (outcome["via"], outcome["run_id"]) == ("daemon", runners[org.org_id].finished[0])


async def test_ledger_scoped_view_used_by_commands_sees_one_org(two: Two) -> None:
    """The commands' org view (checks.in_org) counts only that org's rows; without --org every org's."""
    from bridge.commands.checks import in_org
    from bridge.ledger import queries

    ledger = Ledger.from_url(two.url)
    try:
        every = ledger.call_read(queries.counts)
        one = in_org(ledger, two.other.org_id).call_read(queries.counts)
        default = in_org(ledger, DEFAULT_ORG).call_read(queries.counts)
    finally:
        ledger.dispose()
    assert (every["activities.failed"], one["activities.failed"], default["activities.failed"]) == (2, 1, 1)


async def test_in_process_reconcile_reaches_the_org_through_its_own_settings(two: Two) -> None:
    """In-process, `reconcile --org ID` builds its Salesforce client from the org's settings (JWT bearer at
    the org's login URL as its integration user); the default org and no --org keep the settings as they
    are; an org the ledger lacks is refused naming it."""
    from bridge.commands.checks import UsageError
    from bridge.commands.reconcile import settings_for_org
    from bridge.config import load_settings

    settings = load_settings(two.config)
    ledger = Ledger.from_url(two.url)
    try:
        org = await settings_for_org(settings, ledger, two.other.org_id)
        assert (org.salesforce.auth, org.salesforce.login_url) == ("jwt", "http://127.0.0.1:1")
        assert org.salesforce.username == "integration@acme.example" and org.salesforce.password == ""
        assert await settings_for_org(settings, ledger, DEFAULT_ORG) is settings
        assert await settings_for_org(settings, ledger, None) is settings
        with pytest.raises(UsageError, match="ghost-org"):
            await settings_for_org(settings, ledger, "ghost-org")
    finally:
        await ledger.close()


def test_orgs_in_a_pipe_is_csv(two: Two) -> None:
    """`mogli-bridge orgs` as a process whose output is a pipe prints CSV with a header and one line per
    org, and exits 0."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(two.config), "orgs"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["org_id"] for r in rows] == [DEFAULT_ORG, two.other.org_id]


async def test_retry_with_org_goes_through_the_daemon_for_that_org_only(
    daemon: tuple[Path, OtherOrg, dict[str | None, FakeRunner]],
) -> None:
    """`retry --all-failed --org ID` with a daemon: the daemon requeues that org's failed booking and leaves
    the default org's failed booking failed."""
    config, org, _ = daemon
    out = io.StringIO()

    def retry() -> int:
        from contextlib import redirect_stdout

        with redirect_stdout(out):
            return main(["--config", str(config), "retry", "--all-failed", "--org", org.org_id])

    assert await asyncio.to_thread(retry) == 0
    assert "requeued 1 record(s) through the running daemon" in out.getvalue()
    url = str(config.parent / "ledger.sqlite3")
    states = _states(f"sqlite:///{url}")
    assert states[org.failed] == "pending" and states[Filled().failed] == "failed"
