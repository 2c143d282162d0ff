"""`mogli-bridge status`: the ledger and the source read directly, merged with the running daemon's own
/api/status when it answers. 0 when ledger and source are reachable, else 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from bridge.admin.client import AdminClient, DaemonAbsent, DaemonSilent, Reply, reason
from bridge.commands.output import first_line, flatten, jsonable, write_csv, write_table
from bridge.config import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return status(settings, as_json=args.json)


def _ledger_section(settings: Settings) -> dict[str, Any]:
    """What the ledger says, read directly."""
    from bridge.ledger import queries, reports
    from bridge.ledger.engine import durability_problems
    from bridge.ledger.migrate import current_revision, head_revision
    from bridge.ledger.repository import Ledger
    from bridge.records.source import format_lsn

    try:
        revision = current_revision(settings.ledger.url)
        ledger = Ledger.from_url(settings.ledger.url)
        try:
            counts = ledger.call_read(queries.counts)
            positions = ledger.call_read(reports.list_checkpoints)
            totals = ledger.call_read(reports.drift_totals)
            runs = ledger.call_read(reports.list_runs, 1)
            durability = durability_problems(ledger.engine)
        finally:
            ledger.dispose()
    except Exception as exc:
        return {"reachable": False, "error": first_line(exc)}
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
        return {"reachable": False, "slot": settings.source.slot, "error": first_line(exc)}
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


def _daemon_section(settings: Settings) -> dict[str, Any]:
    """The running daemon's own /api/status, or why there is none."""
    try:
        reply: Reply = AdminClient(settings.admin).call("GET", "/api/status")
    except DaemonAbsent:
        return {"running": False, "reason": "no daemon answers on admin.listen"}
    except DaemonSilent as exc:
        return {"running": True, "reason": str(exc)}
    if reply.status != 200 or not isinstance(reply.body, Mapping):
        return {"running": True, "reason": f"admin API answered {reply.status}: {reason(reply.body)}"}
    return {"running": True, **reply.body}


def status_report(settings: Settings) -> dict[str, Any]:
    """Ledger and source read directly, merged with the daemon's /api/status when it answers."""
    report: dict[str, Any] = {
        "ledger": _ledger_section(settings),
        "source": _source_section(settings),
        "daemon": _daemon_section(settings),
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
