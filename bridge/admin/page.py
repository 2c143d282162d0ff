"""The status page at `/`: server-rendered HTML, no scripts, no front-end build, no external asset.

It reloads itself (a meta refresh); the charts are inline SVG from the daemon's in-memory `History`.

Read-only without a token. It names records by id and error code only (free-text errors may quote field
values, so they stay in the token-protected API). The form starts a reconciliation and carries the token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from bridge.admin.charts import line_chart
from bridge.admin.health import Health
from bridge.admin.history import WINDOW, History
from bridge.admin.orgs import OrgRow
from bridge.admin.workers import WorkerRow, short_worker
from bridge.metrics import Readings
from bridge.records.ledger import DriftItem, FailureRecord, ReconciliationRun

REFRESH_SECONDS = 15

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#1d2430;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px}
.sub{color:#5b6472;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:14px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 14px}
.wide{margin-top:14px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2} th{color:#5b6472;font-weight:600}
.ok{color:#137333;font-weight:600} .bad{color:#b3261e;font-weight:600} .warn{color:#a15c00;font-weight:600}
.banner{padding:8px 12px;border-radius:6px;margin:10px 0;font-weight:600}
.banner.ok{background:#e6f4ea} .banner.bad{background:#fce8e6} .banner.warn{background:#fef7e0}
.banner ul{margin:6px 0 0;padding-left:20px;font-weight:400}
.scroll{overflow-x:auto} td{overflow-wrap:break-word}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px}
.chart{margin:0} .chart figcaption{font-size:13px;color:#5b6472;margin-bottom:4px}
.chart svg{width:100%;height:80px;display:block} .chart text{font-size:10px;fill:#5b6472}
input{max-width:100%;box-sizing:border-box}
form label{display:inline-block;margin:4px 12px 4px 0;font-size:13px;max-width:calc(100% - 12px)}
input[type=text],input[type=password]{padding:4px 6px;border:1px solid #c4c9d1;border-radius:4px}
button{padding:6px 14px;border:0;border-radius:4px;background:#1a73e8;color:#fff;font-weight:600}
"""


def _cls(state: str) -> str:
    if state in ("running", "synced", "finished", "ok", "yes"):
        return "ok"
    if state in ("failed", "stopped", "lost", "no"):
        return "bad"
    return "warn"


def _cell(value: object, css: str | None = None) -> str:
    text = "" if value is None else str(value)
    return f'<td class="{css}">{escape(text)}</td>' if css else f"<td>{escape(text)}</td>"


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    body = "".join(rows) or f'<tr><td colspan="{len(headers)}">{escape(empty)}</td></tr>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _components(readings: Readings) -> str:
    rows = [
        f"<tr>{_cell(n)}{_cell(s, _cls(s))}{_cell('')}</tr>" for n, s in sorted(readings.components.items())
    ]
    for check in readings.checks:
        state = "ok" if check.ok else "failed"
        label = "salesforce (ping, writes)" if check.name == "salesforce" else f"{check.name} (ping)"
        rows.append(f"<tr>{_cell(label)}{_cell(state, _cls(state))}{_cell(check.error)}</tr>")
    return _table(("component", "state", "detail"), rows, "no components")


