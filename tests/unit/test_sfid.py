"""Salesforce ids: the 15 -> 18 checksum, 18-character case-insensitivity, malformed input."""

from __future__ import annotations

import random
import string

import pytest

from bridge import sfid

# 15-character id -> its 18-character form. The first is the example Salesforce's own docs and most blog
# posts use; the rest were worked by hand (bit i of each 5-character chunk set when character i is A-Z).
KNOWN_PAIRS = [
    pytest.param("001A0000006Vm9r", "001A0000006Vm9rIAC", id="well-known-account"),
    pytest.param("003000000000000", "003000000000000AAA", id="all-digits"),
    pytest.param("00QAAAAAAAAAAAA", "00QAAAAAAAAAAAA255", id="upper-heavy-lead"),
    pytest.param("005ZZZZZzzzzz00", "005ZZZZZzzzzz00YHA", id="mixed-case-user"),
    pytest.param("a0X5g00000ABCde", "a0X5g00000ABCdeEAH", id="custom-object"),
    pytest.param("003Dn00000CoNtA", "003Dn00000CoNtAIAV", id="contact"),
    pytest.param("00QDn00000LeAdX", "00QDn00000LeAdXMAV", id="lead"),
    pytest.param("00UDn00000EvEnT", "00UDn00000EvEnTMAV", id="event"),
]

MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("001A0000006Vm9", id="14-chars"),
    pytest.param("001A0000006Vm9rI", id="16-chars"),
    pytest.param("001A0000006Vm9rIA", id="17-chars"),
    pytest.param("001A0000006Vm9rIACX", id="19-chars"),
    pytest.param("001A0000006Vm-r", id="hyphen"),
    pytest.param("001A0000006Vm r", id="inner-space"),
    pytest.param("001A0000006Vm9é", id="non-ascii-letter"),
    pytest.param("\uff10\uff10\uff11A0000006Vm9r", id="fullwidth-digits"),
    pytest.param("001A0000006Vm9r999", id="checksum-digits-out-of-alphabet"),
    pytest.param("001A0000006Vm9rZZZ", id="checksum-asks-upper-for-digit"),
    pytest.param("someone@example.c", id="email-like-17"),
    pytest.param("first.last@exampl", id="email-like-17-b"),
]


def _reference_checksum(id15: str) -> str:
    """An independent formulation: reverse each chunk's upper/lower flags into a binary number."""
    out = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        flags = "".join("1" if c.isupper() and c.isascii() else "0" for c in reversed(chunk))
        out += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[int(flags, 2)]
    return out


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_to18_appends_the_known_checksum(id15: str, id18: str) -> None:
    """A 15-character id gains the documented three-character case checksum."""
    assert sfid.to18(id15) == id18
    assert sfid.checksum(id15) == id18[15:]


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_to18_keeps_a_correct_18_character_id(id15: str, id18: str) -> None:
    """An 18-character id that is already canonical comes back unchanged."""
    assert sfid.to18(id18) == id18


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase], ids=["lower", "upper", "swapcase"])
def test_18_character_ids_are_case_insensitive(id15: str, id18: str, case: object) -> None:
    """Any casing of an 18-character id restores the canonical case from its checksum."""
    assert callable(case)
    assert sfid.to18(case(id18)) == id18


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_surrounding_whitespace_is_ignored(id15: str, id18: str) -> None:
    """Leading and trailing whitespace (a copy-paste artefact) does not make an id malformed."""
    assert sfid.to18(f"  {id15}\n") == id18
    assert sfid.to18(f"\t{id18} ") == id18


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_ids_raise_value_error(value: str) -> None:
    """Anything that is not 15 or 18 ASCII letters and digits with a consistent checksum is refused."""
    with pytest.raises(ValueError, match="malformed Salesforce id"):
        sfid.to18(value)
    assert sfid.is_valid(value) is False


@pytest.mark.parametrize(("id15", "id18"), KNOWN_PAIRS)
def test_is_valid_accepts_both_lengths(id15: str, id18: str) -> None:
    """Both forms of a well-formed id are valid."""
    assert sfid.is_valid(id15)
    assert sfid.is_valid(id18)
    assert sfid.is_valid(id18.lower())


