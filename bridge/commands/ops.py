"""Operator commands: `status`, `ledger ...` and `retry` (CONTRACT §3).

They work without a running daemon (reading the ledger and the source directly) and use the daemon's admin
API when it answers. Output: rich tables on a terminal; CSV (or `key,value` lines) in a pipe; JSON on request.
"""

from __future__ import annotations

import csv
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge.config import Settings
from bridge.errors import ConfigurationError

API_TIMEOUT_SECONDS = 3.0
WHAT = ("links", "activities", "journal", "failures", "drift")

COLUMNS: dict[str, tuple[str, ...]] = {
    "links": (
        "link_id", "link_type", "title", "mogli_event_id", "state", "attempts", "error_code", "last_error",
        "first_booked_at", "synced_at", "updated_at",
    ),
    "activities": (
        "booking_id", "link_id", "activity_id", "state", "owner_salesforce_id", "who_id", "what_id",
        "start_at", "end_at", "attempts", "error_code", "last_error", "synced_at", "updated_at",
    ),
    "journal": ("id", "at", "direction", "entity", "entity_key", "action", "detail"),
    "failures": ("entity", "key", "link_id", "error_code", "last_error", "attempts", "updated_at"),
    "drift": ("id", "run_id", "kind", "link_id", "booking_id", "salesforce_id", "repaired", "detail"),
}  # fmt: skip

# Which filters each listing understands (the others are refused, naming the option).
FILTERS: dict[str, frozenset[str]] = {
    "links": frozenset({"link", "state", "since"}),
    "activities": frozenset({"link", "booking", "state", "since"}),
    "journal": frozenset({"link", "booking", "since"}),
    "failures": frozenset({"link", "booking", "since"}),
    "drift": frozenset({"link", "booking"}),
}


# ------------------------------------------------------------------------------------ formatting


