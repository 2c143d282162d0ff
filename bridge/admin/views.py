"""JSON shapes of the admin API, and parsing of its request bodies (pure functions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.admin.health import Health
from bridge.metrics import Readings
from bridge.records.ledger import DriftItem, ReconciliationRun

RECONCILE_KEYS = frozenset(
    {"links", "bookings", "since", "until", "changed_since", "changed_until", "dry_run", "orgs"}
)


class BadRequest(ValueError):
    """A request body the API refuses (answered with 400 and this message)."""


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """The validated body of POST /api/reconciliations."""

    links: tuple[str, ...] = ()
    bookings: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    changed_since: datetime | None = None
    changed_until: datetime | None = None
    orgs: tuple[str, ...] = ()  # one run per org; empty: one run as without tenancy


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """The validated body of POST /api/retry."""

    booking_ids: tuple[str, ...] = ()
    all_failed: bool = False
    org: str | None = None  # only this org's rows ('default': the default org)


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 timestamp, or None."""
    return value.isoformat() if value is not None else None


def parse_when(key: str, value: Any) -> datetime | None:
    """An ISO date or datetime (naive means UTC), or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be an ISO date or datetime string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{key}: {value!r} is not an ISO date or datetime") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ids(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f"{key} must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def parse_reconcile(body: Any) -> ReconcileRequest:
    """Validate a reconcile body: links, bookings, since, until, or changed_since, changed_until; dry_run."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - RECONCILE_KEYS)
    if unknown:
        raise BadRequest(f"unknown keys: {', '.join(unknown)} (allowed: {', '.join(sorted(RECONCILE_KEYS))})")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false")
    request = ReconcileRequest(
        links=_ids("links", body.get("links")),
        bookings=_ids("bookings", body.get("bookings")),
        since=parse_when("since", body.get("since")),
        until=parse_when("until", body.get("until")),
        dry_run=dry_run,
        changed_since=parse_when("changed_since", body.get("changed_since")),
        changed_until=parse_when("changed_until", body.get("changed_until")),
        orgs=tuple(dict.fromkeys(_ids("orgs", body.get("orgs")))),
    )
    _check_windows(request)
    return request


def _check_windows(r: ReconcileRequest) -> None:
    """The rules ReconcileOptions enforces, answered as 400 before a run is opened."""
    if r.since and r.until and r.since >= r.until:
        raise BadRequest("since must be before until")
    if r.changed_until is not None and r.changed_since is None:
        raise BadRequest("changed_until needs changed_since")
    if r.changed_since and r.changed_until and r.changed_since >= r.changed_until:
        raise BadRequest("changed_since must be before changed_until")
    if r.changed_since is not None and (r.links or r.bookings or r.since or r.until):
        raise BadRequest("changed_since cannot be combined with links, bookings, since or until")


def parse_retry(body: Any) -> RetryRequest:
    """Validate a retry body: {"booking_ids": [...]} or {"all_failed": true}, not both."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    ids = _ids("booking_ids", body.get("booking_ids"))
    all_failed = body.get("all_failed", False)
    if not isinstance(all_failed, bool):
        raise BadRequest("all_failed must be true or false")
    if bool(ids) == all_failed:
        raise BadRequest('give either {"booking_ids": [...]} or {"all_failed": true}')
    org = body.get("org")
    if org is not None and (not isinstance(org, str) or not org.strip()):
        raise BadRequest("org must be an org id (a non-empty string)")
    return RetryRequest(booking_ids=ids, all_failed=all_failed, org=org.strip() if org else None)


def status_json(readings: Readings, health: Health) -> dict[str, Any]:
    """The body of GET /api/status."""
    rep = readings.replication
    return {
        "at": iso(readings.at),
        "ready": health.serving,
        "health": health.as_json(),
        "components": dict(readings.components),
        "checks": {c.name: {"ok": c.ok, "error": c.error} for c in readings.checks},
        "replication": {
            "slot": rep.slot,
            "connected": rep.connected,
            "slot_exists": rep.slot_exists,
            "slot_active": rep.slot_active,
            "wal_status": rep.wal_status,
            "lag_bytes": rep.lag_bytes,
            "retained_bytes": rep.retained_bytes,
            "lag_seconds": rep.lag_seconds,
            "applied_lsn": rep.applied_lsn,
            "acked_lsn": rep.acked_lsn,
            "last_commit_time": iso(rep.last_commit_time),
            "queue_depth": rep.queue_depth,
            "reconnects": rep.reconnects,
        },
        "salesforce": {
            "api_used": readings.api_used,
            "api_limit": readings.api_limit,
            "api_calls": readings.api_calls,
            "waiting_reason": readings.waiting_reason,
            "stream_positions": dict(readings.stream_positions),
            "streaming": dict(readings.streaming),
        },
        "push": {"pushed": readings.pushed, "failed": readings.failed},
        "ledger": {
            "pending": readings.count("pending"),
            "failed": readings.count("failed"),
            "counts": dict(readings.ledger_counts),
        },
        "reconciliation": {"drift_found": readings.drift_found, "drift_repaired": readings.drift_repaired},
    }


def run_json(run: ReconciliationRun, drift: Sequence[DriftItem]) -> dict[str, Any]:
    """The body of GET /api/reconciliations/{id}: the run row plus its drift counts."""
    by_kind = Counter(d.kind for d in drift)
    return {
        "id": run.id,
        "requested_by": run.requested_by,
        "scope": dict(run.scope),
        "dry_run": run.dry_run,
        "state": run.state,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "summary": dict(run.summary) if run.summary is not None else None,
        "drift": {
            "found": len(drift),
            "repaired": sum(1 for d in drift if d.repaired),
            "by_kind": dict(sorted(by_kind.items())),
        },
    }


def org_status_json(body: Mapping[str, Any], org: Mapping[str, Any]) -> dict[str, Any]:
    """GET /api/status?org=ID: the daemon's status with the ledger figures, API budget and stream positions
    of that org (`org` as `org_detail` gives it), and the org's row."""
    counts = dict(org.get("counts") or {})
    return {
        **body,
        "org": {k: v for k, v in org.items() if k not in ("counts", "recent_failures")},
        "salesforce": {
            **body["salesforce"],
            "api_used": org.get("api_used"),
            "api_limit": org.get("api_limit"),
            "stream_positions": dict(org.get("positions") or {}),
        },
        "ledger": {"pending": org.get("pending"), "failed": org.get("failed"), "counts": counts},
    }
