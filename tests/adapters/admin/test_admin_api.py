"""The admin API over real HTTP: token auth, readiness from real pings, status, retry."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.admin import DaemonProbe
from bridge.devtools.localpg import free_port
from tests.adapters.admin.conftest import AUTH, TOKEN, Harness, Make


async def test_healthz_and_metrics_need_no_token(make: Make) -> None:
    """Liveness and Prometheus text answer without a token; the gauges carry the daemon's readings."""
    h: Harness = await make()
    assert (await h.client.get("/healthz")).status == 200
    response = await h.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert "mogli_bridge_replication_lag_bytes 4096.0" in text
    assert "mogli_bridge_replication_lag_seconds 10.0" in text
    assert "mogli_bridge_salesforce_api_remaining 13800.0" in text
    assert "mogli_bridge_salesforce_api_calls_total 42.0" in text
    assert 'mogli_bridge_ledger_records{entity="activities",state="failed"} 1.0' in text
    assert 'mogli_bridge_ledger_records{entity="activities",state="pending"} 1.0' in text
    assert "mogli_bridge_reconciliation_drift_found 2.0" in text
    assert "mogli_bridge_reconciliation_drift_repaired 1.0" in text
    assert 'mogli_bridge_dependency_up{dependency="scheduler"} 1.0' in text
    assert 'mogli_bridge_component_up{component="push"} 1.0' in text


