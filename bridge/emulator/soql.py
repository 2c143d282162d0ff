"""A SOQL subset: parse (this module), bind and evaluate (soql_eval.py, soql_paths.py); pure.

Supported: SELECT a field list, COUNT() or COUNT(field) [alias], parent fields one level up (`Who.Name`);
FROM one object; WHERE with = != <> < <= > >= IN, NOT IN, LIKE, AND / OR / NOT and parentheses (AND and
OR may not mix without parentheses, as in SOQL); string, number, boolean, null, date, datetime and
date-literal (TODAY, LAST_N_DAYS:n, ...) values; ORDER BY with ASC/DESC and NULLS FIRST/LAST; LIMIT, OFFSET.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bridge.emulator.contracts import ApiError
from bridge.emulator.tokens import Token, UnexpectedCharacter, tokenize
from bridge.emulator.validation import parse_datetime

_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "like",
        "order",
        "by",
        "asc",
        "desc",
        "nulls",
        "first",
        "last",
        "limit",
        "offset",
        "null",
        "true",
        "false",
        "count",
    }
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def malformed(message: str) -> ApiError:
    """400 MALFORMED_QUERY."""
    return ApiError(400, "MALFORMED_QUERY", message)


def invalid_type(sobject: str) -> ApiError:
    """400 INVALID_TYPE for an unknown object in FROM."""
    return ApiError(
        400,
        "INVALID_TYPE",
        f"sObject type '{sobject}' is not supported. If you are attempting to use a custom object, be sure to"
        " append the '__c' after the entity name. Please reference your WSDL or the describe call for the"
        " appropriate names.",
    )


def invalid_field(name: str, sobject: str) -> ApiError:
    """400 INVALID_FIELD for an unknown column."""
    return ApiError(
        400,
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom field, be sure"
        " to append the '__c' after the custom field name. Please reference your WSDL or the describe call"
        " for the appropriate names.",
    )


def _tokens(text: str) -> list[Token]:
    """Split SOQL text into tokens; MALFORMED_QUERY on a character no token starts with."""
    try:
        return tokenize(text, _KEYWORDS)
    except UnexpectedCharacter as exc:
        raise malformed(f"unexpected token: '{exc.rest.split()[0]}'") from None


# -- AST ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateLiteral:
    """A relative date literal (TODAY, LAST_N_DAYS:7, ...), resolved against the clock when evaluated."""

    name: str
    n: int = 0

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the range in UTC."""
        today = datetime(now.year, now.month, now.day, tzinfo=UTC)
        day = timedelta(days=1)
        spans = {
            "today": (today, today + day),
            "yesterday": (today - day, today),
            "tomorrow": (today + day, today + 2 * day),
            "last_n_days": (today - self.n * day, today + day),
            "next_n_days": (today + day, today + (self.n + 1) * day),
        }
        return spans[self.name]


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`; value is str | int | float | bool | None | date | datetime | DateLiteral."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class InList:
    """`field [NOT] IN (values)`."""

    field: str
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True, slots=True)
class Like:
    """`field LIKE 'pattern'` (% and _ wildcards, case-insensitive)."""

    field: str
    pattern: str


@dataclass(frozen=True, slots=True)
class BoolOp:
    """AND / OR over several conditions, or NOT over one."""

    op: str  # and | or | not
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One ORDER BY key."""

    field: str
    descending: bool
    nulls_last: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query; field names as written (bind() resolves them)."""

    sobject: str
    fields: tuple[str, ...]
    count_only: bool
    where: Any
    order: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None
    aggregate: tuple[str, str] | None = None  # COUNT(field) [alias]: (field, output key)


class _Parser:
    """Recursive-descent parser over the token list."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> Token | None:
        """The next token, or None at the end."""
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        """Consume and return the next token; MALFORMED_QUERY at the end."""
        tok = self.peek()
        if tok is None:
            raise malformed("unexpected end of query")
        self.pos += 1
        return tok

    def at(self, *words: str) -> bool:
        """True when the next token is one of `words` (keywords or operators)."""
        tok = self.peek()
        return tok is not None and (tok.keyword in words or (tok.kind == "op" and tok.text in words))

    def expect(self, word: str) -> None:
        """Consume `word` or raise MALFORMED_QUERY."""
        tok = self.take()
        if tok.keyword != word and tok.text != word:
            raise malformed(f"unexpected token: '{tok.text}'")

    def name(self) -> str:
        """Consume an identifier that is not a keyword."""
        tok = self.take()
        if tok.kind != "name" or tok.keyword is not None:
            raise malformed(f"unexpected token: '{tok.text}'")
        return tok.text

    def number(self) -> int:
        """Consume a non-negative integer."""
        tok = self.take()
        if tok.kind != "num" or not tok.text.isdigit():
            raise malformed(f"unexpected token: '{tok.text}'")
        return int(tok.text)

    def query(self) -> Query:
        """SELECT ... FROM ... [WHERE] [ORDER BY] [LIMIT] [OFFSET], and nothing after."""
        self.expect("select")
        aggregate = self.aggregate()
        fields, count_only = ((), False) if aggregate else self.select_list()
        self.expect("from")
        sobject = self.name()
        where = self.condition() if self._eat("where") else None
        order = self.order_by() if self._eat("order") else ()
        limit = self.number() if self._eat("limit") else None
        offset = self.number() if self._eat("offset") else None
        tok = self.peek()
        if tok is not None:
            raise malformed(f"unexpected token: '{tok.text}'")
        return Query(sobject, fields, count_only, where, order, limit, offset, aggregate)

    def _eat(self, word: str) -> bool:
        if self.at(word):
            self.pos += 1
            return True
        return False

    def aggregate(self) -> tuple[str, str] | None:
        """`COUNT(field) [alias]` as the whole SELECT list (no GROUP BY), else None (nothing consumed)."""
        ahead = self.tokens[self.pos : self.pos + 3]
        if len(ahead) < 3 or ahead[0].keyword != "count" or ahead[2].text == ")":
            return None
        self.pos += 2
        field = self.name()
        self.expect(")")
        tok = self.peek()
        alias = self.name() if tok is not None and tok.kind == "name" and tok.keyword is None else "expr0"
        if self.at(","):
            raise malformed("Field must be grouped or aggregated")
        return field, alias

    def select_list(self) -> tuple[tuple[str, ...], bool]:
        """COUNT() or a comma-separated field list."""
        if self.at("count"):
            self.pos += 1
            self.expect("(")
            self.expect(")")
            return (), True
        fields = [self.name()]
        while self._eat(","):
            fields.append(self.name())
        return tuple(fields), False

    def condition(self) -> Any:
        """Predicates joined by AND or by OR (never both without parentheses)."""
        items, ops = [self.unary()], set()
        while self.at("and", "or"):
            ops.add(self.take().text.lower())
            items.append(self.unary())
        if len(ops) > 1:
            raise malformed("unexpected token: mixing AND and OR requires parentheses")
        return BoolOp(ops.pop(), tuple(items)) if ops else items[0]

    def unary(self) -> Any:
        """NOT, a parenthesised condition, or a predicate."""
        if self._eat("not"):
            return BoolOp("not", (self.unary(),))
        if self._eat("("):
            inner = self.condition()
            self.expect(")")
            return inner
        return self.predicate()

    def predicate(self) -> Any:
        """`field op value`, `field [NOT] IN (...)` or `field LIKE '...'`."""
        field = self.name()
        if self._eat("not"):
            self.expect("in")
            return InList(field, self.value_list(), negate=True)
        if self._eat("in"):
            return InList(field, self.value_list(), negate=False)
        if self._eat("like"):
            tok = self.take()
            if tok.kind != "str":
                raise malformed(f"unexpected token: '{tok.text}'")
            return Like(field, _unquote(tok.text))
        op = self.take()
        if op.kind != "op" or op.text in (",", "(", ")"):
            raise malformed(f"unexpected token: '{op.text}'")
        return Compare(field, "!=" if op.text == "<>" else op.text, self.value())

    def value_list(self) -> tuple[Any, ...]:
        """A parenthesised, comma-separated list of values."""
        self.expect("(")
        values = [self.value()]
        while self._eat(","):
            values.append(self.value())
        self.expect(")")
        return tuple(values)

    def value(self) -> Any:
        """One literal."""
        tok = self.take()
        if tok.kind == "str":
            return _unquote(tok.text)
        if tok.kind == "num":
            return float(tok.text) if "." in tok.text else int(tok.text)
        if tok.kind == "dt":
            return parse_datetime(tok.text)
        if tok.kind == "date":
            return date.fromisoformat(tok.text)
        low = tok.text.lower()
        if tok.kind == "name" and low in ("null", "true", "false"):
            return {"null": None, "true": True, "false": False}[low]
        if tok.kind == "name":
            return _date_literal(tok.text)
        raise malformed(f"unexpected token: '{tok.text}'")

    def order_by(self) -> tuple[OrderItem, ...]:
        """BY and one or more order keys."""
        self.expect("by")
        items = [self.order_item()]
        while self._eat(","):
            items.append(self.order_item())
        return tuple(items)

    def order_item(self) -> OrderItem:
        """`field [ASC|DESC] [NULLS FIRST|LAST]`."""
        field = self.name()
        descending = self._eat("desc")
        if not descending:
            self._eat("asc")
        nulls_last = descending
        if self._eat("nulls"):
            nulls_last = self.take().text.lower() == "last"
        return OrderItem(field, descending, nulls_last)


def _unquote(text: str) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt if nxt in "%_" else nxt))  # LIKE keeps \% and \_
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _date_literal(text: str) -> DateLiteral:
    name, _, n = text.lower().partition(":")
    if name in ("today", "yesterday", "tomorrow") and not n:
        return DateLiteral(name)
    if name in ("last_n_days", "next_n_days") and n:
        return DateLiteral(name, int(n))
    raise malformed(f"unexpected token: '{text}'")


def parse(text: str) -> Query:
    """Parse a SOQL query; MALFORMED_QUERY on bad syntax."""
    return _Parser(_tokens(text)).query()
