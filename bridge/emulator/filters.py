"""Filter expressions of change-event channel members: the documented SOQL-like subset, parsed and evaluated.

A filter names entity fields (`OwnerId`) and ChangeEventHeader fields (`ChangeEventHeader.commitUser`),
compares them with =, !=, <, >, <=, >=, LIKE, IN and NOT IN, and joins the comparisons with AND, OR, NOT
and parentheses; literals are strings, numbers, booleans and null. The header's array fields (recordIds,
nulledFields, diffFields, changedFields) are refused, as Salesforce documents (cdc-filters.html). Null
behaves as in SOQL: `F = null` holds for an empty field, `F != 'x'` and `F NOT IN (...)` hold for it too,
and every other comparison with an empty field is false. Strings compare without regard to case.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.emulator.tokens import PUNCTUATION, Token, UnexpectedCharacter, tokenize

HEADER_PREFIX = "changeeventheader."
HEADER_FIELDS = (
    "entityName",
    "changeType",
    "changeOrigin",
    "transactionKey",
    "sequenceNumber",
    "commitTimestamp",
    "commitNumber",
    "commitUser",
)
ARRAY_HEADER_FIELDS = frozenset({"recordids", "nulledfields", "difffields", "changedfields"})
_HEADER_BY_LOWER = {name.lower(): name for name in HEADER_FIELDS}
_KEYWORDS = frozenset({"and", "or", "not", "in", "like", "null", "true", "false"})
_KINDS = {"str": "string", "num": "number", "name": "word"}  # the shared tokenizer's kinds, as named here

Literal = str | int | float | bool | None
FieldResolver = Callable[[str], str | None]


class FilterError(ValueError):
    """A filter expression that is malformed or names a field it may not use (the message says which)."""


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field named by a filter: an entity field, or a ChangeEventHeader field when `header`."""

    name: str
    header: bool


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`."""

    field: FieldRef
    op: str
    value: Literal


@dataclass(frozen=True, slots=True)
class InList:
    """`field [NOT] IN (values)`."""

    field: FieldRef
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Like:
    """`field LIKE 'pattern'` with SOQL's `%` and `_` wildcards."""

    field: FieldRef
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Junction:
    """`a AND b ...` (`all_of`) or `a OR b ...`."""

    items: tuple[Node, ...]
    all_of: bool


@dataclass(frozen=True, slots=True)
class Negation:
    """`NOT a`."""

    item: Node


Node = Compare | InList | Like | Junction | Negation


@dataclass(frozen=True, slots=True)
class FilterExpression:
    """A parsed filter expression and the entity fields it names (those are enriched into events)."""

    text: str
    root: Node
    entity_fields: tuple[str, ...]

    def matches(self, header: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
        """True when an event with this header and these record values passes the filter."""
        return _evaluate(self.root, header, values)


def parse_filter(text: str, resolve_field: FieldResolver) -> FilterExpression:
    """Parse `text`; `resolve_field` answers an entity field's canonical name, or None when unknown."""
    parser = _Parser(_tokens(text), resolve_field)
    root = parser.expression()
    extra = parser.peek()
    if extra is not None:
        raise FilterError(f"unexpected {extra[1]!r} after the end of the expression")
    return FilterExpression(text=text, root=root, entity_fields=tuple(dict.fromkeys(parser.entity_fields)))


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs: keywords lower-cased, punctuation told apart from comparison operators."""
    try:
        tokens = tokenize(text, _KEYWORDS)
    except UnexpectedCharacter as exc:
        position = exc.position
        raise FilterError(f"unexpected character {exc.rest.strip()[:1]!r} at position {position}") from None
    if not tokens:
        raise FilterError("the filter expression is empty")
    return [_classified(token) for token in tokens]


def _classified(token: Token) -> tuple[str, str]:
    if token.keyword is not None:
        return "keyword", token.keyword
    if token.kind == "op":
        return ("punct" if token.text in PUNCTUATION else "op"), token.text
    return _KINDS.get(token.kind, token.kind), token.text


class _Parser:
    """Recursive descent: expr := and (OR and)*; and := unary (AND unary)*; unary := NOT unary | atom."""

    def __init__(self, tokens: list[tuple[str, str]], resolve_field: FieldResolver) -> None:
        self._tokens = tokens
        self._index = 0
        self._resolve = resolve_field
        self.entity_fields: list[str] = []

    def peek(self) -> tuple[str, str] | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _next(self, what: str) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterError(f"the expression ends where {what} was expected")
        self._index += 1
        return token

    def _accept(self, kind: str, value: str) -> bool:
        if self.peek() == (kind, value):
            self._index += 1
            return True
        return False

    def _expect(self, kind: str, value: str) -> None:
        token = self._next(repr(value))
        if token != (kind, value):
            raise FilterError(f"expected {value!r}, found {token[1]!r}")

    def expression(self) -> Node:
        items = [self._conjunction()]
        while self._accept("keyword", "or"):
            items.append(self._conjunction())
        return items[0] if len(items) == 1 else Junction(tuple(items), all_of=False)

    def _conjunction(self) -> Node:
        items = [self._unary()]
        while self._accept("keyword", "and"):
            items.append(self._unary())
        return items[0] if len(items) == 1 else Junction(tuple(items), all_of=True)

    def _unary(self) -> Node:
        if self._accept("keyword", "not"):
            return Negation(self._unary())
        if self._accept("punct", "("):
            node = self.expression()
            self._expect("punct", ")")
            return node
        return self._condition()

    def _condition(self) -> Node:
        field = self._field()
        kind, value = self._next("an operator")
        if kind == "op":
            return Compare(field, "!=" if value == "<>" else value, self._literal())
        if (kind, value) == ("keyword", "like"):
            pattern = self._literal()
            if not isinstance(pattern, str):
                raise FilterError("LIKE needs a string pattern")
            return Like(field, _like_pattern(pattern))
        negated = (kind, value) == ("keyword", "not")
        if negated:
            kind, value = self._next("IN")
        if (kind, value) != ("keyword", "in"):
            raise FilterError(f"expected an operator after {field.name}, found {value!r}")
        return InList(field, self._list(), negated)

    def _list(self) -> tuple[Literal, ...]:
        self._expect("punct", "(")
        values = [self._literal()]
        while self._accept("punct", ","):
            values.append(self._literal())
        self._expect("punct", ")")
        return tuple(values)

    def _field(self) -> FieldRef:
        kind, name = self._next("a field name")
        if kind != "word":
            raise FilterError(f"expected a field name, found {name!r}")
        lowered = name.lower()
        if lowered.startswith(HEADER_PREFIX):
            header_name = lowered[len(HEADER_PREFIX) :]
            if header_name in ARRAY_HEADER_FIELDS:
                raise FilterError(f"{name}: array fields of ChangeEventHeader can't be used in a filter")
            canonical_header = _HEADER_BY_LOWER.get(header_name)
            if canonical_header is None:
                raise FilterError(f"{name}: no such ChangeEventHeader field")
            return FieldRef(canonical_header, header=True)
        canonical = self._resolve(name) if "." not in name else None
        if canonical is None:
            raise FilterError(f"{name}: no such field on the selected entity")
        self.entity_fields.append(canonical)
        return FieldRef(canonical, header=False)

    def _literal(self) -> Literal:
        kind, value = self._next("a value")
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "keyword" and value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        raise FilterError(f"expected a value, found {value!r}")


def _like_pattern(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _evaluate(node: Node, header: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    if isinstance(node, Junction):
        results = (_evaluate(item, header, values) for item in node.items)
        return all(results) if node.all_of else any(results)
    if isinstance(node, Negation):
        return not _evaluate(node.item, header, values)
    actual = (header if node.field.header else values).get(node.field.name)
    if isinstance(node, Like):
        return isinstance(actual, str) and node.pattern.fullmatch(actual) is not None
    if isinstance(node, InList):
        found = any(_equal(actual, value) for value in node.values)
        return found != node.negated
    if node.op == "=":
        return _equal(actual, node.value)
    if node.op == "!=":
        return not _equal(actual, node.value)
    return _ordered(actual, node.op, node.value)


def _equal(actual: Any, expected: Literal) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected.lower()
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    return False


def _ordered(actual: Any, op: str, expected: Literal) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return _compare(actual.lower(), op, expected.lower())
    numbers = (int, float)
    if isinstance(actual, bool) or isinstance(expected, bool):
        return False
    if isinstance(actual, numbers) and isinstance(expected, numbers):
        return _compare(float(actual), op, float(expected))
    return False  # null, or values of different types


def _compare(left: Any, op: str, right: Any) -> bool:
    return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])
