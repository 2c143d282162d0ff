"""Output of the operator commands: rich tables on a terminal, CSV (or `key,value` lines) in a pipe, JSON on
request; and the small parsers they share."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge.errors import ConfigurationError


def cell(value: Any) -> str:
    """One value as text: ISO timestamps, JSON for structures, empty for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def jsonable(value: Any) -> Any:
    """A value JSON can hold (timestamps as ISO text, enums as their value)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record_rows(records: Iterable[Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Dataclass records as dicts holding only `columns`, in that order."""
    rows = []
    for record in records:
        values = asdict(record) if is_dataclass(record) and not isinstance(record, type) else dict(record)
        rows.append({c: values.get(c) for c in columns})
    return rows


def flatten(report: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as (dotted key, value) pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten(value, f"{name}."))
        else:
            pairs.append((name, value))
    return pairs


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Header line, then one line per row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])


def write_table(out: TextIO, title: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A rich table (for a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold", min_width=len(title) + 4)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    Console(file=out).print(table)


def parse_since(text: str | None) -> datetime | None:
    """`--since` as an aware datetime (a bare date is midnight UTC)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"--since must be an ISO date or datetime, not {text!r}", "--since") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def output_format(fmt: str | None, out: TextIO) -> str:
    """The chosen format, else a table on a terminal and CSV in a pipe."""
    return fmt or ("table" if out.isatty() else "csv")


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
