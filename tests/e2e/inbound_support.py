"""Support for the inbound end-to-end tests: a stack whose emulator answers long polls within 2 seconds, run
once per change-event transport (CometD, Pub/Sub), and a person who edits records through plain REST (no
client name, `X-Emulator-User` set)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.stack import (
    DaemonProcess,
    EmulatorProcess,
    HttpError,
    http_json,
    ledger_activities,
    ledger_connection,
    wait_until,
)

from .conftest import Stack, make_stack

LONG_POLL_SECONDS = 2.0
API = "/services/data/v60.0"


def short_poll_org(workdir: Path, overrides: dict[str, str] | None = None) -> Path:
    """The emulator's default org with 2-second long polls and other `[streaming]` lines replaced."""
    text = resources.files("bridge.emulator").joinpath("default_org.toml").read_text("utf-8")
    lines = {"long_poll_timeout_seconds": str(LONG_POLL_SECONDS), **(overrides or {})}
    for key, value in lines.items():
        text, count = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert count == 1, key
    path = workdir / "org.toml"
    path.write_text(text)
    return path


@pytest.fixture
def org_overrides() -> dict[str, str]:
    """`[streaming]` lines of the org file to replace (tests parametrize this to change the org)."""
    return {}


TRANSPORTS = ("cometd", "pubsub")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The change-event transport the daemon uses (`sync.transport`): every inbound test runs on both."""
    return str(request.param)


@pytest.fixture
def inbound_stack(
    tmp_path: Path,
    scheduler_dsn: str,
    org_overrides: dict[str, str],
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """Like `stack`, with an emulator whose long polls last 2 seconds; on `pubsub` the emulator serves the
    Pub/Sub API too and every daemon of the stack takes its change events from there."""
    pubsub = transport == "pubsub"
    with make_stack(tmp_path, scheduler_dsn, short_poll_org(tmp_path, org_overrides), pubsub=pubsub) as built:
        if pubsub:
            for name, value in built.emulator.pubsub_env().items():
                monkeypatch.setenv(name, value)
        yield built


class Person:
    """Someone editing the org through REST, as the Salesforce UI would (no `Sforce-Call-Options`)."""

    def __init__(self, emulator: EmulatorProcess, user_id: str) -> None:
        self.emulator = emulator
        self.user_id = user_id

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.emulator.token()}", "X-Emulator-User": self.user_id}
        return http_json(method, f"{self.emulator.url}{API}{path}", body, headers=headers)[1]

    def update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        """PATCH one record."""
        self._call("PATCH", f"/sobjects/{sobject}/{record_id}", fields)

    def update_many(self, sobject: str, changes: dict[str, dict[str, Any]]) -> None:
        """PATCH several records in one transaction (sObject Collections, allOrNone)."""
        records = [{"attributes": {"type": sobject}, "Id": rid, **fields} for rid, fields in changes.items()]
        results = self._call("PATCH", "/composite/sobjects", {"allOrNone": True, "records": records})
        assert all(r["success"] for r in results), results

    def delete(self, sobject: str, record_id: str) -> None:
        """DELETE one record (to the recycle bin)."""
        self._call("DELETE", f"/sobjects/{sobject}/{record_id}")

    def convert_lead(self, lead_id: str) -> dict[str, Any]:
        """Convert a Lead through the control API (Salesforce's convertLead is not REST)."""
        url = f"{self.emulator.url}/__emulator/leads/{lead_id}/convert"
        _, body = http_json("POST", url, {}, headers={"X-Emulator-User": self.user_id})
        return dict(body)


def record(emulator: EmulatorProcess, sobject: str, record_id: str) -> dict[str, Any] | None:
    """One record from the control API (deleted ones included), or None."""
    for row in emulator.records(sobject, include_deleted=True):
        if row["Id"] == record_id:
            return row
    return None


def ledger_rows(url: str, table: str) -> list[dict[str, Any]]:
    """Every row of a ledger table."""
    import sqlalchemy as sa

    assert table in ("activities", "links", "journal", "checkpoints", "reconciliation_runs")
    with ledger_connection(url) as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]


def inbound_journal(url: str) -> list[dict[str, Any]]:
    """The inbound journal entries, oldest first."""
    return sorted(
        (e for e in ledger_rows(url, "journal") if e["direction"] == "inbound"), key=lambda e: int(e["id"])
    )


def wait_streaming(emulator: EmulatorProcess) -> None:
    """Wait until the daemon's streaming client is connected (CometD) or subscribed (Pub/Sub)."""
    if emulator.grpc_port is not None:
        wait_until(lambda: emulator.pubsub_stats()["open_streams"] >= 1, timeout=60, what="a Subscribe call")
        return
    wait_until(lambda: emulator.stats()["streaming_clients"] >= 1, timeout=60, what="a streaming client")


def wait_journal(url: str, action: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait for inbound journal entries with this action; returns them."""

    def found() -> list[dict[str, Any]]:
        try:
            return [e for e in inbound_journal(url) if e["action"] == action]
        except Exception:
            return []

    return list(wait_until(found, timeout=timeout, what=f"journal action {action}"))


def ignore_missing(fn: Any, *args: Any) -> Any:
    """Call fn, mapping an HTTP 404 to None."""
    try:
        return fn(*args)
    except HttpError as exc:
        if exc.status == 404:
            return None
        raise


def logged(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    """The daemon's log lines of one event."""
    return [line for line in daemon.log_lines() if line.get("event") == name]


def synced_event(stack: Stack) -> tuple[str, str]:
    """One booking written to Salesforce by the running daemon: (booking id, Event id)."""
    s, seed = stack.scheduler, stack.seed
    link = s.add_link("one_on_one", s.add_user(seed.users[0]))
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    booking = s.add_booking(link, start=start, related=seed.contacts[0])

    def written() -> str | None:
        try:
            row = ledger_activities(stack.ledger_url).get(booking)
        except Exception:
            return None
        return row["activity_id"] if row and row["state"] == "synced" else None

    return booking, str(wait_until(written, timeout=60, what="the booking written"))
