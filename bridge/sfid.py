"""Salesforce record ids: 15/18-character forms, checksums and key prefixes (pure)."""

from __future__ import annotations

import re

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[a-zA-Z0-9]{15}$")
_ID18 = re.compile(r"^[a-zA-Z0-9]{18}$")

CONTACT_PREFIX = "003"
LEAD_PREFIX = "00Q"
ACCOUNT_PREFIX = "001"
USER_PREFIX = "005"
EVENT_PREFIX = "00U"


def checksum(id15: str) -> str:
    """Return the three-character case checksum Salesforce appends to a 15-character id."""
    out = []
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(_ALPHABET[bits])
    return "".join(out)


def to18(value: str) -> str:
    """Normalise a 15- or 18-character id to its canonical 18-character form; ValueError if malformed."""
    value = value.strip()
    if _ID15.match(value):
        return value + checksum(value)
    if _ID18.match(value):
        # An 18-character id is case-insensitive: rebuild the case from the checksum.
        head, tail = value[:15], value[15:].upper()
        if any(ch not in _ALPHABET for ch in tail):
            raise ValueError(f"malformed Salesforce id: bad checksum characters {tail!r}")
        chars = list(head)
        for chunk in range(3):
            bits = _ALPHABET.index(tail[chunk])
            for i in range(5):
                pos = chunk * 5 + i
                chars[pos] = chars[pos].upper() if bits & (1 << i) else chars[pos].lower()
        fixed = "".join(chars)
        if checksum(fixed) != tail:
            raise ValueError("malformed Salesforce id: checksum does not match")
        return fixed + tail
    raise ValueError("malformed Salesforce id: expected 15 or 18 letters and digits")


def is_valid(value: str) -> bool:
    """True when `value` is a syntactically valid 15- or 18-character id."""
    try:
        to18(value)
    except ValueError:
        return False
    return True


def key_prefix(value: str) -> str:
    """The object key prefix (first three characters) of an id."""
    return value[:3]


def same(a: str | None, b: str | None) -> bool:
    """True when two ids (either length) name the same record."""
    if a is None or b is None:
        return a is b
    try:
        return to18(a) == to18(b)
    except ValueError:
        return a == b
