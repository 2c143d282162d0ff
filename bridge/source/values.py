"""Text-format column values to Python, by PostgreSQL type OID.

pgoutput sends each value in its type's text output form, which depends on the walsender session's
settings; the reader pins DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres and extra_float_digits=3 so
that the loaders below see one stable format. psycopg 3's text loaders do the parsing (uuid -> UUID,
numeric -> Decimal, jsonb -> dict, arrays -> list, timestamptz -> aware datetime); OIDs it does not know
(enums, extension types) come back as the text itself.
"""

from __future__ import annotations

import functools
from typing import Any

import psycopg
from psycopg import pq
from psycopg.abc import Loader
from psycopg.adapt import Transformer
from psycopg2.extensions import parse_dsn

SESSION_GUCS: tuple[tuple[str, str], ...] = (
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
)
"""Session settings every connection that reads source values must use."""


def session_options(dsn: str | None = None) -> str:
    """The libpq `options` string that pins SESSION_GUCS, after any options the DSN already has."""
    ours = " ".join(f"-c {name}={value}" for name, value in SESSION_GUCS)
    theirs = parse_dsn(dsn).get("options", "") if dsn else ""
    return f"{theirs} {ours}".strip()


class ConversionError(ValueError):
    """A column's text could not be converted to the Python value of its type."""


@functools.lru_cache(maxsize=512)
def _loader(oid: int) -> Loader:
    return Transformer().get_loader(oid, pq.Format.TEXT)


def load_value(type_oid: int, text: str) -> Any:
    """Convert one text value of type `type_oid`; raises ConversionError when the text does not parse."""
    try:
        return _loader(type_oid).load(text.encode("utf-8"))
    except (psycopg.Error, ValueError, OverflowError, TypeError) as exc:
        raise ConversionError(f"cannot read {text[:40]!r} as type {type_oid}: {exc}") from exc
