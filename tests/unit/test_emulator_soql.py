"""The emulator's SOQL subset: parsing, binding to fields, evaluation (pure, over plain rows)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from bridge.emulator.contracts import ApiError
from bridge.emulator.org import load_org
from bridge.emulator.schema import ObjectDef
from bridge.emulator.soql import BoolOp, Compare, DateLiteral, InList, Like, OrderItem, parse
from bridge.emulator.soql_eval import bind, execute

NOW = datetime(2024, 6, 12, 12, 0, tzinfo=UTC)
EVENT: ObjectDef = load_org(None).schema.get("Event")  # type: ignore[assignment]

ROWS: list[dict[str, Any]] = [
    {
        "Id": "00UEm0000000001MAA",
        "Subject": "Alpha call",
        "DurationInMinutes": 30,
        "IsPrivate": False,
        "StartDateTime": datetime(2024, 6, 12, 9, 0, tzinfo=UTC),
        "WhoId": "003Sd0000000002IAA",
        "Location": None,
    },
    {
        "Id": "00UEm0000000002MAA",
        "Subject": "beta review",
        "DurationInMinutes": 60,
        "IsPrivate": True,
        "StartDateTime": datetime(2024, 6, 11, 9, 0, tzinfo=UTC),
        "WhoId": None,
        "Location": "Zoom",
    },
    {
        "Id": "00UEm0000000003MAA",
        "Subject": "Gamma 100%",
        "DurationInMinutes": 15,
        "IsPrivate": False,
        "StartDateTime": datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        "WhoId": "00QSd0000000004IAA",
        "Location": "Office",
    },
]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("SELECT Id FROM Event WHERE Subject = 'a'", Compare("Subject", "=", "a")),
        ("select id from event where DurationInMinutes >= 30", Compare("DurationInMinutes", ">=", 30)),
        ("SELECT Id FROM Event WHERE Subject <> 'a'", Compare("Subject", "!=", "a")),
        ("SELECT Id FROM Event WHERE IsPrivate = TRUE", Compare("IsPrivate", "=", True)),
        ("SELECT Id FROM Event WHERE WhoId = null", Compare("WhoId", "=", None)),
        (
            "SELECT Id FROM Event WHERE StartDateTime > 2024-01-01T00:00:00Z",
            Compare("StartDateTime", ">", datetime(2024, 1, 1, tzinfo=UTC)),
        ),
        (
            "SELECT Id FROM Event WHERE ActivityDate = 2024-06-12",
            Compare("ActivityDate", "=", date(2024, 6, 12)),
        ),
        (
            "SELECT Id FROM Event WHERE ActivityDate = LAST_N_DAYS:7",
            Compare("ActivityDate", "=", DateLiteral("last_n_days", 7)),
        ),
        ("SELECT Id FROM Event WHERE Subject = 'it\\'s'", Compare("Subject", "=", "it's")),
        ("SELECT Id FROM Event WHERE Id IN ('a', 'b')", InList("Id", ("a", "b"), negate=False)),
        ("SELECT Id FROM Event WHERE Id NOT IN ('a')", InList("Id", ("a",), negate=True)),
        ("SELECT Id FROM Event WHERE Subject LIKE 'a%'", Like("Subject", "a%")),
        (
            "SELECT Id FROM Event WHERE NOT (Subject = 'a' OR Subject = 'b') AND IsPrivate = false",
            BoolOp(
                "and",
                (
                    BoolOp(
                        "not", (BoolOp("or", (Compare("Subject", "=", "a"), Compare("Subject", "=", "b"))),)
                    ),
                    Compare("IsPrivate", "=", False),
                ),
            ),
        ),
    ],
)
def test_parse_where_clauses(text: str, where: Any) -> None:
    """WHERE supports comparison, IN / NOT IN, LIKE, AND / OR / NOT, parentheses and every literal kind."""
    assert parse(text).where == where


def test_parse_select_order_limit_offset() -> None:
    """SELECT list, ORDER BY with direction and NULLS placement, LIMIT and OFFSET parse."""
    query = parse("SELECT Id, Subject FROM Event ORDER BY Subject DESC NULLS FIRST, Id LIMIT 10 OFFSET 5")
    assert (query.sobject, query.fields, query.count_only) == ("Event", ("Id", "Subject"), False)
    assert query.order == (OrderItem("Subject", True, False), OrderItem("Id", False, False))
    assert (query.limit, query.offset) == (10, 5)


def test_parse_count() -> None:
    """SELECT COUNT() FROM ... is a count-only query."""
    assert parse("SELECT COUNT() FROM Event").count_only


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SELECT FROM Event",
        "SELECT Id Event",
        "SELECT Id FROM Event WHERE",
        "SELECT Id FROM Event WHERE Subject = ",
        "SELECT Id FROM Event WHERE Subject = 'a' AND Id = 'b' OR Id = 'c'",
        "SELECT Id FROM Event WHERE (Subject = 'a'",
        "SELECT Id FROM Event LIMIT x",
        "SELECT Id FROM Event WHERE Subject ~ 'a'",
        "SELECT Id FROM Event GROUP BY Subject",
        "SELECT Id FROM Event WHERE ActivityDate = NEXT_MONTHS",
        "SELECT Id, Id FROM Event",
    ],
)
def test_malformed_queries(text: str) -> None:
    """Bad syntax (incl. AND mixed with OR without parentheses) is 400 MALFORMED_QUERY."""
    with pytest.raises(ApiError) as info:
        bind(parse(text), EVENT)
    assert (info.value.status, info.value.error_code) == (400, "MALFORMED_QUERY")


@pytest.mark.parametrize(
    "text",
    ["SELECT Foo__c FROM Event", "SELECT Id FROM Event WHERE Bar = 1", "SELECT Id FROM Event ORDER BY Baz"],
)
def test_unknown_field_is_invalid_field(text: str) -> None:
    """An unknown column anywhere in the query is 400 INVALID_FIELD naming it and the entity."""
    with pytest.raises(ApiError) as info:
        bind(parse(text), EVENT)
    assert info.value.error_code == "INVALID_FIELD"
    assert "on entity 'Event'" in info.value.message


@pytest.mark.parametrize(
    "where", ["StartDateTime > '2024-01-01T00:00:00Z'", "IsPrivate = 'true'", "DurationInMinutes = '30'"]
)
def test_quoted_literal_on_non_text_field_is_invalid_field(where: str) -> None:
    """Datetime, boolean and number values are written without quotes; quoted ones are INVALID_FIELD."""
    with pytest.raises(ApiError) as info:
        bind(parse(f"SELECT Id FROM Event WHERE {where}"), EVENT)
    assert info.value.error_code == "INVALID_FIELD"
    assert "should not be enclosed in quotes" in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SELECT Id FROM Event WHERE Description = 'x'",
            "field 'Description' can not be filtered in a query call",
        ),
        (
            "SELECT Id FROM Event ORDER BY Description",
            "field 'Description' can not be sorted in a query call",
        ),
    ],
)
def test_long_text_cannot_be_filtered_or_sorted(text: str, message: str) -> None:
    """Long text areas (Description, 32,000) may be selected but not filtered or sorted on."""
    with pytest.raises(ApiError) as info:
        bind(parse(text), EVENT)
    assert (info.value.error_code, info.value.message) == ("INVALID_FIELD", message)
    assert bind(parse("SELECT Description FROM Event"), EVENT).fields == ("Description",)


def test_bad_id_literal_is_rejected() -> None:
    """An id field compared with a non-id string is rejected like Salesforce does."""
    with pytest.raises(ApiError) as info:
        bind(parse("SELECT Id FROM Event WHERE WhoId = 'nope'"), EVENT)
    assert info.value.error_code == "INVALID_QUERY_FILTER_OPERATOR"


def run(text: str) -> list[str]:
    """Ids of ROWS the query selects, in result order."""
    return [str(r["Id"])[-4:-3] for r in execute(bind(parse(text), EVENT), ROWS, NOW)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Subject = 'alpha CALL'", ["1"]),
        ("Subject != 'alpha call'", ["2", "3"]),
        ("DurationInMinutes > 15", ["1", "2"]),
        ("DurationInMinutes <= 30", ["1", "3"]),
        ("IsPrivate = true", ["2"]),
        ("WhoId = null", ["2"]),
        ("WhoId != null", ["1", "3"]),
        ("Location < 'P'", ["3"]),
        ("Subject LIKE '%call'", ["1"]),
        ("Subject LIKE 'B_TA%'", ["2"]),
        ("Subject LIKE '%\\%'", ["3"]),
        ("Id IN ('00UEm0000000001MAA', '00UEm0000000003')", ["1", "3"]),
        ("Id NOT IN ('00UEm0000000001')", ["2", "3"]),
        ("WhoId IN ('003Sd0000000002')", ["1"]),
        ("StartDateTime >= 2024-06-11T09:00:00Z", ["1", "2"]),
        ("StartDateTime > 2024-06-11T11:00:00+02:00", ["1"]),
        ("StartDateTime = TODAY", ["1"]),
        ("StartDateTime = YESTERDAY", ["2"]),
        ("StartDateTime = LAST_N_DAYS:7", ["1", "2"]),
        ("StartDateTime < LAST_N_DAYS:7", ["3"]),
        ("NOT IsPrivate = true", ["1", "3"]),
        ("(DurationInMinutes = 30 OR DurationInMinutes = 60) AND IsPrivate = false", ["1"]),
    ],
)
def test_where_evaluation(where: str, expected: list[str]) -> None:
    """Text equality ignores case, nulls match only null, 15-char ids match, date literals use the clock."""
    assert run(f"SELECT Id FROM Event WHERE {where}") == expected


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ("ORDER BY Subject", ["1", "2", "3"]),
        ("ORDER BY DurationInMinutes DESC", ["2", "1", "3"]),
        ("ORDER BY Location", ["1", "3", "2"]),
        ("ORDER BY Location NULLS LAST", ["3", "2", "1"]),
        ("ORDER BY Location DESC", ["2", "3", "1"]),
        ("ORDER BY IsPrivate, DurationInMinutes DESC", ["1", "3", "2"]),
        ("ORDER BY Subject LIMIT 2", ["1", "2"]),
        ("ORDER BY Subject LIMIT 2 OFFSET 2", ["3"]),
    ],
)
def test_order_limit_offset(tail: str, expected: list[str]) -> None:
    """ORDER BY sorts case-insensitively with NULLS FIRST for ASC and NULLS LAST for DESC by default."""
    assert run(f"SELECT Id FROM Event {tail}") == expected


def test_bind_canonicalises_field_names() -> None:
    """Field names are case-insensitive on input and canonical in the plan."""
    plan = bind(parse("select subject, whoid from EVENT"), EVENT)
    assert plan.fields == ("Subject", "WhoId")


_PIECES = ["SELECT", "Id", "Subject", ",", "FROM", "Event", "WHERE", "=", "!=", "<", "IN", "NOT", "LIKE", "(",
           ")", "'a'", "'", "\\", "42", "-1.5", "null", "TRUE", "AND", "OR", "ORDER", "BY", "DESC", "NULLS",
           "LAST", "LIMIT", "OFFSET", "COUNT()", "2024-01-01", "2024-01-01T00:00:00Z", "TODAY",
           "LAST_N_DAYS:3", "WhoId", "'003Sd0000000002'", "@", "#", ":", "Description",
           "StartDateTime"]  # fmt: skip


@pytest.mark.parametrize("seed", range(30))
def test_arbitrary_text_only_ever_raises_api_errors(seed: int) -> None:
    """Any text given as a query either runs or raises an ApiError with a 400 status."""
    import random

    rng = random.Random(seed)
    for _ in range(200):
        head = "SELECT Id FROM Event " if rng.random() < 0.6 else ""
        text = head + " ".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        try:
            execute(bind(parse(text), EVENT), ROWS, NOW)
        except ApiError as exc:
            assert exc.status == 400
