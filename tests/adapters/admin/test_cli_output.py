"""The operator commands as a process against a real SQLite ledger: output that fits a terminal, the rows
left out said, and unknown or malformed ids and states refused with exit 2 naming the value."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.devtools.localpg import free_port
from bridge.devtools.stack import write_config
from bridge.devtools.terminal import on_a_terminal
from bridge.ledger import upgrade_to_head
from bridge.ledger.tables import ACTIVITIES, DRIFT, JOURNAL, LINKS, RUNS

ROOT = Path(__file__).resolve().parents[3]
AT = datetime(2026, 12, 3, 21, 4, 57, 123456, tzinfo=UTC)
BOOKINGS = 150
SFID = "00U5g00000AbCdEFGH"
LONG_ERROR = "FIELD_INTEGRITY_EXCEPTION: WhoId is not valid for this record type " * 3


@dataclass(frozen=True)
class World:
    """A config file whose ledger holds `BOOKINGS` activities of a few links, UUIDs throughout."""

    config: Path
    links: list[str]
    bookings: list[str]  # newest first, as listings sort them


def _cli(world_config: Path, *args: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    """`mogli-bridge --config ... <args>` as a process whose terminal is `columns` wide."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(world_config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def _config(tmp_path: Path, ledger_url: str) -> Path:
    """A config whose ledger is `ledger_url` and whose admin API has nobody listening."""
    return write_config(
        tmp_path / "bridge.toml",
        dsn="postgresql://nobody@127.0.0.1:1/none",
        ledger_url=ledger_url,
        emulator_url="http://127.0.0.1:1",
        admin_port=free_port(),
    )


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A set-up ledger with 6 links (long titles) and 150 bookings, some failed with long errors."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    links = [str(uuid.uuid4()) for _ in range(6)]
    bookings = [str(uuid.uuid4()) for _ in range(BOOKINGS)]
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.insert(LINKS),
            [
                {
                    "link_id": link,
                    "link_type": "one_on_one",
                    "title": f"Introductory consultation with the whole team, part {i}",
                    "problems": [],
                    "mogli_event_id": "a0B5g00000XyZaBCDE",
                    "state": "synced",
                    "updated_at": AT,
                }
                for i, link in enumerate(links)
            ],
        )
        c.execute(
            sa.insert(ACTIVITIES),
            [
                {
                    "booking_id": booking,
                    "link_id": links[i % len(links)],
                    "activity_id": SFID,
                    "start_at": AT + timedelta(days=i),
                    "problems": [],
                    "state": "failed" if i % 10 == 0 else "synced",
                    "attempts": 3 if i % 10 == 0 else 1,
                    "error_code": "FIELD_INTEGRITY_EXCEPTION" if i % 10 == 0 else None,
                    "last_error": LONG_ERROR if i % 10 == 0 else None,
                    "updated_at": AT - timedelta(minutes=i),
                }
                for i, booking in enumerate(bookings)
            ],
        )
        _fill_journal_and_drift(c, links, bookings)
    engine.dispose()
    return World(_config(tmp_path, url), links, bookings)


def _fill_journal_and_drift(c: sa.Connection, links: list[str], bookings: list[str]) -> None:
    """A journal entry per booking and a finished run with a drift item per link, long details in both."""
    detail = {"fields": ["Subject", "StartDateTime", "EndDateTime"], "reason": "the scheduler changed it" * 3}
    c.execute(
        sa.insert(JOURNAL),
        [
            {"at": AT, "direction": "outbound", "entity": "activity", "entity_key": b, "action": "upserted",
             "detail": detail}
            for b in bookings
        ],
    )  # fmt: skip
    run_id = c.execute(
        sa.insert(RUNS).values(requested_by="cli", scope={}, dry_run=True, state="finished", started_at=AT)
    ).inserted_primary_key[0]
    c.execute(
        sa.insert(DRIFT),
        [
            {"run_id": run_id, "kind": "field_mismatch", "link_id": link, "booking_id": bookings[i],
             "salesforce_id": SFID, "detail": detail, "repaired": False}
            for i, link in enumerate(links)
        ],
    )  # fmt: skip


