"""Pure parts of the operator commands: value formatting, flattening, filters, output shapes."""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from bridge.admin.client import AdminClient
from bridge.cli import _parser
from bridge.commands.ledger import COLUMNS, FILTERS, check_filters
from bridge.commands.output import cell, flatten, jsonable, parse_since, record_rows, write_csv, write_table
from bridge.config import AdminSettings, Settings
from bridge.errors import ConfigurationError

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (AT, "2026-11-24T12:00:00+00:00"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        ({"b": 1, "a": [1, 2]}, '{"a": [1, 2], "b": 1}'),
        (("x", "y"), '["x", "y"]'),
        ("plain", "plain"),
    ],
)
def test_cell_renders_every_kind_of_value(value: object, text: str) -> None:
    """Timestamps as ISO text, booleans lower-case, structures as sorted JSON, None as empty."""
    assert cell(value) == text


def test_jsonable_converts_nested_timestamps() -> None:
    """Datetimes inside mappings and lists become ISO strings; the result is JSON-serialisable."""
    value = jsonable({"at": AT, "runs": [{"started": AT}], "n": 1})
    assert value == {"at": AT.isoformat(), "runs": [{"started": AT.isoformat()}], "n": 1}
    json.dumps(value)


def test_flatten_uses_dotted_keys_and_keeps_empty_mappings() -> None:
    """Nested sections become dotted keys; an empty mapping stays a value."""
    report = {"daemon": {"running": True, "components": {"push": "running"}}, "ledger": {"positions": {}}}
    assert flatten(report) == [
        ("daemon.running", True),
        ("daemon.components.push", "running"),
        ("ledger.positions", {}),
    ]


@dataclass(frozen=True)
class _Row:
    booking_id: str
    state: str
    secret_column: str = "never shown"


def test_record_rows_keeps_only_the_listed_columns_in_order() -> None:
    """Records become dicts with exactly the command's columns (missing ones as None)."""
    rows = record_rows([_Row("b1", "failed")], ("state", "booking_id", "link_id"))
    assert rows == [{"state": "failed", "booking_id": "b1", "link_id": None}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("", None),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
    ],
)
def test_parse_since_accepts_dates_and_datetimes(text: str | None, expected: datetime | None) -> None:
    """A bare date is midnight UTC; an offset is kept."""
    assert parse_since(text) == expected


def test_parse_since_names_the_option_when_wrong() -> None:
    """A malformed --since is a usage error naming --since."""
    with pytest.raises(ConfigurationError) as caught:
        parse_since("last tuesday")
    assert caught.value.key == "--since"


@pytest.mark.parametrize(
    ("what", "option"),
    [("journal", "state"), ("failures", "state"), ("drift", "since"), ("links", "booking")],
)
def test_filters_a_listing_does_not_understand_are_refused(what: str, option: str) -> None:
    """A filter that a listing cannot apply is an error naming the option, never silently ignored."""
    with pytest.raises(ConfigurationError) as caught:
        check_filters(what, {option: "x"})
    assert caught.value.key == f"--{option}"


def test_every_listing_has_columns_and_filters() -> None:
    """The five listings of CONTRACT §3 each define columns and filters; unset filters always pass."""
    assert set(COLUMNS) == set(FILTERS) == {"links", "activities", "journal", "failures", "drift"}
    for what in COLUMNS:
        check_filters(what, {"link": None, "booking": None, "state": None, "since": None})


def test_csv_output_has_a_header_and_one_line_per_row() -> None:
    """CSV: header of the columns, values formatted by cell()."""
    out = io.StringIO()
    write_csv(out, ("booking_id", "updated_at"), [{"booking_id": "b,1", "updated_at": AT}])
    assert out.getvalue().splitlines() == ["booking_id,updated_at", f'"b,1",{AT.isoformat()}']


def test_table_output_shows_the_title_and_values() -> None:
    """The rich table carries its title, column names and the values."""
    out = io.StringIO()
    write_table(out, "ledger failures (1 rows)", ("key", "error_code"), [{"key": "b1", "error_code": "X_Y"}])
    text = out.getvalue()
    assert "ledger failures (1 rows)" in text and "error_code" in text and "X_Y" in text


@pytest.mark.parametrize(
    ("listen", "base"),
    [
        ("127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("[::1]:8787", "http://[::1]:8787"),
        ("localhost:1234", "http://localhost:1234"),
    ],
)
def test_daemon_api_address_follows_admin_listen(listen: str, base: str) -> None:
    """The CLI reaches the daemon where it listens; a wildcard address is reached on loopback."""
    settings = Settings(admin=AdminSettings(listen=listen, token="t"))
    assert AdminClient(settings.admin).base == base


def test_every_option_of_every_command_has_help() -> None:
    """`mogli-bridge <command> --help` documents each of its options and arguments."""
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    undocumented = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help
    ] + [str(action.option_strings or action.dest) for action in parser._actions if not action.help]
    assert undocumented == []
    assert "updated_at" in commands.choices["ledger"].format_help()  # what `ledger --since` filters on