def stamp(value: datetime | None) -> str:
    """A UTC time to the second: 2026-12-03 22:05:01 UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def ago(value: datetime | None, now: datetime) -> str:
    """How long before `now`, in the largest whole unit: "just now", "3 min ago", "2 h ago", "4 days ago"."""
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 10:
        return "just now"
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {'day' if unit == 'days' and count == 1 else unit} ago"
    return f"{int(seconds)} s ago"


def _when(value: datetime | None, now: datetime, none: str = "") -> str:
    """ "3 min ago" with the exact time in a tooltip."""
    if value is None:
        return f"<td>{escape(none)}</td>"
    return f'<td title="{escape(stamp(value))}">{escape(ago(value, now))}</td>'


def _replication(readings: Readings) -> str:
    rep = readings.replication
    pairs = (
        ("slot", rep.slot),
        ("stream connected", "yes" if rep.connected else "no"),
        ("WAL status", rep.wal_status or "unknown"),
        ("lag (bytes)", rep.lag_bytes if rep.lag_bytes is not None else "unknown"),
        ("retained (bytes)", rep.retained_bytes if rep.retained_bytes is not None else "unknown"),
        ("lag (seconds)", f"{rep.lag_seconds:.1f}" if rep.lag_seconds is not None else "unknown"),
        ("reconnects", rep.reconnects),
    )
    rows = [f"<tr>{_cell(k)}{_cell(v)}</tr>" for k, v in pairs]
    commit = _when(rep.last_commit_time, readings.at, "none yet")
    rows.insert(6, f"<tr>{_cell('last applied commit')}{commit}</tr>")
    return _table(("", ""), rows, "")


def _salesforce(readings: Readings) -> str:
    budget = (
        f"{readings.api_used} / {readings.api_limit}"
        if readings.api_used is not None and readings.api_limit is not None
        else "unknown"
    )
    pairs = (
        ("API budget used", budget),
        ("API calls by this daemon", readings.api_calls),
        ("pushed / failed", f"{readings.pushed} / {readings.failed}"),
        ("waiting", readings.waiting_reason or "no"),
        ("pending in ledger", readings.count("pending")),
        ("failed in ledger", readings.count("failed")),
        *sorted(readings.streaming.items()),
    )
    return _table(("", ""), (f"<tr>{_cell(k)}{_cell(v)}</tr>" for k, v in pairs), "")


def _failures(failures: Sequence[FailureRecord], now: datetime) -> str:
    rows = (
        f"<tr>{_cell(f.entity)}{_cell(f.key)}{_cell(f.error_code, 'bad')}{_cell(f.attempts)}"
        f"{_when(f.updated_at, now)}</tr>"
        for f in failures
    )
    return _table(("entity", "id", "error code", "attempts", "updated"), rows, "no failures")


def _summary_figure(run: ReconciliationRun, key: str) -> object:
    value = (run.summary or {}).get(key)
    return value if isinstance(value, int) else ""


def _runs(runs: Sequence[ReconciliationRun], now: datetime) -> str:
    rows = (
        f"<tr>{_cell(r.id)}{_cell(r.state, _cls(r.state))}{_cell('yes' if r.dry_run else 'no')}"
        f"{_cell(_summary_figure(r, 'total'))}{_cell(_summary_figure(r, 'repaired'))}"
        f"{_cell(r.requested_by)}{_when(r.started_at, now)}{_when(r.finished_at, now)}</tr>"
        for r in runs
    )
    headers = ("run", "state", "dry run", "found", "repaired", "requested by", "started", "finished")
    return _table(headers, rows, "no runs yet")


@dataclass(frozen=True, slots=True)
class Outstanding:
    """The last finished run's drift items that were not repaired (the first few, and how many)."""

    run: ReconciliationRun
    items: tuple[DriftItem, ...]
    count: int


def _outstanding(outstanding: Outstanding | None, now: datetime) -> str:
    if outstanding is None:
        return '<p class="sub">No reconciliation run has finished yet.</p>'
    run = outstanding.run
    head = (
        f'<p class="sub">{outstanding.count} unrepaired item(s) from run {run.id} '
        f"({'dry run, ' if run.dry_run else ''}finished {escape(ago(run.finished_at, now))})</p>"
    )
    rows = (
        f"<tr>{_cell(d.kind, 'warn')}{_cell(d.link_id)}{_cell(d.booking_id)}{_cell(d.salesforce_id)}</tr>"
        for d in outstanding.items
    )
    return head + _table(("kind", "link", "booking", "Salesforce id"), rows, "nothing outstanding")


