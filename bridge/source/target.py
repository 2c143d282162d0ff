"""Which PostgreSQL a DSN points at, and why a connection to it failed, in words safe for a log line.

libpq parses the DSN (URL or key=value form, %-encoding included), so what is logged is what libpq dials;
the user and password never leave this module except as masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from bridge.redact import first_line

DEFAULT = "libpq default"


@dataclass(frozen=True, slots=True)
class SourceTarget:
    """Host, port and database of a DSN (never its user or password)."""

    host: str
    port: str
    database: str

    @classmethod
    def of(cls, dsn: str) -> SourceTarget:
        """The target libpq would connect to; `unparsable` fields when the DSN is not a conninfo string."""
        try:
            parts = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error:
            return cls(host="unparsable", port="unparsable", database="unparsable")
        return cls(
            host=parts.get("host") or parts.get("hostaddr") or DEFAULT,
            port=parts.get("port") or DEFAULT,
            database=parts.get("dbname") or DEFAULT,
        )

    def log_fields(self) -> dict[str, str]:
        """The fields a log line carries."""
        return {"host": self.host, "port": self.port, "database": self.database}


def _password(dsn: str) -> str | None:
    try:
        return psycopg2.extensions.parse_dsn(dsn).get("password")
    except psycopg2.Error:
        return None


def failure_reason(exc: BaseException, dsn: str) -> str:
    """The first line of the driver's or server's message, with the DSN's password and any other masked."""
    return first_line(exc, secrets=(_password(dsn),))
