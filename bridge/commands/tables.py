"""Tables that fit a terminal: short ids, compact times, long text cut with an ellipsis, nothing wrapped.

`--wide` renders the same rows at full width (full ids, ISO times, whole text); CSV and JSON never pass
through here, so they always hold every value in full.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

from bridge.commands.output import cell

if TYPE_CHECKING:
    from rich.table import Table

SHORT_ID = 8  # characters of a UUID shown in a table (the first 8, as git shortens a hash)
WIDE_CONSOLE = 100_000  # --wide: let the table take its natural width; the terminal wraps what it must
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Kind = Literal["uuid", "sfid", "time", "text", "plain"]
ID_NOTE = f"UUIDs show their first {SHORT_ID} characters; Salesforce ids are whole; times are UTC"


@dataclass(frozen=True, slots=True)
class Column:
    """How one column shows in a terminal table."""

    name: str
    kind: Kind = "plain"
    max_width: int | None = None  # text longer than this is cut with an ellipsis


def shown(value: Any, kind: Kind, *, wide: bool) -> str:
    """One value as a table shows it: a UUID's first characters, a time to the minute in UTC."""
    if wide:
        return cell(value)
    if kind == "uuid" and isinstance(value, str) and _UUID.match(value):
        return value[:SHORT_ID]
    if isinstance(value, datetime):
        at = value.astimezone(UTC) if value.tzinfo else value
        return at.strftime("%Y-%m-%d %H:%M")
    return cell(value)


def render(
    out: TextIO,
    title: str,
    columns: Sequence[Column],
    rows: Iterable[Mapping[str, Any]],
    *,
    wide: bool = False,
    footer: Sequence[str] = (),
) -> None:
    """A table that never wraps a cell (the terminal's width, or its natural width with `wide`), then
    its footer lines."""
    from rich.console import Console

    console = Console(file=out, width=WIDE_CONSOLE) if wide else Console(file=out)
    console.print(build(title, columns, rows, width=console.width, wide=wide))
    for line in footer:
        console.print(line, soft_wrap=wide, markup=False, highlight=False)


def build(
    title: str | None, columns: Sequence[Column], rows: Iterable[Mapping[str, Any]], *, width: int, wide: bool
) -> Table:
    """A rich table of one line per row that fits `width` (text cut with an ellipsis; ids whole)."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        title_justify="left",
    )
    cells = [[shown(row.get(c.name), c.kind, wide=wide) for c in columns] for row in rows]
    limits = [None] * len(columns) if wide else _fit(columns, cells, width)
    for column, limit in zip(columns, limits, strict=True):
        # No cell wraps: an id split over lines cannot be copied. Long text is cut with an ellipsis.
        table.add_column(column.name, no_wrap=True, overflow="ellipsis", max_width=limit)
    for values in cells:
        table.add_row(*values)
    return table


def _fit(columns: Sequence[Column], cells: Sequence[Sequence[str]], width: int) -> list[int | None]:
    """Each column's max width so the table fits `width`: text and labels give way, ids and times do not.

    Rich's own last resort narrows every column alike, which would cut ids; here the widest column that
    may shrink (anything but an id or a time) loses a character at a time, down to 6.
    """
    natural = [
        min(max([len(c.name), *(len(row[i]) for row in cells)]), c.max_width or width)
        for i, c in enumerate(columns)
    ]
    limits = list(natural)
    gaps = 2 * (len(columns) - 1)  # collapsed padding between columns
    shrinkable = [i for i, c in enumerate(columns) if c.kind not in ("uuid", "sfid", "time")]
    while sum(limits) + gaps > width:
        candidates = [i for i in shrinkable if limits[i] > 6]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: limits[i])
        limits[widest] -= 1
    return [limit for limit in limits]
