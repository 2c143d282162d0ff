"""Filter expressions of change-event channel members: the documented SOQL-like subset (cdc-filters.html),
parsed and evaluated over header and record values, with SOQL's null rules."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.emulator.filters import FilterError, parse_filter

FIELDS = {
    "title": "Title",
    "ownerid": "OwnerId",
    "numberofemployees": "NumberOfEmployees",
    "isvip__c": "IsVip__c",
}
HEADER = {"changeType": "UPDATE", "commitUser": "005000000000001AAA", "commitNumber": 42}
RECORD: dict[str, Any] = {
    "Title": "Chief VIP",
    "OwnerId": "005000000000002AAA",
    "NumberOfEmployees": 12,
    "IsVip__c": True,
}


def _parse(text: str) -> Any:
    return parse_filter(text, lambda name: FIELDS.get(name.lower()))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Title = 'chief vip'", True),  # strings compare without regard to case
        ("Title != 'Chief VIP'", False),
        ("Title <> 'Other'", True),
        ("NumberOfEmployees > 10", True),
        ("NumberOfEmployees >= 12.0", True),
        ("NumberOfEmployees < 12", False),
        ("NumberOfEmployees <= 11", False),
        ("Title LIKE 'Chief%'", True),
        ("Title LIKE '_hief VIP'", True),
        ("Title LIKE 'VIP%'", False),
        ("OwnerId IN ('005000000000002AAA', '005000000000003AAA')", True),
        ("OwnerId NOT IN ('005000000000002AAA')", False),
        ("IsVip__c = true", True),
        ("IsVip__c = false", False),
        ("ChangeEventHeader.changeType = 'UPDATE'", True),
        ("changeeventheader.COMMITUSER != '005000000000001AAA'", False),
        ("ChangeEventHeader.commitNumber > 41", True),
        ("Title = 'x' OR NumberOfEmployees = 12", True),
        ("Title = 'x' OR NumberOfEmployees = 12 AND IsVip__c = false", False),  # AND binds tighter
        ("(Title = 'x' OR NumberOfEmployees = 12) AND NOT IsVip__c = false", True),
        ("NOT (Title = 'Chief VIP')", False),
        ("Title = 'It\\'s'", False),
    ],
)
def test_expressions_evaluate_as_soql_does(expression: str, expected: bool) -> None:
    """Each documented operator and connective gives SOQL's answer over the header and the record."""
    assert _parse(expression).matches(HEADER, RECORD) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Title = null", True),
        ("Title != null", False),
        ("Title != 'x'", True),  # SOQL: != and NOT IN include empty fields
        ("Title NOT IN ('x')", True),
        ("Title = 'x'", False),
        ("Title IN ('x')", False),
        ("NumberOfEmployees > 0", False),
        ("Title LIKE '%'", False),
    ],
)
def test_an_empty_field_follows_soql_null_rules(expression: str, expected: bool) -> None:
    """An empty (or absent) field: `= null` holds, `!=`/`NOT IN` hold, every other comparison is false."""
    assert _parse(expression).matches(HEADER, {}) is expected


def test_entity_fields_named_are_listed_once_in_canonical_spelling() -> None:
    """The entity fields a filter names (the ones enriched into events) come back once, canonical."""
    parsed = _parse("title = 'a' OR TITLE = 'b' OR ownerid != null OR ChangeEventHeader.changeType = 'x'")
    assert parsed.entity_fields == ("Title", "OwnerId")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("ChangeEventHeader.changedFields = 'Title'", "array"),
        ("ChangeEventHeader.nulledFields = 'Title'", "array"),
        ("ChangeEventHeader.diffFields = 'Title'", "array"),
        ("ChangeEventHeader.recordIds = 'x'", "array"),
        ("ChangeEventHeader.bogus = 'x'", "no such ChangeEventHeader field"),
        ("Bogus__c = 'x'", "no such field"),
        ("Owner.Name = 'x'", "no such field"),
        ("Title = ", "ends"),
        ("Title 'x'", "operator"),
        ("Title = 'x' AND", "ends"),
        ("(Title = 'x'", "ends"),
        ("Title = 'x')", "unexpected"),
        ("Title IN 'x'", r"expected '\('"),
        ("Title LIKE 1", "LIKE"),
        ("Title = 'x' ; DROP", "unexpected character"),
        ("= 'x'", "field name"),
    ],
)
def test_invalid_expressions_are_refused_with_a_reason(expression: str, message: str) -> None:
    """Malformed expressions, unknown fields and the header's array fields raise FilterError saying why."""
    with pytest.raises(FilterError, match=message):
        _parse(expression)
