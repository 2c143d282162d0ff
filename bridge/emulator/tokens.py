"""The one tokenizer of the emulator's SOQL-like languages: SOQL queries (soql.py) and channel filter
expressions (filters.py); each parser turns `UnexpectedCharacter` into its own error. Pure."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*(?::\d+)?)"
    r"|(?P<op>!=|<>|<=|>=|=|<|>|,|\(|\)))"
)
PUNCTUATION = frozenset({",", "(", ")"})  # `op` tokens that are not comparison operators


class UnexpectedCharacter(ValueError):
    """No token starts at `position` of `text`."""

    def __init__(self, text: str, position: int) -> None:
        super().__init__(f"unexpected character at position {position}")
        self.text, self.position = text, position

    @property
    def rest(self) -> str:
        """The text from the offending character on."""
        return self.text[self.position :]


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: kind (str, dt, date, num, name, op), its text, and the lower-cased keyword when
    it is a `name` among the language's reserved words."""

    kind: str
    text: str
    keyword: str | None = None


def tokenize(text: str, keywords: Collection[str]) -> list[Token]:
    """Split `text` into tokens; `keywords` (lower case) are the language's reserved words."""
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnexpectedCharacter(text, pos)
        kind = m.lastgroup or "op"
        value = m.group(kind)
        low = value.lower()
        out.append(Token(kind, value, low if kind == "name" and low in keywords else None))
        pos = m.end()
    return out