@pytest.mark.parametrize("path", ["/api/status", "/api/reconciliations/1"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_protected_routes_refuse_a_missing_or_wrong_token(
    make: Make, path: str, headers: dict[str, str]
) -> None:
    """Every protected GET answers 401 without the right bearer token."""
    h: Harness = await make()
    assert (await h.client.get(path, headers=headers)).status == 401


async def test_without_a_configured_token_everything_protected_is_401(make: Make) -> None:
    """An empty admin.token matches no header, not even an empty bearer."""
    h: Harness = await make(token="")
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
        assert (await h.client.get("/api/status", headers=headers)).status == 401
    assert (await h.client.post("/api/retry", json={"all_failed": True}, headers=AUTH)).status == 401
    assert (await h.client.get("/healthz")).status == 200


async def test_readyz_is_200_when_everything_answers(make: Make) -> None:
    """Components running, the scheduler, ledger and Salesforce answering their pings: ready."""
    h: Harness = await make()
    response = await h.client.get("/readyz", headers=AUTH)
    body = await response.json()
    assert response.status == 200, body
    assert body["ready"] is True
    assert body["checks"] == {
        "scheduler": {"ok": True, "error": None},
        "ledger": {"ok": True, "error": None},
        "salesforce": {"ok": True, "error": None},
    }


async def test_readyz_is_503_when_the_scheduling_database_does_not_answer(make: Make) -> None:
    """A real failed connection to the scheduling database makes the daemon not ready, with the reason."""
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/scheduler"
    h: Harness = await make(scheduler_dsn=dead)
    response = await h.client.get("/readyz", headers=AUTH)
    body = await response.json()
    assert response.status == 503
    assert body["checks"]["scheduler"]["ok"] is False and body["checks"]["scheduler"]["error"]
    assert body["checks"]["ledger"]["ok"] is True


async def test_readyz_is_503_for_a_failed_component_or_a_lost_stream(make: Make) -> None:
    """A component that is not running, or a disconnected replication stream, makes /readyz 503."""
    h: Harness = await make()
    h.states["push"] = "failed"
    assert (await h.client.get("/readyz", headers=AUTH)).status == 503
    h.states["push"] = "running"
    h.source.stats.connected = False
    assert (await h.client.get("/readyz", headers=AUTH)).status == 503
    h.source.stats.connected = True
    assert (await h.client.get("/readyz", headers=AUTH)).status == 200


async def test_salesforce_ping_is_cached_and_a_failure_is_reported(make: Make) -> None:
    """Readiness calls /limits once per window, not per request; an outage shows as degraded (the daemon
    still reads and records changes), with the ping's error."""
    h: Harness = await make()
    for _ in range(3):
        assert (await h.client.get("/readyz", headers=AUTH)).status == 200
    assert h.salesforce.limit_calls == 1
    h.salesforce.down = True
    probe = h.server.probe
    assert isinstance(probe, DaemonProbe)
    probe._sf_checked_at -= 61  # the window has passed
    response = await h.client.get("/readyz", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert "salesforce unreachable" in body["checks"]["salesforce"]["error"]
    assert body["health"]["state"] == "degraded"
    assert any("salesforce unreachable" in r for r in body["health"]["reasons"])


async def test_status_reports_lags_budget_and_counts(make: Make) -> None:
    """/api/status: components, replication lag (bytes, seconds), API budget, pending and failed counts."""
    h: Harness = await make()
    response = await h.client.get("/api/status", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["components"] == {"ingest": "running", "push": "running", "admin": "running"}
    assert body["replication"]["lag_bytes"] == 4096 and body["replication"]["lag_seconds"] == 10.0
    assert body["replication"]["applied_lsn"] == 4800 and body["replication"]["wal_status"] == "reserved"
    assert body["salesforce"]["api_used"] == 1200 and body["salesforce"]["api_limit"] == 15000
    assert body["salesforce"]["stream_positions"] == {}
    assert body["ledger"]["pending"] == 1 and body["ledger"]["failed"] == 1
    assert body["reconciliation"] == {"drift_found": 2, "drift_repaired": 1}


async def test_retry_requeues_named_bookings_and_wakes_the_pusher(make: Make) -> None:
    """POST /api/retry with booking ids puts the failed row back to pending and notifies the pusher."""
    h: Harness = await make()
    response = await h.client.post("/api/retry", json={"booking_ids": [h.filled.failed]}, headers=AUTH)
    assert response.status == 200 and await response.json() == {"requeued": 1}
    row = await h.ledger.get_activity(h.filled.failed)
    assert row is not None and row.state == "pending"
    assert h.pusher.notified == 1


async def test_retry_all_failed_and_nothing_to_retry(make: Make) -> None:
    """all_failed moves every failed row; a second call moves none and does not wake the pusher."""
    h: Harness = await make()
    first = await h.client.post("/api/retry", json={"all_failed": True}, headers=AUTH)
    second = await h.client.post("/api/retry", json={"all_failed": True}, headers=AUTH)
    assert await first.json() == {"requeued": 1} and await second.json() == {"requeued": 0}
    assert h.pusher.notified == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"booking_ids": [], "all_failed": False},
        {"booking_ids": ["b"], "all_failed": True},
        {"all_failed": "yes"},
    ],
)
async def test_retry_refuses_an_ambiguous_body(make: Make, body: dict[str, Any]) -> None:
    """Exactly one of booking_ids or all_failed=true; anything else is 400 and changes nothing."""
    h: Harness = await make()
    response = await h.client.post("/api/retry", json=body, headers=AUTH)
    assert response.status == 400
    row = await h.ledger.get_activity(h.filled.failed)
    assert row is not None and row.state == "failed"


async def test_status_survives_an_unreadable_slot_and_unknown_budget(make: Make) -> None:
    """A slot query that fails and a client that has not seen a usage reading yet give nulls, not errors."""
    h: Harness = await make()
    probe = h.server.probe
    assert isinstance(probe, DaemonProbe)

    def broken_slot() -> None:
        raise ConnectionError("scheduler gone")

    probe._read_slot = broken_slot
    h.salesforce.usage = None
    body = await (await h.client.get("/api/status", headers=AUTH)).json()
    assert body["replication"]["lag_bytes"] is None and body["replication"]["slot_exists"] is False
    assert body["salesforce"]["api_used"] is None and body["salesforce"]["api_limit"] is None
    text = await (await h.client.get("/metrics")).text()
    assert "mogli_bridge_replication_lag_bytes 0.0" in text
    assert "mogli_bridge_salesforce_api_remaining" in text  # declared, left unset until a reading exists