def cell(value: Any) -> str:
    """One value as text: ISO timestamps, JSON for structures, empty for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def jsonable(value: Any) -> Any:
    """A value JSON can hold (timestamps as ISO text, enums as their value)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def record_rows(records: Iterable[Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Dataclass records as dicts holding only `columns`, in that order."""
    rows = []
    for record in records:
        values = asdict(record) if is_dataclass(record) and not isinstance(record, type) else dict(record)
        rows.append({c: values.get(c) for c in columns})
    return rows


def flatten(report: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as (dotted key, value) pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten(value, f"{name}."))
        else:
            pairs.append((name, value))
    return pairs


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Header line, then one line per row."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])


def write_table(out: TextIO, title: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A rich table (for a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold", min_width=len(title) + 4)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    Console(file=out).print(table)


def parse_since(text: str | None) -> datetime | None:
    """`--since` as an aware datetime (a bare date is midnight UTC)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigurationError(f"--since must be an ISO date or datetime, not {text!r}", "--since") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_filters(what: str, given: Mapping[str, Any]) -> None:
    """Refuse a filter the listing does not understand, naming the option."""
    if what not in FILTERS:
        raise ConfigurationError(f"ledger: choose one of {', '.join(WHAT)}, not {what!r}", "ledger")
    for name, value in given.items():
        if value and name not in FILTERS[what]:
            raise ConfigurationError(f"--{name} does not apply to `ledger {what}`", f"--{name}")


# ------------------------------------------------------------------------------------ the daemon's API


class DaemonApi:
    """The running daemon's admin API, if one answers on admin.listen."""

    def __init__(self, settings: Settings, timeout: float = API_TIMEOUT_SECONDS) -> None:
        host, _, port = settings.admin.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.token = settings.admin.token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any] | None:
        """(status, decoded JSON); None when nothing answers."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"error": raw.decode(errors="replace")[:200]}


def _output_format(fmt: str | None, out: TextIO) -> str:
    return fmt or ("table" if out.isatty() else "csv")


# ------------------------------------------------------------------------------------ ledger


def ledger(
    settings: Settings,
    what: str,
    *,
    link: str | None,
    booking: str | None,
    state: str | None,
    since: str | None,
    limit: int,
    fmt: str | None,
    out: TextIO | None = None,
) -> int:
    """`mogli-bridge ledger links|activities|journal|failures|drift`: print ledger rows."""
    from bridge.ledger.repository import LedgerRepository

    out = out or sys.stdout
    check_filters(what, {"link": link, "booking": booking, "state": state, "since": since})
    when = parse_since(since)
    if limit < 1:
        raise ConfigurationError("--limit must be at least 1", "--limit")
    repository = LedgerRepository.from_url(settings.ledger.url)
    try:
        fetch: dict[str, Callable[[], list[Any]]] = {
            "links": lambda: repository.list_links(link, state, when, limit),
            "activities": lambda: repository.list_activities(link, booking, state, when, limit),
            "journal": lambda: repository.list_journal(link, booking, when, limit),
            "failures": lambda: repository.list_failures(link, booking, when, limit),
            "drift": lambda: repository.list_drift(None, link, booking, limit),
        }
        records = fetch[what]()
    finally:
        repository.dispose()
    _print_rows(out, _output_format(fmt, out), what, record_rows(records, COLUMNS[what]))
    return 0


def _print_rows(out: TextIO, form: str, what: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of one listing as JSON, CSV or a table."""
    columns = COLUMNS[what]
    if form == "json":
        out.write(json.dumps([jsonable(r) for r in rows], indent=2) + "\n")
    elif form == "csv":
        write_csv(out, columns, rows)
    else:
        write_table(out, f"ledger {what} ({len(rows)} rows)", columns, rows)


# ------------------------------------------------------------------------------------ retry


def retry(
    settings: Settings, *, booking_ids: Sequence[str], all_failed: bool, out: TextIO | None = None
) -> int:
    """`mogli-bridge retry`: failed records back to the queue, through the daemon when it runs.

    Without an answer from the daemon's API the ledger is written directly, but only under the ledger's
    instance lock: a command never writes behind a daemon that holds it (exit 1 with the reason instead).
    """
    from bridge.ledger.lock import InstanceLock
    from bridge.ledger.repository import LedgerRepository

    out = out or sys.stdout
    if bool(booking_ids) == all_failed:
        raise ConfigurationError("retry needs --booking ID... or --all-failed", "--booking")
    body = {"all_failed": True} if all_failed else {"booking_ids": list(booking_ids)}
    answer = DaemonApi(settings).call("POST", "/api/retry", body)
    if answer is not None and answer[0] == 200:
        moved = int(answer[1]["requeued"])
        out.write(f"requeued {moved} record(s) through the running daemon\n")
        return 0
    api = "did not answer" if answer is None else f"answered {answer[0]} ({_reason(answer[1])})"
    lock = InstanceLock(settings.ledger.url)
    if not lock.try_acquire():
        print(
            f"error: a running mogli-bridge daemon holds the ledger, but its admin API at "
            f"{settings.admin.listen} {api}; the ledger was not changed (check admin.listen and "
            "admin.token, then retry through the daemon)",
            file=sys.stderr,
        )
        return 1
    try:
        out.write(f"no daemon holds the ledger (the admin API {api}); writing the ledger directly\n")
        repository = LedgerRepository.from_url(settings.ledger.url)
        try:
            moved = repository.requeue(list(booking_ids) or None, all_failed, requested_by="cli")
        finally:
            repository.dispose()
    finally:
        lock.release()
    out.write(f"requeued {moved} record(s) in the ledger; a daemon pushes them once it runs\n")
    return 0


def _reason(reply: Any) -> str:
    if isinstance(reply, Mapping) and "error" in reply:
        return str(reply["error"])
    return "no reason given"


# ------------------------------------------------------------------------------------ status


def _ledger_section(settings: Settings) -> dict[str, Any]:
    """What the ledger says, read directly."""
    from bridge.ledger.engine import durability_problems
    from bridge.ledger.migrate import current_revision, head_revision
    from bridge.ledger.repository import LedgerRepository
    from bridge.records.source import format_lsn

    try:
        revision = current_revision(settings.ledger.url)
        repository = LedgerRepository.from_url(settings.ledger.url)
        try:
            counts = repository.counts()
            positions = repository.list_checkpoints()
            totals = repository.drift_totals()
            runs = repository.list_reconciliations(1)
            durability = durability_problems(repository.engine)
        finally:
            repository.dispose()
    except Exception as exc:
        return {"reachable": False, "error": _first_line(exc)}
    source_position = positions.pop("source", "")
    pending = counts.get("activities.pending", 0) + counts.get("links.pending", 0)
    failed = counts.get("activities.failed", 0) + counts.get("links.failed", 0)
    return {
        "reachable": True,
        "revision": revision,
        "current_schema": revision == head_revision(),
        "durable": not durability,
        "durability_problems": durability,
        "pending": pending,
        "failed": failed,
        "counts": counts,
        "source_position": format_lsn(int(source_position)) if source_position.isdigit() else None,
        "salesforce_stream_positions": positions,
        "drift_found": totals.found,
        "drift_repaired": totals.repaired,
        "last_reconciliation": (
            {"id": runs[0].id, "state": runs[0].state, "started_at": runs[0].started_at} if runs else None
        ),
    }


def _source_section(settings: Settings) -> dict[str, Any]:
    """The replication slot, read directly from the scheduling database."""
    from bridge.source.status import slot_status

    try:
        slot = slot_status(settings.source.dsn, settings.source.slot)
    except Exception as exc:
        return {"reachable": False, "slot": settings.source.slot, "error": _first_line(exc)}
    if slot is None:
        return {"reachable": True, "slot": settings.source.slot, "slot_exists": False}
    return {
        "reachable": True,
        "slot": slot.slot,
        "slot_exists": True,
        "slot_active": slot.active,
        "wal_status": slot.wal_status,
        "lag_bytes": slot.unconfirmed_bytes,
        "retained_bytes": slot.retained_bytes,
    }


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _daemon_section(answer: tuple[int, Any] | None) -> dict[str, Any]:
    """The running daemon's own /api/status, or why there is none."""
    if answer is None:
        return {"running": False, "reason": "no daemon answers on admin.listen"}
    status, body = answer
    if status != 200 or not isinstance(body, Mapping):
        return {"running": True, "reason": f"admin API answered {status}: {_reason(body)}"}
    return {"running": True, **body}


def status_report(settings: Settings) -> dict[str, Any]:
    """Ledger and source read directly, merged with the daemon's /api/status when it answers."""
    report: dict[str, Any] = {
        "ledger": _ledger_section(settings),
        "source": _source_section(settings),
        "daemon": _daemon_section(DaemonApi(settings).call("GET", "/api/status")),
    }
    daemon = report["daemon"]
    replication = daemon.get("replication") if isinstance(daemon.get("replication"), Mapping) else {}
    salesforce = daemon.get("salesforce") if isinstance(daemon.get("salesforce"), Mapping) else {}
    report["summary"] = {
        "daemon": "ready" if daemon.get("ready") else ("running" if daemon["running"] else "not running"),
        "replication_lag_bytes": report["source"].get("lag_bytes"),
        "replication_lag_seconds": replication.get("lag_seconds"),
        "api_used": salesforce.get("api_used"),
        "api_limit": salesforce.get("api_limit"),
        "pending": report["ledger"].get("pending"),
        "failed": report["ledger"].get("failed"),
    }
    return {"summary": report.pop("summary"), **report}


def status(settings: Settings, *, as_json: bool, out: TextIO | None = None) -> int:
    """`mogli-bridge status`: 0 when ledger and source are reachable, else 1."""
    out = out or sys.stdout
    report = status_report(settings)
    if as_json:
        out.write(json.dumps(jsonable(report), indent=2) + "\n")
    elif out.isatty():
        for section, values in report.items():
            rows = [{"key": k, "value": v} for k, v in flatten(values)]
            write_table(out, section, ("key", "value"), rows)
    else:
        write_csv(out, ("key", "value"), ({"key": k, "value": v} for k, v in flatten(report)))
    reachable = report["ledger"]["reachable"] and report["source"]["reachable"]
    return 0 if reachable else 1
