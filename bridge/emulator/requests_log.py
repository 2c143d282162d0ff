"""The org's recent API requests (`GET /__emulator/requests[?since=ISO]`): a bounded ring buffer.

Each entry names the access token by a fingerprint (the first 12 hex characters of its SHA-256), never the
token itself, so a test can tell which token reached which org without the log holding a secret.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from bridge.emulator.oauth import bearer_token

MAX_REQUESTS = 10_000
_FINGERPRINT_CHARS = 12


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One API request as the control API shows it."""

    at: datetime
    method: str
    path: str
    status: int
    token: str | None  # the token's fingerprint; None for a request without one (OAuth token requests)

    def to_json(self) -> dict[str, object]:
        """The control API's JSON of this request."""
        return {
            "at": self.at.isoformat(),
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "token": self.token,
        }


def fingerprint(token: str) -> str:
    """A stable, non-reversible name of an access token."""
    return hashlib.sha256(token.encode()).hexdigest()[:_FINGERPRINT_CHARS]


class RequestLog:
    """The last `MAX_REQUESTS` API requests of one org, oldest first."""

    def __init__(self, size: int = MAX_REQUESTS) -> None:
        self._entries: deque[LoggedRequest] = deque(maxlen=size)

    def record(self, at: datetime, method: str, path: str, status: int, authorization: str | None) -> None:
        """Remember one finished request (the token only as its fingerprint)."""
        token = bearer_token(authorization)
        self._entries.append(LoggedRequest(at, method, path, status, fingerprint(token) if token else None))

    def since(self, start: datetime | None = None) -> list[LoggedRequest]:
        """Every remembered request at or after `start` (all of them when None)."""
        return [e for e in self._entries if start is None or e.at >= start]

    def clear(self) -> None:
        """Forget every request."""
        self._entries.clear()