def _charts(history: History | None, now: datetime) -> str:
    if history is None:
        return ""
    start = now - WINDOW
    charts = (
        line_chart("Writes per minute", history.writes_per_minute(start), start, now, "/min"),
        line_chart("Pending", history.series(start, lambda s: s.pending), start, now, "rows"),
        line_chart("Replication lag", history.series(start, lambda s: s.lag_seconds), start, now, "s"),
        line_chart("API calls left", history.series(start, lambda s: s.api_left), start, now, "calls"),
    )
    return f'<div class="card wide"><h2>Last hour</h2><div class="charts">{"".join(charts)}</div></div>'


_FORM = """
<form method="post" action="/ui/reconciliations">{org}
<label>Admin token <input type="password" name="token" autocomplete="off" required></label>
<label>Links (ids, comma-separated) <input type="text" name="links" size="40"></label>
<label>Since <input type="text" name="since" placeholder="2026-01-01" size="12"></label>
<label>Until <input type="text" name="until" placeholder="2026-02-01" size="12"></label>
<label><input type="checkbox" name="dry_run" value="1" checked> dry run</label>
<button type="submit">Start reconciliation</button>
</form>
"""


def _org_picker(orgs: Sequence[OrgRow], chosen: str | None) -> str:
    """A GET form choosing the org the page shows (every org when none is chosen)."""
    options = ['<option value="">every org</option>'] + [
        f'<option value="{escape(o.org_id)}"{" selected" if o.org_id == chosen else ""}>'
        f"{escape(o.name or o.org_id)} ({escape(o.org_id)})</option>"
        for o in orgs
    ]
    return (
        '<form method="get" action="/"><label>Org <select name="org">'
        + "".join(options)
        + '</select></label> <button type="submit">Show</button></form>'
    )


def _orgs(orgs: Sequence[OrgRow], with_workers: bool = False) -> str:
    """Every org: state, reason, pending, failed, API use; and the worker serving it (several workers)."""
    rows = (
        f'<tr><td><a href="/?org={quote(o.org_id)}">{escape(o.org_id)}</a></td>{_cell(o.name)}'
        f"{_cell(o.state, _cls_org(o.state))}{_cell(o.reason)}{_cell(o.pending)}{_cell(o.failed)}"
        f"{_cell(_budget(o.api_used, o.api_limit))}"
        + (_worker_cell(o.worker, o.state) if with_workers else "")
        + "</tr>"
        for o in orgs
    )
    headers = ("org", "name", "state", "reason", "pending", "failed", "API use")
    return _table(headers + (("worker",) if with_workers else ()), rows, "no orgs")


def _worker_cell(worker: str | None, state: str) -> str:
    """The worker holding an org's lease, short (the whole id in a tooltip); 'nobody' between holders
    (nothing for a disconnected org: no worker serves it)."""
    if worker is None:
        return "<td></td>" if state == "disconnected" else '<td class="warn">nobody</td>'
    return f'<td title="{escape(worker)}">{escape(short_worker(worker))}</td>'


_WORKER_CSS = {"live": "ok", "draining": "warn", "expired": "bad"}


def _worker_state(w: WorkerRow) -> str:
    if not w.alive:
        return "expired"
    return "draining" if w.draining else "live"


def workers_section(workers: Sequence[WorkerRow], now: datetime) -> str:
    """The workers (several workers on one ledger): who reads the stream, how many orgs each serves, when
    its lease ends; the one that answered this page is marked."""
    if not workers:
        return ""
    rows = (
        f'<tr><td title="{escape(w.id)}">{escape(w.id)}{" (this page)" if w.this else ""}</td>'
        f"{_cell(w.host)}{_cell(w.pid)}{_cell('yes' if w.reader else 'no', 'ok' if w.reader else None)}"
        f"{_cell(len(w.orgs))}{_cell(_worker_state(w), _WORKER_CSS[_worker_state(w)])}"
        f"{_when(w.started_at, now)}<td>{escape(stamp(w.lease_until))}</td></tr>"
        for w in workers
    )
    live = [w for w in workers if w.alive]
    readers = sum(1 for w in live if w.reader)
    note = f"{len(live)} live worker(s); " + (
        "one reads the change stream" if readers == 1 else f"{readers} read the change stream"
    )
    headers = ("worker", "host", "pid", "reads stream", "orgs", "state", "started", "lease until")
    return (
        f'<div class="card wide"><h2>Workers</h2><p class="sub">{escape(note)}</p>'
        f"{_table(headers, rows, 'no workers')}</div>"
    )


