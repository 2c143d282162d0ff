"""The status page at `/`: server-rendered HTML, no scripts, no front-end build.

Read-only without a token. It names records by id and error code only (free-text errors may quote field
values, so they stay in the token-protected API). The form starts a reconciliation and carries the token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from bridge.admin.views import iso
from bridge.metrics import Readings
from bridge.records.ledger import FailureRecord, ReconciliationRun

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
.banner.ok{background:#e6f4ea} .banner.bad{background:#fce8e6}
form label{display:inline-block;margin:4px 12px 4px 0;font-size:13px}
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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _components(readings: Readings) -> str:
    rows = [f"<tr>{_cell(n)}{_cell(s, _cls(s))}</tr>" for n, s in sorted(readings.components.items())]
    for check in readings.checks:
        state = "ok" if check.ok else "failed"
        rows.append(f"<tr>{_cell(check.name + ' (ping)')}{_cell(state, _cls(state))}</tr>")
    return _table(("component", "state"), rows, "no components")


def _replication(readings: Readings) -> str:
    rep = readings.replication
    pairs = (
        ("slot", rep.slot),
        ("stream connected", "yes" if rep.connected else "no"),
        ("WAL status", rep.wal_status or "unknown"),
        ("lag (bytes)", rep.lag_bytes if rep.lag_bytes is not None else "unknown"),
        ("retained (bytes)", rep.retained_bytes if rep.retained_bytes is not None else "unknown"),
        ("lag (seconds)", f"{rep.lag_seconds:.1f}" if rep.lag_seconds is not None else "unknown"),
        ("last applied commit", iso(rep.last_commit_time) or "none yet"),
        ("reconnects", rep.reconnects),
    )
    return _table(("", ""), (f"<tr>{_cell(k)}{_cell(v)}</tr>" for k, v in pairs), "")


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
    )
    return _table(("", ""), (f"<tr>{_cell(k)}{_cell(v)}</tr>" for k, v in pairs), "")


def _failures(failures: Sequence[FailureRecord]) -> str:
    rows = (
        f"<tr>{_cell(f.entity)}{_cell(f.key)}{_cell(f.error_code, 'bad')}{_cell(f.attempts)}"
        f"{_cell(iso(f.updated_at))}</tr>"
        for f in failures
    )
    return _table(("entity", "id", "error code", "attempts", "updated"), rows, "no failures")


def _runs(runs: Sequence[ReconciliationRun]) -> str:
    rows = (
        f"<tr>{_cell(r.id)}{_cell(r.state, _cls(r.state))}{_cell('yes' if r.dry_run else 'no')}"
        f"{_cell(r.requested_by)}{_cell(iso(r.started_at))}{_cell(iso(r.finished_at))}</tr>"
        for r in runs
    )
    return _table(("run", "state", "dry run", "requested by", "started", "finished"), rows, "no runs yet")


_FORM = """
<form method="post" action="/ui/reconciliations">
<label>Admin token <input type="password" name="token" autocomplete="off" required></label>
<label>Links (ids, comma-separated) <input type="text" name="links" size="40"></label>
<label>Since <input type="text" name="since" placeholder="2026-01-01" size="12"></label>
<label>Until <input type="text" name="until" placeholder="2026-02-01" size="12"></label>
<label><input type="checkbox" name="dry_run" value="1" checked> dry run</label>
<button type="submit">Start reconciliation</button>
</form>
"""


def render_status_page(
    readings: Readings,
    failures: Sequence[FailureRecord],
    runs: Sequence[ReconciliationRun],
    *,
    notice: str | None = None,
) -> str:
    """The whole status page."""
    ready = readings.ready
    banner = (
        '<div class="banner ok">Ready: every component runs and every dependency answers</div>'
        if ready
        else '<div class="banner bad">Not ready: see the components below</div>'
    )
    note = f'<div class="banner ok">{escape(notice)}</div>' if notice else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mogli-bridge status</title>
<style>{_CSS}</style></head><body>
<h1>mogli-bridge</h1><div class="sub">status at {escape(iso(readings.at) or "")}</div>
{banner}{note}
<div class="grid">
<div class="card"><h2>Components</h2>{_components(readings)}</div>
<div class="card"><h2>Replication</h2>{_replication(readings)}</div>
<div class="card"><h2>Salesforce and ledger</h2>{_salesforce(readings)}</div>
</div>
<div class="card wide"><h2>Recent failures</h2>{_failures(failures)}</div>
<div class="card wide"><h2>Reconciliation runs</h2>{_runs(runs)}
<h2>Start a reconciliation</h2>{_FORM}</div>
</body></html>
"""
