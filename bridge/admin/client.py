"""The one client of the daemon's admin API, for the commands (`status`, `retry`, `reconcile`).

It tells three cases apart: nothing listens on `admin.listen` (`DaemonAbsent`: the command may work on the
ledger itself, under its lock), a daemon that accepted the connection but did not answer in time
(`DaemonSilent`: it is there, only busy; never taken for an absent one), and an answer (status, JSON body).
A wildcard listen address (0.0.0.0, ::) is reached on loopback; IPv6 hosts are bracketed.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from bridge.config import AdminSettings

CONNECT_SECONDS = 5.0  # a daemon that does not accept a connection in this long is not there


class DaemonAbsent(Exception):
    """Nothing accepts connections at admin.listen."""


class DaemonSilent(Exception):
    """The daemon accepted the connection but did not answer within the timeout."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of the admin API: the HTTP status and the decoded JSON body."""

    status: int
    body: Any


class AdminClient:
    """Calls the running daemon's admin API with its bearer token."""

    def __init__(self, settings: AdminSettings, answer_seconds: float = 10.0) -> None:
        host, _, port = settings.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.host, self.port = host, int(port)
        self.base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.token = settings.token
        self.answer_seconds = answer_seconds

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        """One request; DaemonAbsent when nothing listens, DaemonSilent when no answer came in time."""
        try:
            socket.create_connection((self.host, self.port), timeout=CONNECT_SECONDS).close()
        except OSError as exc:
            raise DaemonAbsent(f"nothing answers at {self.base} ({exc})") from None
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.answer_seconds) as response:
                return Reply(response.status, _decode(response.read()))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, _decode(exc.read()))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DaemonSilent(
                f"the daemon at {self.base} accepted the request but did not answer within "
                f"{self.answer_seconds:.0f} s ({exc})"
            ) from None


def reason(body: Any) -> str:
    """The `error` of an error body, or a placeholder."""
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return "no reason given"


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"error": raw.decode(errors="replace")[:200]}
