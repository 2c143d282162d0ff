"""`mogli-bridge ledger links|activities|journal|failures|drift`: the ledger's rows, for the operator."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from bridge.commands.checks import UsageError, in_org, require_known, require_org, require_setup
from bridge.commands.output import jsonable, output_format, parse_since, record_rows, write_csv
from bridge.commands.tables import ID_NOTE, Column, Kind, render
from bridge.config import Settings
from bridge.errors import ConfigurationError
from bridge.records.ledger import ActivitySyncState, LinkSyncState

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

STATES: dict[str, frozenset[str]] = {
    "links": frozenset(LinkSyncState),
    "activities": frozenset(ActivitySyncState),
}

# What a terminal table shows by default: the columns that matter, sized to fit 100 columns.
TABLE: dict[str, tuple[Column, ...]] = {
    "links": (
        Column("link_id", "uuid"), Column("link_type", max_width=12), Column("title", "text", 20),
        Column("state", max_width=12), Column("attempts"), Column("error_code", max_width=16),
        Column("updated_at", "time"),
    ),
    "activities": (
        Column("booking_id", "uuid"), Column("activity_id", "sfid"), Column("state", max_width=10),
        Column("start_at", "time"), Column("error_code", max_width=16), Column("updated_at", "time"),
    ),
    "journal": (
        Column("id"), Column("at", "time"), Column("direction"), Column("entity"),
        Column("entity_key", "uuid"), Column("action", max_width=20), Column("detail", "text", 28),
    ),
    "failures": (
        Column("entity"), Column("key", "uuid"), Column("error_code", max_width=26), Column("attempts"),
        Column("updated_at", "time"), Column("last_error", "text", 22),
    ),
    "drift": (
        Column("id"), Column("run_id"), Column("kind", max_width=24), Column("link_id", "uuid"),
        Column("booking_id", "uuid"), Column("salesforce_id", "sfid"), Column("repaired"),
    ),
}  # fmt: skip

KINDS: dict[str, Kind] = {
    "link_id": "uuid", "booking_id": "uuid", "entity_key": "uuid", "key": "uuid",
    "activity_id": "sfid", "mogli_event_id": "sfid", "owner_salesforce_id": "sfid", "who_id": "sfid",
    "what_id": "sfid", "salesforce_id": "sfid",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class View:
    """How to print a listing: format, columns, width, and how many rows."""

    fmt: str | None = None
    columns: tuple[str, ...] = ()  # empty: the listing's default
    wide: bool = False
    limit: int | None = 100  # None: every row


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    limit = None if args.all or args.limit == 0 else args.limit
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else ()
    return ledger(
        settings,
        args.what,
        link=args.link,
        booking=args.booking,
        state=args.state,
        since=args.since,
        limit=limit,
        fmt=args.format,
        view=View(columns=columns, wide=args.wide),
        org=args.org,
    )


def check_filters(what: str, given: Mapping[str, Any]) -> None:
    """Refuse a filter the listing does not understand, naming the option."""
    if what not in FILTERS:
        raise ConfigurationError(f"ledger: choose one of {', '.join(WHAT)}, not {what!r}", "ledger")
    for name, value in given.items():
        if value and name not in FILTERS[what]:
            raise ConfigurationError(f"--{name} does not apply to `ledger {what}`", f"--{name}")
    state = given.get("state")
    if state and state not in STATES.get(what, frozenset()):
        raise UsageError(
            f"--state {state!r} is not a state of {what}: choose one of {', '.join(sorted(STATES[what]))}"
        )


def check_columns(what: str, columns: Sequence[str]) -> None:
    """Refuse column names the listing does not have, naming them."""
    unknown = [c for c in columns if c not in COLUMNS[what]]
    if unknown:
        raise UsageError(
            f"--columns: `ledger {what}` has no column {', '.join(map(repr, unknown))}; "
            f"its columns are {', '.join(COLUMNS[what])}"
        )


def ledger(
    settings: Settings,
    what: str,
    *,
    link: str | None,
    booking: str | None,
    state: str | None,
    since: str | None,
    limit: int | None,
    fmt: str | None,
    out: TextIO | None = None,
    view: View | None = None,
    org: str | None = None,
) -> int:
    """`mogli-bridge ledger links|activities|journal|failures|drift`: print ledger rows (of `org` alone when
    given).

    `limit` None prints every row; a table ends with "showing N of M" (M counted with the same filters),
    CSV and JSON say it on stderr when rows were left out.
    """
    out = out or sys.stdout
    view = view or View()
    check_filters(what, {"link": link, "booking": booking, "state": state, "since": since})
    check_columns(what, view.columns)
    when = parse_since(since)
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be 0 (every row) or more, not {limit}")
    require_setup(settings)
    require_org(settings, org)
    require_known(settings, links=[link] if link else [], bookings=[booking] if booking else [], org=org)
    records, total = _fetch(
        settings, what, link=link, booking=booking, state=state, since=when, limit=limit, org=org
    )
    columns = view.columns or COLUMNS[what]
    rows = record_rows(records, columns)
    form = output_format(fmt, out)
    if form == "table":
        _print_table(out, what, rows, total, view, org)
    else:
        _print_rows(out, form, columns, rows)
        if len(rows) < total:
            print(f"showing {len(rows):,} of {total:,} rows: --all for every row", file=sys.stderr)
    return 0


def _fetch(
    settings: Settings,
    what: str,
    *,
    link: str | None,
    booking: str | None,
    state: str | None,
    since: Any,
    limit: int | None,
    org: str | None = None,
) -> tuple[list[Any], int]:
    """The listing's rows (newest first, up to `limit`) and how many rows match in all."""
    from bridge.ledger import journal, queries, runs
    from bridge.ledger.repository import Ledger

    base = Ledger.from_url(settings.ledger.url)
    ledger = in_org(base, org)
    try:
        read = ledger.call_read
        count: dict[str, Callable[[], int]] = {
            "links": lambda: read(queries.count_links, link_id=link, state=state, since=since),
            "activities": lambda: read(
                queries.count_activities, link_id=link, booking_id=booking, state=state, since=since
            ),
            "journal": lambda: read(journal.count_journal, link_id=link, booking_id=booking, since=since),
            "failures": lambda: read(queries.count_failures, link_id=link, booking_id=booking, since=since),
            "drift": lambda: read(runs.count_drift, link_id=link, booking_id=booking),
        }
        total = count[what]()
        n = total if limit is None else limit
        fetch: dict[str, Callable[[], list[Any]]] = {
            "links": lambda: read(queries.list_links, link_id=link, state=state, since=since, limit=n),
            "activities": lambda: read(
                queries.list_activities, link_id=link, booking_id=booking, state=state, since=since, limit=n
            ),
            "journal": lambda: read(
                journal.list_journal, link_id=link, booking_id=booking, since=since, limit=n
            ),
            "failures": lambda: read(
                queries.list_failures, link_id=link, booking_id=booking, since=since, limit=n
            ),
            "drift": lambda: read(runs.list_drift, link_id=link, booking_id=booking, limit=n),
        }
        return fetch[what](), total
    finally:
        base.dispose()


def _print_rows(out: TextIO, form: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of one listing as JSON or CSV: every value in full."""
    if form == "json":
        out.write(json.dumps([jsonable(r) for r in rows], indent=2) + "\n")
    else:
        write_csv(out, columns, rows)


def _print_table(
    out: TextIO, what: str, rows: Sequence[Mapping[str, Any]], total: int, view: View, org: str | None = None
) -> None:
    """Rows of one listing as a table that fits the terminal, and what was left out."""
    if view.columns:
        columns = tuple(Column(c, KINDS.get(c, "plain")) for c in view.columns)
    elif view.wide:
        columns = tuple(Column(c) for c in COLUMNS[what])
    else:
        columns = TABLE[what]
    shown = f"showing {len(rows):,} of {total:,}, newest first"
    if len(rows) < total:
        shown += "; --limit N or --all for more"
    footer = [shown, "times are UTC"] if view.wide else [shown, ID_NOTE]
    if org is not None:
        footer.insert(0, f"org {org} only")
    if not view.wide:
        footer.append("more: --wide (every column), --columns A,B,C, --format csv|json (everything)")
    render(out, f"ledger {what}", columns, rows, wide=view.wide, footer=footer)