def _assert_fits(text: str, width: int) -> None:
    """No line is wider than the terminal."""
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, f"{len(too_wide)} lines wider than {width}: {too_wide[:2]}"


@pytest.mark.parametrize("what", ["links", "activities", "journal", "failures", "drift"])
@pytest.mark.parametrize("width", [100, 120])
def test_every_listing_fits_the_terminal_with_one_line_per_row(world: World, what: str, width: int) -> None:
    """A table on a 100- or 120-column terminal has no line wider than the terminal, one line per row (ids
    never split over lines), short ids, and a footer saying how many rows of how many and how ids show."""
    result = _cli(world.config, "ledger", what, "--format", "table", columns=width)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    _assert_fits(text, width)
    assert "UUIDs show their first 8 characters; Salesforce ids are whole" in text
    if what == "activities":
        assert "showing 100 of 150" in text
        rows = [line for line in text.splitlines() if line.startswith(tuple(b[:8] for b in world.bookings))]
        assert [line[:8] for line in rows] == [b[:8] for b in world.bookings[:100]]
        assert all(SFID in line for line in rows)  # Salesforce ids whole
        assert world.bookings[0] not in text  # the full UUID is not shown
    if what == "links":
        assert sum(link[:8] in text for link in world.links) == 6 and "showing 6 of 6" in text
    if what == "journal":
        assert "showing 100 of 150" in text and world.bookings[-1][:8] in text
    if what == "drift":
        assert "showing 6 of 6" in text and sum(SFID in line for line in text.splitlines()) == 6
    if what == "failures":
        assert "showing 15 of 15" in text and "…" in text  # long errors cut, not wrapped


def test_limit_all_and_limit_zero_show_every_row(world: World) -> None:
    """--limit N shows N of M; --all and --limit 0 show every row; a negative limit is refused."""
    limited = _cli(world.config, "ledger", "activities", "--format", "table", "--limit", "7")
    assert "showing 7 of 150" in limited.stdout and "--all" in limited.stdout
    for flags in (["--all"], ["--limit", "0"]):
        result = _cli(world.config, "ledger", "activities", "--format", "csv", *flags)
        assert result.returncode == 0, result.stderr
        assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == BOOKINGS
        assert "showing" not in result.stderr
    refused = _cli(world.config, "ledger", "activities", "--limit", "-1")
    assert refused.returncode == 2 and "-1" in refused.stderr


def test_csv_and_json_are_complete_and_say_what_was_left_out(world: World) -> None:
    """CSV and JSON hold every column with full ids; when the limit cuts rows, stderr says N of M."""
    result = _cli(world.config, "ledger", "activities", "--format", "csv", "--limit", "5")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["booking_id"] for r in rows] == world.bookings[:5]
    assert rows[0]["last_error"] == LONG_ERROR
    assert "showing 5 of 150" in result.stderr
    body = json.loads(_cli(world.config, "ledger", "links", "--format", "json").stdout)
    assert sorted(item["link_id"] for item in body) == sorted(world.links)