def _cls_org(state: str) -> str:
    return {"active": "ok", "paused": "warn"}.get(state, "bad")


def _budget(used: int | None, limit: int | None) -> str:
    return f"{used} / {limit}" if used is not None and limit is not None else "unknown"


def org_section(orgs: Sequence[OrgRow], chosen: str | None, with_workers: bool = False) -> str:
    """The org selector and the orgs table, when the bridge serves more than the default org."""
    if len(orgs) <= 1:
        return ""
    scope = f"Showing org {escape(chosen)}" if chosen else "Showing every org"
    return (
        f'<div class="card wide"><h2>Orgs</h2><p class="sub">{scope}</p>'
        f"{_org_picker(orgs, chosen)}{_orgs(orgs, with_workers)}</div>"
    )


def _form(org: str | None) -> str:
    """The reconciliation form; with an org chosen, it reconciles that org."""
    hidden = f'\n<input type="hidden" name="org" value="{escape(org)}">' if org else ""
    return _FORM.replace("{org}", hidden)


_BANNERS = {
    "ready": ("ok", "Ready: every component runs and every dependency answers"),
    "degraded": ("warn", "Degraded: the daemon works, but needs attention"),
    "not_ready": ("bad", "Not ready: see the reasons and the components below"),
}


def _banner(health: Health) -> str:
    css, title = _BANNERS[health.state]
    reasons = "".join(f"<li>{escape(r)}</li>" for r in health.reasons)
    return (
        f'<div class="banner {css}">{escape(title)}' + (f"<ul>{reasons}</ul>" if reasons else "") + "</div>"
    )


def render_status_page(
    readings: Readings,
    failures: Sequence[FailureRecord],
    runs: Sequence[ReconciliationRun],
    *,
    health: Health,
    outstanding: Outstanding | None = None,
    history: History | None = None,
    notice: str | None = None,
    orgs: Sequence[OrgRow] = (),
    org: str | None = None,
    workers: Sequence[WorkerRow] = (),
) -> str:
    """The whole status page (failures and runs of `org` alone when chosen; the workers and each org's
    worker when several workers share the ledger); it reloads itself every REFRESH_SECONDS."""
    now = readings.at
    note = f'<div class="banner ok">{escape(notice)}</div>' if notice else ""
    reload = f"/?org={quote(org)}" if org else "/"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mogli-bridge status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}; url={escape(reload)}">
<style>{_CSS}</style></head><body>
<h1>mogli-bridge</h1><div class="sub">status at {escape(stamp(now))}, reloads every {REFRESH_SECONDS} s</div>
{_banner(health)}{note}
<div class="grid">
<div class="card"><h2>Components</h2>{_components(readings)}</div>
<div class="card"><h2>Replication</h2>{_replication(readings)}</div>
<div class="card"><h2>Salesforce and ledger</h2>{_salesforce(readings)}</div>
</div>
{workers_section(workers, now)}
{org_section(orgs, org, with_workers=bool(workers))}
{_charts(history, now)}
<div class="card wide"><h2>Outstanding drift</h2>{_outstanding(outstanding, now)}</div>
<div class="card wide"><h2>Recent failures</h2>{_failures(failures, now)}</div>
<div class="card wide"><h2>Reconciliation runs</h2>{_runs(runs, now)}
<h2>Start a reconciliation{f" of org {escape(org)}" if org else ""}</h2>{_form(org)}</div>
</body></html>
"""
