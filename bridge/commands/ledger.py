"""`mogli-bridge ledger links|activities|journal|failures|drift`: the ledger's rows, for the operator."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from bridge.commands.output import jsonable, output_format, parse_since, record_rows, write_csv, write_table
from bridge.config import Settings
from bridge.errors import ConfigurationError

WHAT = ("links", "activities", "journal", "failures", "drift")

COLUMNS: dict[str, tuple[str, ...]] = {
    "links": (
        "link_id", "link_type", "title", "mogli_event_id", "state", "attempts", "error_code", "last_error",
        "first_booked_at", "synced_at", "updated_at",
    ),
    "activities": (
        "booking_id", "link_id", "activity_id", "state", "owner_salesforce_id", "who_id", "what_id",
        "start_at", "end_at", "attempts", "error_code", "last_error", "synced_at", "updated_at",
    ),
    "journal": ("id", "at", "direction", "entity", "entity_key", "action", "detail"),
    "failures": ("entity", "key", "link_id", "error_code", "last_error", "attempts", "updated_at"),
    "drift": ("id", "run_id", "kind", "link_id", "booking_id", "salesforce_id", "repaired", "detail"),
}  # fmt: skip

FILTERS: dict[str, frozenset[str]] = {
    "links": frozenset({"link", "state", "since"}),
    "activities": frozenset({"link", "booking", "state", "since"}),
    "journal": frozenset({"link", "booking", "since"}),
    "failures": frozenset({"link", "booking", "since"}),
    "drift": frozenset({"link", "booking"}),
}


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return ledger(
        settings,
        args.what,
        link=args.link,
        booking=args.booking,
        state=args.state,
        since=args.since,
        limit=args.limit,
        fmt=args.format,
    )


def check_filters(what: str, given: Mapping[str, Any]) -> None:
    """Refuse a filter the listing does not understand, naming the option."""
    if what not in FILTERS:
        raise ConfigurationError(f"ledger: choose one of {', '.join(WHAT)}, not {what!r}", "ledger")
    for name, value in given.items():
        if value and name not in FILTERS[what]:
            raise ConfigurationError(f"--{name} does not apply to `ledger {what}`", f"--{name}")


def ledger(
    settings: Settings,
    what: str,
    *,
    link: str | None,
    booking: str | None,
    state: str | None,
    since: str | None,
    limit: int,
    fmt: str | None,
    out: TextIO | None = None,
) -> int:
    """`mogli-bridge ledger links|activities|journal|failures|drift`: print ledger rows."""
    from bridge.ledger import journal, queries, runs
    from bridge.ledger.repository import Ledger

    out = out or sys.stdout
    check_filters(what, {"link": link, "booking": booking, "state": state, "since": since})
    when = parse_since(since)
    if limit < 1:
        raise ConfigurationError("--limit must be at least 1", "--limit")
    ledger = Ledger.from_url(settings.ledger.url)
    try:
        read = ledger.call_read
        fetch: dict[str, Callable[[], list[Any]]] = {
            "links": lambda: read(queries.list_links, link_id=link, state=state, since=when, limit=limit),
            "activities": lambda: read(
                queries.list_activities,
                link_id=link,
                booking_id=booking,
                state=state,
                since=when,
                limit=limit,
            ),
            "journal": lambda: read(
                journal.list_journal, link_id=link, booking_id=booking, since=when, limit=limit
            ),
            "failures": lambda: read(
                queries.list_failures, link_id=link, booking_id=booking, since=when, limit=limit
            ),
            "drift": lambda: read(runs.list_drift, link_id=link, booking_id=booking, limit=limit),
        }
        records = fetch[what]()
    finally:
        ledger.dispose()
    _print_rows(out, output_format(fmt, out), what, record_rows(records, COLUMNS[what]))
    return 0


def _print_rows(out: TextIO, form: str, what: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of one listing as JSON, CSV or a table."""
    columns = COLUMNS[what]
    if form == "json":
        out.write(json.dumps([jsonable(r) for r in rows], indent=2) + "\n")
    elif form == "csv":
        write_csv(out, columns, rows)
    else:
        write_table(out, f"ledger {what} ({len(rows)} rows)", columns, rows)
