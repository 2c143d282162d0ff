"""`mogli-bridge status`: the ledger and the source read directly, merged with the running daemon's own
/api/status when it answers. 0 when ledger and source are reachable, else 1."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from bridge.admin.client import AdminClient, DaemonAbsent, DaemonSilent, Reply, reason
from bridge.admin.workers import worker_summary
from bridge.commands.checks import SETUP_HINT, in_org, require_org, require_setup, with_ledger
from bridge.commands.output import first_line, flatten, jsonable, write_csv, write_table
from bridge.config import Settings
from bridge.records.ledger import ReconciliationRun

if TYPE_CHECKING:
    from bridge.ledger.repository import Ledger

RUNS_SEARCHED = 20  # newest runs looked through for the last finished one


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch from the command line."""
    return status(settings, as_json=args.json, verbose=args.verbose, org=args.org)


def _ledger_section(settings: Settings, org: str | None = None) -> dict[str, Any]:
    """What the ledger says (of `org` alone when given), read directly."""
    from bridge.ledger import queries, reports
    from bridge.ledger.engine import durability_problems
    from bridge.ledger.migrate import current_revision, head_revision
    from bridge.ledger.repository import Ledger
    from bridge.records.source import format_lsn

    try:
        revision = current_revision(settings.ledger.url)
        if revision is None:
            return {
                "reachable": True,
                "set_up": False,
                "error": f"the ledger has no tables yet: {SETUP_HINT}",
            }
        base = Ledger.from_url(settings.ledger.url)
        ledger = in_org(base, org)
        try:
            counts = ledger.call_read(queries.counts)
            positions = ledger.call_read(reports.list_checkpoints)
            totals = ledger.call_read(reports.drift_totals)
            runs = ledger.call_read(reports.list_runs, RUNS_SEARCHED)
            outstanding = _outstanding(ledger, runs)
            durability = durability_problems(base.engine)
        finally:
            base.dispose()
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
        "outstanding_drift": outstanding,
    }


