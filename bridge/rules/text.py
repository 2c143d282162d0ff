"""Text and ids as Salesforce measures them: lengths in UTF-16 code units, cutting with a visible marker, the
canonical 18-character id, and descriptions of a malformed value that never repeat its content. Pure."""

from __future__ import annotations

import re

from bridge import sfid

DESCRIPTION_LIMIT = 32_000
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def salesforce_length(text: str) -> int:
    """The length Salesforce measures: UTF-16 code units (a character outside the BMP counts twice)."""
    # surrogatepass: a lone surrogate (never valid text, but possible in a str) counts one, never raises.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def cut(text: str, limit: int, marker: str = "") -> str:
    """`text` if it fits in `limit`, else its head followed by `marker`, the whole within `limit`.

    Raises ValueError when `marker` alone does not fit (a programming error, not a data one).
    """
    if salesforce_length(text) <= limit:
        return text
    room = limit - salesforce_length(marker)
    if room < 0:
        raise ValueError(f"marker of {salesforce_length(marker)} units does not fit in {limit}")
    if len(text) == salesforce_length(text):
        return text[:room] + marker
    kept, used = [], 0
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            break
        kept.append(ch)
    return "".join(kept) + marker


def description_marker(original_length: int) -> str:
    """The visible note that ends a description cut to fit Salesforce."""
    return f"\n\n[... truncated by mogli-bridge: {original_length:,} characters in the scheduler]"


def cut_description(text: str | None) -> str | None:
    """A description that fits Salesforce's 32,000 (None when empty), cut with a visible marker."""
    if not text:
        return None
    return cut(text, DESCRIPTION_LIMIT, description_marker(len(text)))


def normalise_id(value: str | None) -> str | None:
    """The canonical 18-character form of a Salesforce id; None when absent, blank or malformed."""
    if value is None or not value.strip():
        return None
    try:
        return sfid.to18(value)
    except ValueError:
        return None


def blank(value: str | None) -> bool:
    return value is None or not value.strip()


def shape(value: str) -> str:
    """Describe a malformed id by its form, never its content (it may be personal data in the wrong box)."""
    stripped = value.strip()
    extra = "" if stripped.isalnum() and stripped.isascii() else ", not only letters and digits"
    return f"{len(stripped)} characters{extra}; expected a 15- or 18-character Salesforce id"


def label(value: str) -> str:
    """Quote a short code-like value; describe anything else by its length."""
    return repr(value) if _PLAIN_LABEL.fullmatch(value) else f"a value of {len(value)} characters"
