"""The emulator's one tokenizer, shared by SOQL (soql.py) and channel filter expressions (filters.py)."""

from __future__ import annotations

import pytest

from bridge.emulator.tokens import Token, UnexpectedCharacter, tokenize


def test_every_token_kind_is_told_apart() -> None:
    """Strings, datetimes, dates, numbers, names (with a `:n` suffix) and operators come out in order."""
    text = "a.B = 'it''s' 2024-06-12T15:00:00Z 2024-06-12 -1.5 LAST_N_DAYS:7 <> ( , )"
    kinds = [(t.kind, t.text) for t in tokenize(text, ())]
    assert kinds == [
        ("name", "a.B"),
        ("op", "="),
        ("str", "'it'"),
        ("str", "'s'"),
        ("dt", "2024-06-12T15:00:00Z"),
        ("date", "2024-06-12"),
        ("num", "-1.5"),
        ("name", "LAST_N_DAYS:7"),
        ("op", "<>"),
        ("op", "("),
        ("op", ","),
        ("op", ")"),
    ]


def test_keywords_are_the_callers_and_lower_cased() -> None:
    """A name is a keyword only among the reserved words the caller passes; the keyword is lower case."""
    assert tokenize("Order AND x", {"and"}) == [
        Token("name", "Order"),
        Token("name", "AND", "and"),
        Token("name", "x"),
    ]
    assert tokenize("Order", {"order"}) == [Token("name", "Order", "order")]


def test_a_character_no_token_starts_with_is_located() -> None:
    """The error names where the unreadable token starts (its leading blanks included, as both parsers
    report it) and the text from there, trailing blanks dropped."""
    with pytest.raises(UnexpectedCharacter) as raised:
        tokenize("Title = 'x' ; DROP  ", ())
    assert (raised.value.position, raised.value.rest) == (11, " ; DROP")