def _outstanding(ledger: Ledger, runs: list[ReconciliationRun]) -> dict[str, Any] | None:
    """The newest finished run's unrepaired items (what is left to do), None before a run finished."""
    from bridge.ledger.runs import count_drift

    finished = next((r for r in runs if r.state == "finished"), None)
    if finished is None:
        return None
    return {
        "run_id": finished.id,
        "dry_run": finished.dry_run,
        "finished_at": finished.finished_at,
        "found": ledger.call_read(count_drift, run_id=finished.id),
        "unrepaired": ledger.call_read(count_drift, run_id=finished.id, repaired=False),
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


def _orgs_section(settings: Settings, org: str | None) -> dict[str, Any] | None:
    """The orgs: `org`'s row, or without it how many are in each state when there is more than the default
    org (tenancy); None for a ledger of the default org alone."""
    from bridge.admin.orgs import org_rows, row_json, state_summary

    try:
        rows = with_ledger(settings, org_rows)
    except Exception as exc:
        return {"error": first_line(exc)}
    if org is not None:
        return {"org": next((row_json(r) for r in rows if r.org_id == org), None)}
    if len(rows) <= 1 and not settings.tenancy.enabled:
        return None
    return {"summary": state_summary(rows), "orgs": [row_json(r) for r in rows]}


def _daemon_section(settings: Settings, org: str | None = None) -> dict[str, Any]:
    """The running daemon's own /api/status (of `org` alone when given), or why there is none."""
    path = "/api/status" if org is None else f"/api/status?org={urllib.parse.quote(org)}"
    try:
        reply: Reply = AdminClient(settings.admin).call("GET", path)
    except DaemonAbsent:
        return {"running": False, "reason": "no daemon answers on admin.listen"}
    except DaemonSilent as exc:
        return {"running": True, "reason": str(exc)}
    if reply.status != 200 or not isinstance(reply.body, Mapping):
        return {"running": True, "reason": f"admin API answered {reply.status}: {reason(reply.body)}"}
    return {"running": True, **reply.body}


def _workers_section(settings: Settings, daemon: Mapping[str, Any], set_up: bool) -> list[dict[str, Any]]:
    """CONTRACT §10's `workers`. In worker mode (tenancy on a PostgreSQL ledger) the ledger's rows, read
    directly, so they answer with no worker running (a worker that died in the last minute still shows,
    `alive` false). Otherwise the one daemon as its /api/status names itself, or [] when none answers
    (a standby is not a worker)."""
    from bridge.admin.workers import record_json
    from bridge.tenancy.workers import worker_mode

    if set_up and worker_mode(settings):
        try:
            records = with_ledger(settings, lambda ledger: ledger.list_workers())
        except Exception:  # the ledger section already says why it cannot be read
            pass
        else:
            now = datetime.now(UTC)
            return [record_json(r, now) for r in records]
    listed = daemon.get("workers")
    return [dict(w) for w in listed if isinstance(w, Mapping)] if isinstance(listed, list) else []


def status_report(settings: Settings, org: str | None = None) -> dict[str, Any]:
    """Ledger and source read directly, merged with the daemon's /api/status when it answers; with `org`,
    the ledger's figures and the daemon's are that org's."""
    report: dict[str, Any] = {
        "ledger": _ledger_section(settings, org),
        "source": _source_section(settings),
        "daemon": _daemon_section(settings, org),
    }
    set_up = bool(report["ledger"].get("current_schema"))
    orgs = _orgs_section(settings, org) if set_up else None
    report["workers"] = _workers_section(settings, report["daemon"], set_up)
    if orgs is not None:
        report["orgs"] = orgs
        if isinstance(orgs.get("org"), Mapping):  # the org's own channels, not the default org's
            report["ledger"]["salesforce_stream_positions"] = dict(orgs["org"]["positions"])
    daemon = report["daemon"]
    replication = daemon.get("replication") if isinstance(daemon.get("replication"), Mapping) else {}
    salesforce = daemon.get("salesforce") if isinstance(daemon.get("salesforce"), Mapping) else {}
    health = daemon.get("health") if isinstance(daemon.get("health"), Mapping) else {}
    outstanding = report["ledger"].get("outstanding_drift")
    report["summary"] = {
        "daemon": "ready" if daemon.get("ready") else ("running" if daemon["running"] else "not running"),
        "state": health.get("state") or ("not running" if not daemon["running"] else "unknown"),
        "reasons": list(health.get("reasons") or ()) + _problems(report),
        "outstanding_drift": outstanding["unrepaired"] if outstanding else None,
        "replication_lag_bytes": report["source"].get("lag_bytes"),
        "replication_lag_seconds": replication.get("lag_seconds"),
        "api_used": salesforce.get("api_used"),
        "api_limit": salesforce.get("api_limit"),
        "pending": report["ledger"].get("pending"),
        "failed": report["ledger"].get("failed"),
    }
    _org_summary(report["summary"], orgs, org)
    from bridge.tenancy.workers import worker_mode

    if report["workers"] or worker_mode(settings):
        report["summary"]["workers"] = worker_summary(report["workers"])
    return {"summary": report.pop("summary"), **report}


def _org_summary(summary: dict[str, Any], orgs: Mapping[str, Any] | None, org: str | None) -> None:
    """The orgs in the summary: the chosen org, its state and API budget; or how many orgs are in each
    state (the paused ones' reasons)."""
    if orgs is None:
        return
    row = orgs.get("org")
    if org is not None and isinstance(row, Mapping):
        summary["org"] = org
        summary["org_state"] = row["state"] + (f" ({row['reason']})" if row.get("reason") else "")
        summary["api_used"] = row.get("api_used") if row.get("api_used") is not None else summary["api_used"]
        summary["api_limit"] = row.get("api_limit") or summary["api_limit"]
    elif "summary" in orgs:
        summary["orgs"] = orgs["summary"]


def _problems(report: Mapping[str, Any]) -> list[str]:
    """What this process itself found wrong: a ledger or source it could not read, a daemon that did not
    answer properly."""
    problems = []
    for name in ("ledger", "source"):
        if report[name].get("error"):
            problems.append(f"{name}: {report[name]['error']}")
    daemon = report["daemon"]
    if daemon.get("running") and daemon.get("reason"):
        problems.append(f"daemon: {daemon['reason']}")
    return problems


def status(
    settings: Settings,
    *,
    as_json: bool,
    out: TextIO | None = None,
    verbose: bool = False,
    org: str | None = None,
) -> int:
    """`mogli-bridge status` (of `org` alone when given): 0 when ledger and source are reachable, else 1.

    On a terminal the short summary comes first and alone (it must not scroll away); --verbose adds every
    section after it. In a pipe, `key,value` lines of everything; --json, the whole report.
    """
    out = out or sys.stdout
    if org is not None:
        require_setup(settings)
        require_org(settings, org)
    report = status_report(settings, org)
    if as_json:
        out.write(json.dumps(jsonable(report), indent=2) + "\n")
    elif out.isatty():
        _print_summary(out, report)
        if verbose:
            for section, values in report.items():
                if section != "summary":
                    pairs = flatten({section: _keyed(values)}, "")
                    rows = [{"key": k.removeprefix(f"{section}."), "value": v} for k, v in pairs]
                    write_table(out, section, ("key", "value"), rows)
        else:
            out.write("every detail: status --verbose (or --json)\n")
    else:
        pairs = flatten({name: _keyed(values) for name, values in report.items()})
        write_csv(out, ("key", "value"), ({"key": k, "value": v} for k, v in pairs))
    reachable = (
        report["ledger"]["reachable"] and report["source"]["reachable"] and "error" not in report["ledger"]
    )
    return 0 if reachable else 1


def _keyed(values: Any) -> Any:
    """A section for `key,value` lines: a list (the workers) keyed by position, workers.0.id and so on."""
    if isinstance(values, list):
        return {str(index): item for index, item in enumerate(values)} or "none"
    return values


def summary_lines(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary as (label, text) pairs, one short line each."""
    summary, ledger = report["summary"], report["ledger"]
    lag_bytes, lag_seconds = summary.get("replication_lag_bytes"), summary.get("replication_lag_seconds")
    lag = (
        "unknown"
        if lag_bytes is None and lag_seconds is None
        else ", ".join(
            part
            for part in (
                f"{int(lag_bytes):,} bytes" if lag_bytes is not None else "",
                f"{float(lag_seconds):.1f} s" if lag_seconds is not None else "",
            )
            if part
        )
    )
    used, limit = summary.get("api_used"), summary.get("api_limit")
    budget = f"{int(used):,} of {int(limit):,} calls used today" if used is not None and limit else "unknown"
    drift = _drift_text(ledger.get("outstanding_drift"))
    count = "unknown" if summary.get("pending") is None else f"{summary['pending']:,}"
    failed = "unknown" if summary.get("failed") is None else f"{summary['failed']:,}"
    lines = [("org", f"{summary['org']}: {summary['org_state']}")] if summary.get("org") else []
    lines += [
        ("state", str(summary["state"])),
        ("replication lag", lag),
        ("pending", count),
        ("failed", failed),
        ("API budget", budget),
        ("outstanding drift", drift),
    ]
    if summary.get("orgs"):
        lines.append(("orgs", str(summary["orgs"])))
    if summary.get("workers"):
        lines.append(("workers", str(summary["workers"])))
    lines += [("reason", reason_text) for reason_text in summary["reasons"]]
    return lines


def _drift_text(outstanding: Mapping[str, Any] | None) -> str:
    """The last finished run's unrepaired items, in words."""
    if not outstanding:
        return "no finished reconciliation yet"
    text = f"{outstanding['unrepaired']:,} unrepaired of {outstanding['found']:,} found by run "
    return text + str(outstanding["run_id"]) + (" (a dry run)" if outstanding["dry_run"] else "")


def _print_summary(out: TextIO, report: Mapping[str, Any]) -> None:
    """The short summary: one line per figure, reasons last, fitted to the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="mogli-bridge status: summary",
        title_justify="left",
        show_header=False,
        box=None,
        pad_edge=False,
    )
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, text in summary_lines(report):
        table.add_row(label, text)
    Console(file=out).print(table)