def test_wide_shows_every_column_in_full(world: World) -> None:
    """--wide puts every column and the full UUIDs on one line per row."""
    result = _cli(world.config, "ledger", "activities", "--format", "table", "--wide", "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for booking in world.bookings[:3]:
        [line] = [x for x in lines if booking in x]
        assert world.links[world.bookings.index(booking) % 6] in line
    assert "owner_salesforce_id" in result.stdout and "showing 3 of 150" in result.stdout


def test_columns_picks_them_and_refuses_unknown_names(world: World) -> None:
    """--columns shows those columns in that order (every format); unknown names exit 2 naming them."""
    result = _cli(world.config, "ledger", "activities", "--format", "csv", "--columns", "state,booking_id")
    assert result.stdout.splitlines()[0] == "state,booking_id"
    refused = _cli(world.config, "ledger", "activities", "--columns", "state,bogus,nope")
    assert refused.returncode == 2
    assert "'bogus'" in refused.stderr and "'nope'" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ledger", "activities", "--state", "bogus"], "'bogus'"),
        (["ledger", "links", "--state", "cancelled"], "'cancelled'"),  # a state of activities, not links
        (["ledger", "journal", "--link", "not-a-uuid"], "'not-a-uuid'"),
        (["ledger", "activities", "--booking", "00000000-0000-0000-0000-000000000000"], "00000000-0000"),
        (["ledger", "journal", "--link", "00000000-0000-0000-0000-000000000001"], "00000000-0000"),
        (["retry", "--booking", "00000000-0000-0000-0000-000000000000"], "00000000-0000"),
        (["retry", "--booking", "b-1"], "'b-1'"),
        (["reconcile", "--dry-run", "--link", "not-a-uuid"], "'not-a-uuid'"),
        (["reconcile", "--dry-run", "--booking", "12"], "'12'"),
    ],
)
def test_unknown_or_malformed_ids_and_states_exit_2_naming_the_value(
    world: World, args: list[str], named: str
) -> None:
    """An id that is not a UUID, one the ledger has never seen, or a state the listing lacks: exit 2 with
    the value in the message, nothing done, no traceback."""
    result = _cli(world.config, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert named in result.stderr and "Traceback" not in result.stderr
    assert "requeued" not in result.stdout


def test_known_ids_still_filter(world: World) -> None:
    """A known link or booking narrows the listing (the checks refuse only what the ledger lacks)."""
    result = _cli(world.config, "ledger", "activities", "--format", "csv", "--link", world.links[1])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.returncode == 0 and len(rows) == BOOKINGS // 6
    assert {r["link_id"] for r in rows} == {world.links[1]}


@pytest.mark.parametrize(
    "args", [["ledger", "links"], ["ledger", "failures", "--all"], ["retry", "--all-failed"]]
)
def test_before_setup_commands_say_run_setup(tmp_path: Path, args: list[str]) -> None:
    """On a ledger that `setup` never migrated, the commands exit 2 saying to run setup, with no
    traceback."""
    config = _config(tmp_path, f"sqlite:///{tmp_path}/empty.sqlite3")
    result = _cli(config, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "run `mogli-bridge setup`" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 2


def _on_a_terminal(config: Path, *args: str, columns: int = 100) -> tuple[int, str]:
    """The command with stdout and stderr on a pseudo-terminal `columns` wide: (exit code, what it showed)."""
    return on_a_terminal(["--config", str(config), *args], columns=columns, timeout=60)


def test_status_on_a_terminal_is_a_short_summary_first(world: World) -> None:
    """On a terminal, status prints a summary that fits a screen (state, lag, pending, failed, API budget,
    the last finished run's unrepaired drift, reasons) and the long sections only with --verbose, after it."""
    code, text = _on_a_terminal(world.config, "status")
    assert code == 1  # the scheduling database of this config is unreachable
    lines = text.strip().splitlines()
    assert len(lines) <= 15, text
    _assert_fits(text, 100)
    assert lines[0].strip() == "mogli-bridge status: summary"
    assert re.search(r"^state\s+not running", text, re.M)
    assert re.search(r"^failed\s+15\s*$", text, re.M) and re.search(r"^pending\s+0\s*$", text, re.M)
    assert re.search(r"^replication lag\s+unknown", text, re.M)
    assert re.search(r"outstanding drift\s+6 unrepaired of 6 found by run 1 \(a dry run\)", text)
    assert "source: OperationalError" in text and "--verbose" in text
    assert "durability_problems" not in text
    code, verbose = _on_a_terminal(world.config, "status", "--verbose")
    assert verbose.index("outstanding drift") < verbose.index("durability_problems")


@pytest.mark.parametrize("args", [["status"], ["status", "--json"]])
def test_status_before_setup_says_run_setup(tmp_path: Path, args: list[str]) -> None:
    """On a ledger never set up, status says to run setup (no SQL error text) and exits 1."""
    config = _config(tmp_path, f"sqlite:///{tmp_path}/empty.sqlite3")
    result = _cli(config, *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "run `mogli-bridge setup`" in result.stdout and "no such table" not in result.stdout


def test_an_unreachable_ledger_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A ledger whose server does not answer: `ledger links` exits 1 with one line naming it unavailable."""
    config = _config(tmp_path, f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/ledger")
    result = _cli(config, "ledger", "links")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "ledger unavailable" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
