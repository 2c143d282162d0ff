"""Secrets out of log text: a driver's or server's message cut to one line, with passwords and tokens masked.

Pure string work, shared by the adapters that log connection failures (source, ledger, salesforce). Masked:
the known secrets a caller passes (also in their %-encoded form), `password=...`-style pairs (any quoting),
the password part of a URL's user info (`scheme://user:secret@host`), and bearer tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MAX_REASON_CHARS = 300

_PAIR = re.compile(
    r"""(?P<key>\b(?:password|passwd|pwd|pass|secret|client_secret|access_token|refresh_token|token)\b\s*[=:]\s*)
        (?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s,;&'"]+)""",
    re.IGNORECASE | re.VERBOSE,
)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*):(?P<secret>[^@\s/]*)@", re.IGNORECASE)
_BEARER = re.compile(r"\b(?P<head>Bearer|OAuth)\s+[A-Za-z0-9._~+/!$=-]+", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every password- or token-looking part, and each of `secrets`, replaced by `***`."""
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}:
                text = text.replace(form, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _PAIR.sub(lambda m: f"{m['key']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m['head']} {MASK}", text)


def describe(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """`Type: first line` of an exception (just `Type` when it has no message), scrubbed."""
    reason, name = first_line(exc, secrets), type(exc).__name__
    return name if reason == name else f"{name}: {reason}"


def first_line(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), scrubbed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, secrets)[:MAX_REASON_CHARS]
