"""The reconcile command's pure parts: option parsing, the run's scope key, the JSON and table output."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import structlog
from rich.console import Console

from bridge.commands.reconcile import TABLE_ITEMS, Outcome, ProgressBar, outcome_json, parse_when, print_table
from bridge.logs import configure_logging
from bridge.pipeline.reconcile import ReconcileOptions
from bridge.records.ledger import DriftItem


def _outcome(items: int) -> Outcome:
    drift = tuple(
        DriftItem(
            7, "field_mismatch", "l-1", f"b-{i}", None, {"field": "Subject", "repair": "requeue"}, i % 2 == 0
        )
        for i in range(items)
    )
    return Outcome(
        7, "finished", False, {"field_mismatch": items}, (items + 1) // 2, None, drift, "in-process"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-06-01", datetime(2030, 6, 1, tzinfo=UTC)),
        ("2030-06-01T15:30", datetime(2030, 6, 1, 15, 30, tzinfo=UTC)),
        ("2030-06-01T15:30+02:00", datetime(2030, 6, 1, 15, 30, tzinfo=timezone(timedelta(hours=2)))),
        (None, None),
        ("", None),
    ],
)
def test_dates_are_iso_and_naive_means_utc(text: str | None, expected: datetime | None) -> None:
    """--since/--until take an ISO date or datetime; without a zone it is UTC."""
    assert parse_when(text, "since") == expected


def test_a_bad_date_names_the_option() -> None:
    """An unreadable date is a usage error that names the option."""
    with pytest.raises(ValueError, match="--until"):
        parse_when("next tuesday", "until")


def test_the_scope_is_the_resume_key_whatever_the_order_of_ids() -> None:
    """Two runs with the same ids in another order have the same scope, so one resumes the other."""
    a = ReconcileOptions(links=("b", "a"), since=datetime(2030, 1, 1, tzinfo=UTC))
    b = ReconcileOptions(links=("a", "b"), since=datetime(2030, 1, 1, tzinfo=UTC), requested_by="admin-api")
    assert (
        a.scope()
        == b.scope()
        == {
            "links": ["a", "b"],
            "bookings": [],
            "since": "2030-01-01T00:00:00+00:00",
            "until": None,
        }
    )
    assert not a.full and ReconcileOptions().full


def test_json_output_has_counts_and_every_item_without_row_ids() -> None:
    """--json: run id, state, totals, counts by kind and each item (no internal ids)."""
    doc = outcome_json(_outcome(3))
    assert {k: doc[k] for k in ("run_id", "state", "total", "repaired", "counts", "via")} == {
        "run_id": 7,
        "state": "finished",
        "total": 3,
        "repaired": 2,
        "counts": {"field_mismatch": 3},
        "via": "in-process",
    }
    assert doc["items"][0] == {
        "kind": "field_mismatch",
        "link_id": "l-1",
        "booking_id": "b-0",
        "salesforce_id": None,
        "detail": {"field": "Subject", "repair": "requeue"},
        "repaired": True,
        "org_id": None,
    }


def test_table_lists_kinds_and_caps_the_items() -> None:
    """The table shows found/repaired per kind and at most TABLE_ITEMS items, pointing at --json."""
    out = io.StringIO()
    print_table(_outcome(TABLE_ITEMS + 5), Console(file=out, width=200))
    text = out.getvalue()
    assert "field_mismatch" in text and f"{TABLE_ITEMS + 5}" in text
    assert "b-0 " in text and f"b-{TABLE_ITEMS + 4} " not in text
    assert "and 5 more items" in text


def test_progress_bar_only_on_a_terminal() -> None:
    """Off a terminal no progress callback is given; on one it follows each phase."""
    with ProgressBar(Console(file=io.StringIO()), enabled=False) as report:
        assert report is None
    out = io.StringIO()
    with ProgressBar(Console(file=out, force_terminal=True, width=80), enabled=True) as report:
        assert report is not None
        report("links", 1, 2)
        report("bookings", 3, 4)
    assert "bookings" in out.getvalue() and "3/4" in out.getvalue()


def test_a_window_that_ends_before_it_starts_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--since after --until: exit 2 with a message, before anything is read."""
    from bridge.commands.reconcile import run_reconcile
    from bridge.config import Settings

    code = run_reconcile(
        Settings(), links=(), bookings=(), since="2030-02-01", until="2030-01-01", dry_run=True, as_json=True
    )
    assert code == 2 and "--since must be before --until" in capsys.readouterr().err


