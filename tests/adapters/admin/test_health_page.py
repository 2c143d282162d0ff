"""The admin app's health verdict (ready / degraded / not ready) in /readyz, /api/status and the status page,
and what the page shows: reasons, dependency errors, outstanding drift, per-run counts, ages, charts."""

from __future__ import annotations

import re
from datetime import timedelta

from bridge.admin.history import Sample
from bridge.devtools.localpg import free_port
from bridge.records.ledger import DriftItem
from bridge.records.outbound import ApiUsage
from tests.adapters.admin.conftest import AUTH, Harness, Make
from tests.adapters.ledger.factory import NOW


async def test_readyz_needs_no_token_and_says_ready(make: Make) -> None:
    """/readyz answers a token-less probe (a load balancer's): 200, state ready, no reasons."""
    h: Harness = await make()
    response = await h.client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["health"] == {"state": "ready", "reasons": []} and body["ready"] is True


async def test_salesforce_failing_writes_make_the_daemon_degraded_though_the_ping_passes(make: Make) -> None:
    """The pusher waiting after a 5xx: /readyz stays 200 but says degraded; the salesforce check fails with
    the pusher's reason though /limits answered; /api/status carries the same health; the page is amber."""
    h: Harness = await make()
    h.pusher.waiting_reason = "salesforce_unavailable"
    response = await h.client.get("/readyz")
    body = await response.json()
    assert response.status == 200
    assert body["health"]["state"] == "degraded" and body["ready"] is True
    [reason] = body["health"]["reasons"]
    assert "Salesforce failed a write" in reason
    assert body["checks"]["salesforce"]["ok"] is False and h.salesforce.limit_calls == 1
    status = await (await h.client.get("/api/status", headers=AUTH)).json()
    assert status["health"] == body["health"]
    page = await (await h.client.get("/")).text()
    assert "Degraded: the daemon works, but needs attention" in page and "Ready:" not in page
    assert "Salesforce failed a write" in page
    assert re.search(r"salesforce \(ping, writes\)</td><td class=\"bad\">failed", page)


async def test_the_api_budget_nearly_gone_is_a_degraded_reason(make: Make) -> None:
    """Less than the threshold's share of the daily API allocation left: degraded, with the figures."""
    h: Harness = await make()
    h.salesforce.usage = ApiUsage(used=14000, limit=15000)
    body = await (await h.client.get("/readyz")).json()
    assert body["health"] == {
        "state": "degraded",
        "reasons": ["Salesforce API budget nearly gone: 1000 of 15000 calls left today"],
    }


async def test_a_silent_scheduler_is_not_ready_and_the_page_shows_the_error(make: Make) -> None:
    """The scheduling database refusing connections: /readyz 503 naming it, and the page shows the driver's
    reason (host and port, no password) beside "failed", not "failed" alone."""
    port = free_port()
    h: Harness = await make(scheduler_dsn=f"postgresql://nobody:secret-pw@127.0.0.1:{port}/scheduler")
    response = await h.client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and body["health"]["state"] == "not_ready"
    assert any(r.startswith("scheduler does not answer: OperationalError") for r in body["health"]["reasons"])
    page = await (await h.client.get("/")).text()
    assert "Not ready" in page
    row = re.search(r"scheduler \(ping\)</td><td class=\"bad\">failed</td><td>([^<]*)</td>", page)
    assert row is not None and f"port {port} failed" in row.group(1), row
    assert "secret-pw" not in page and "secret-pw" not in str(body)


async def test_the_page_reloads_itself_and_shows_runs_drift_ages_and_charts(make: Make) -> None:
    """A meta refresh; each run's found/repaired; the newest finished run's unrepaired drift; ages instead
    of ISO stamps with microseconds; four inline SVG charts from the history, no external asset."""
    h: Harness = await make()
    run = await h.ledger.start_reconciliation("cli", {}, dry_run=False)
    await h.ledger.add_drift(
        [
            DriftItem(run, "missing_in_salesforce", link_id="l1", booking_id="b-gone", repaired=True),
            DriftItem(run, "field_mismatch", link_id="l1", booking_id="b-drifted"),
            DriftItem(run, "orphan_in_salesforce", salesforce_id="00U0000000000ZZAAA"),
        ]
    )
    await h.ledger.finish_reconciliation(run, "finished", {"total": 3, "repaired": 1})
    for minutes, pushed in ((-20, 0), (-19, 30), (-18, 90)):
        h.server.history.add(Sample(NOW + timedelta(minutes=minutes), pushed, 4, 1.5, 13000))
    page = await (await h.client.get("/")).text()
    assert '<meta http-equiv="refresh" content="15; url=/">' in page
    assert f'<td>{run}</td><td class="ok">finished</td><td>no</td><td>3</td><td>1</td>' in page
    assert f"2 unrepaired item(s) from run {run}" in page
    assert "b-drifted" in page and "00U0000000000ZZAAA" in page and "b-gone" not in page
    assert "just now" in page or " ago</td>" in page
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d{6}", page), "a time with microseconds"
    assert page.count("<svg") == 4 and "Writes per minute <b>60 /min</b>" in page
    assert "API calls left <b>13,000 calls</b>" in page
    assert not re.search(r"(src|href)=\"https?:", page), "an external asset"
