"""`mogli-bridge orgs`: one row per org (state, reason, pending, failed, API budget, stream positions), read
from the ledger, so it answers with or without a running daemon (CONTRACT §9)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from bridge.admin.orgs import COLUMNS, OrgRow, org_rows, row_json, short_positions
from bridge.admin.workers import short_worker
from bridge.commands.checks import UsageError, require_setup, with_ledger
from bridge.commands.output import output_format, write_csv
from bridge.commands.tables import Column, render
from bridge.config import Settings
from bridge.records.ledger import DEFAULT_ORG

# What a terminal table shows by default: every column, sized to fit 100 columns (ids shortened, whole);
# the API budget as one "used/limit" cell.
TABLE = (
    Column("org_id", "uuid"), Column("name", "text", 16), Column("state", max_width=12),
    Column("reason", "text", 24), Column("pending"), Column("failed"), Column("api"),
    Column("positions", "text", 24), Column("worker", max_width=10),
)  # fmt: skip
NOTE = "org ids show their first 8 characters; positions: each channel's last name and replay id"
WORKER_NOTE = "worker: the pid and suffix of the worker holding the org's lease (status --json lists them)"


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    limit = None if args.all or args.limit == 0 else args.limit
    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip()) if args.columns else ()
    return orgs(settings, fmt=args.format, columns=columns, wide=args.wide, limit=limit)


def check_columns(columns: Sequence[str]) -> None:
    """Refuse column names the listing does not have, naming them."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UsageError(
            f"--columns: `orgs` has no column {', '.join(map(repr, unknown))}; "
            f"its columns are {', '.join(COLUMNS)}"
        )


def orgs(
    settings: Settings,
    *,
    fmt: str | None,
    columns: Sequence[str] = (),
    wide: bool = False,
    limit: int | None = 100,
    out: TextIO | None = None,
) -> int:
    """`mogli-bridge orgs`: every org's row (the default org first); 2 when the ledger is not set up."""
    out = out or sys.stdout
    check_columns(columns)
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be 0 (every row) or more, not {limit}")
    require_setup(settings)
    rows = with_ledger(settings, org_rows)
    total = len(rows)
    shown = rows if limit is None else rows[:limit]
    form = output_format(fmt, out)
    names = tuple(columns) or COLUMNS
    if form == "json":
        out.write(json.dumps([_only(row_json(r), names) for r in shown], indent=2, default=str) + "\n")
    elif form == "csv":
        write_csv(out, names, (_only(row_json(r), names) for r in shown))
    else:
        print_table(out, shown, total, names if columns else (), wide=wide)
    if form != "table" and len(shown) < total:
        print(f"showing {len(shown):,} of {total:,} orgs: --all for every org", file=sys.stderr)
    return 0


def _only(row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: row[name] for name in names}


def table_row(row: OrgRow, *, wide: bool) -> dict[str, Any]:
    """A row as the table shows it: positions short unless wide."""
    values = row_json(row)
    whole = json.dumps(values["positions"], sort_keys=True)
    values["positions"] = whole if wide else short_positions(row.positions)
    used, limit = row.api_used, row.api_limit
    values["api"] = f"{used}/{limit}" if used is not None and limit is not None else ""
    if not wide:
        values["worker"] = short_worker(row.worker)
    return values


def print_table(
    out: TextIO, rows: Sequence[OrgRow], total: int, columns: Sequence[str] = (), *, wide: bool = False
) -> None:
    """The orgs as a table that fits the terminal, and how many were left out."""
    if columns:
        chosen = tuple(next((c for c in TABLE if c.name == name), Column(name)) for name in columns)
    else:
        chosen = tuple(Column(c) for c in COLUMNS) if wide else TABLE
    if wide:
        chosen = tuple(Column(c.name) for c in chosen)
    shown = f"showing {len(rows):,} of {total:,} orgs, the default org ({DEFAULT_ORG}) first"
    if len(rows) < total:
        shown += "; --limit N or --all for more"
    footer = [shown] if wide else [shown, NOTE]
    if not wide and any(r.worker for r in rows):
        footer.append(WORKER_NOTE)
    if not wide:
        footer.append("more: --wide (whole positions), --columns A,B,C, --format csv|json (everything)")
    render(out, "orgs", chosen, [table_row(r, wide=wide) for r in rows], wide=wide, footer=footer)