def test_a_change_window_is_part_of_the_scope_and_absent_otherwise() -> None:
    """changed_since/changed_until enter the scope (the resume key) only when given, so runs stored before
    the option existed keep resuming with the same key."""
    since = datetime(2030, 1, 1, 12, tzinfo=UTC)
    options = ReconcileOptions(changed_since=since, requested_by="streaming")
    assert options.scope() == {
        "links": [],
        "bookings": [],
        "since": None,
        "until": None,
        "changed_since": "2030-01-01T12:00:00+00:00",
        "changed_until": None,
    }
    assert not options.full
    assert set(ReconcileOptions(links=("a",)).scope()) == {"links", "bookings", "since", "until"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"changed_until": datetime(2030, 1, 1, tzinfo=UTC)}, "changed_until needs changed_since"),
        (
            {
                "changed_since": datetime(2030, 1, 2, tzinfo=UTC),
                "changed_until": datetime(2030, 1, 1, tzinfo=UTC),
            },
            "changed_since must be before changed_until",
        ),
        ({"changed_since": datetime(2030, 1, 1, tzinfo=UTC), "links": ("l",)}, "cannot be combined"),
    ],
)
def test_change_window_options_that_cannot_run_are_refused(kwargs: dict[str, object], reason: str) -> None:
    """A change window without a start, ending before it starts, mixed with other filters, or naive."""
    with pytest.raises(ValueError, match=reason):
        ReconcileOptions(**kwargs)  # type: ignore[arg-type]


def test_a_naive_window_means_utc() -> None:
    """A window given without a zone (as the daemon's callers might) is UTC, never a crash."""
    options = ReconcileOptions(changed_since=datetime(2030, 1, 1, 12))
    assert options.changed_since == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert options.scope()["changed_since"] == "2030-01-01T12:00:00+00:00"


def test_the_command_refuses_a_change_window_mixed_with_links(capsys: pytest.CaptureFixture[str]) -> None:
    """--changed-since with --link: exit 2, the message names the flags, before anything is read."""
    from bridge.commands.reconcile import run_reconcile
    from bridge.config import Settings

    code = run_reconcile(
        Settings(),
        links=("l",),
        bookings=(),
        since=None,
        until=None,
        changed_since="2030-01-01",
        dry_run=True,
        as_json=True,
    )
    err = capsys.readouterr().err
    assert code == 2 and "--changed-since cannot be combined with --link" in err


def test_each_drift_item_takes_one_line_that_fits_120_columns() -> None:
    """Drift items print one line each at 120 columns: UUIDs short (never split), long details cut."""
    ids = [
        (f"{i:08d}-1111-2222-3333-444444444444", f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd") for i in range(30)
    ]
    detail = {"field": "Subject", "ledger": "x" * 200, "salesforce": "y" * 200, "repair": "requeue"}
    items = tuple(
        DriftItem(7, "field_mismatch", link, booking, "00U5g00000AbCdEFGH", detail, True)
        for link, booking in ids
    )
    outcome = Outcome(7, "finished", False, {"field_mismatch": 30}, 30, None, items, "daemon")
    out = io.StringIO()
    print_table(outcome, Console(file=out, width=120))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 120
    item_lines = [line for line in lines if "00U5g00000AbCdEFGH" in line]
    assert len(item_lines) == 30
    for (link, booking), line in zip(ids, item_lines, strict=True):
        assert link[:8] in line and booking[:8] in line and "…" in line


def test_log_lines_wait_until_the_progress_bar_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    """While a progress bar runs, JSON log lines are held back; they are written, whole, once it stops."""
    configure_logging("info", "json")
    log = structlog.get_logger("test")
    out = io.StringIO()
    with ProgressBar(Console(file=out, force_terminal=True, width=80), enabled=True) as report:
        assert report is not None
        report("bookings", 1, 4)
        log.info("reconcile.chunk_stored", n=1)
        assert capsys.readouterr().err == ""
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["event"] == "reconcile.chunk_stored"
    assert "chunk_stored" not in out.getvalue()
    log.info("reconcile.after")
    assert "reconcile.after" in capsys.readouterr().err  # not held once the bar is gone