def test_checksum_matches_an_independent_formulation_on_random_ids() -> None:
    """The checksum agrees with a differently written reference on many random 15-character ids."""
    rng = random.Random(20261124)
    alphabet = string.ascii_letters + string.digits
    for _ in range(2_000):
        id15 = "".join(rng.choice(alphabet) for _ in range(15))
        assert sfid.checksum(id15) == _reference_checksum(id15)
        id18 = sfid.to18(id15)
        assert id18 == id15 + _reference_checksum(id15)
        assert sfid.to18(id18.lower()) == id18
        assert sfid.to18(id18.upper()) == id18


def test_random_corruption_of_the_checksum_is_caught_or_names_another_record() -> None:
    """A changed checksum never silently maps back to the original record."""
    rng = random.Random(7)
    for _ in range(500):
        id15 = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(15))
        id18 = sfid.to18(id15)
        bad_tail = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345") for _ in range(3))
        if bad_tail == id18[15:]:
            continue
        try:
            other = sfid.to18(id15 + bad_tail)
        except ValueError:
            continue
        assert other != id18
        assert other[:15].lower() == id15.lower()  # same letters, different case: a different record


def test_15_character_ids_are_case_sensitive() -> None:
    """Two 15-character ids that differ only in case name different records."""
    assert sfid.to18("001A0000006Vm9r") != sfid.to18("001a0000006Vm9r")
    assert not sfid.same("001A0000006Vm9r", "001a0000006Vm9r")


SAME_CASES = [
    pytest.param("001A0000006Vm9r", "001A0000006Vm9rIAC", True, id="15-vs-18"),
    pytest.param("001A0000006Vm9rIAC", "001a0000006vm9riac", True, id="18-vs-lowercased-18"),
    pytest.param("001A0000006Vm9r", "001A0000006Vm9r", True, id="identical-15"),
    pytest.param("001A0000006Vm9r", "001A0000006Vm9s", False, id="different-records"),
    pytest.param(None, None, True, id="both-none"),
    pytest.param(None, "001A0000006Vm9r", False, id="left-none"),
    pytest.param("001A0000006Vm9r", None, False, id="right-none"),
    pytest.param("garbage", "garbage", True, id="malformed-equal"),
    pytest.param("garbage", "other", False, id="malformed-different"),
    pytest.param("garbage", "001A0000006Vm9r", False, id="malformed-vs-valid"),
]


@pytest.mark.parametrize(("a", "b", "expected"), SAME_CASES)
def test_same_compares_records_not_spellings(a: str | None, b: str | None, expected: bool) -> None:
    """`same` treats the 15- and 18-character spellings of one record as equal and nothing else."""
    assert sfid.same(a, b) is expected
    assert sfid.same(b, a) is expected


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        pytest.param("003Dn00000CoNtAIAV", sfid.CONTACT_PREFIX, id="contact"),
        pytest.param("00QDn00000LeAdXMAV", sfid.LEAD_PREFIX, id="lead"),
        pytest.param("001A0000006Vm9r", sfid.ACCOUNT_PREFIX, id="account-15"),
        pytest.param("005ZZZZZzzzzz00YHA", sfid.USER_PREFIX, id="user"),
        pytest.param("00UDn00000EvEnTMAV", sfid.EVENT_PREFIX, id="event"),
    ],
)
def test_key_prefix_is_the_first_three_characters(value: str, prefix: str) -> None:
    """The object key prefix of a canonical id is its first three characters."""
    assert sfid.key_prefix(value) == prefix


def test_key_prefix_of_an_uncanonical_18_character_id_needs_normalising_first() -> None:
    """A lower-cased Lead id only shows the Lead prefix after `to18` restores its case."""
    lowered = "00qdn00000leadxmav"
    assert sfid.key_prefix(lowered) != sfid.LEAD_PREFIX
    assert sfid.key_prefix(sfid.to18(lowered)) == sfid.LEAD_PREFIX
