"""The health verdict (ready, degraded, not ready) and its reasons, from readings alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.admin.health import Thresholds, assess
from bridge.metrics import CheckResult, Readings, ReplicationReading

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
CHECKS = (CheckResult("scheduler", True), CheckResult("ledger", True), CheckResult("salesforce", True))
SF_503 = CheckResult("salesforce", False, "TransientError: 503 SERVER_UNAVAILABLE")


def readings(**changes: Any) -> Readings:
    """Readings of a healthy daemon, with `changes` applied."""
    healthy = Readings(
        at=AT,
        components={"ingest": "running", "push": "running", "admin": "running"},
        checks=CHECKS,
        replication=ReplicationReading(
            slot="s",
            connected=True,
            slot_exists=True,
            slot_active=True,
            wal_status="reserved",
            lag_bytes=0,
            retained_bytes=0,
            lag_seconds=0.0,
            applied_lsn=1,
            acked_lsn=1,
            last_commit_time=AT,
            queue_depth=0,
            reconnects=0,
        ),
        api_used=100,
        api_limit=15000,
        api_calls=3,
        pushed=5,
        failed=0,
        waiting_reason=None,
        ledger_counts={"activities.synced": 5, "activities.pending": 2},
        drift_found=0,
        drift_repaired=0,
        streaming={"delivered_events": "ok: 9000 of 10000 left", "gap_reconciliation": "idle"},
        stream_subscribed=True,
    )
    return replace(healthy, **changes)


def _replication(**changes: Any) -> ReplicationReading:
    return replace(readings().replication, **changes)


def test_a_healthy_daemon_is_ready_without_reasons() -> None:
    """Everything running and answering, nothing piling up: ready, no reason."""
    health = assess(readings())
    assert (health.state, health.reasons, health.serving) == ("ready", (), True)


DEGRADED = [
    (
        {"checks": (*CHECKS[:2], SF_503)},
        "salesforce is failing: TransientError: 503 SERVER_UNAVAILABLE",
    ),
    ({"waiting_reason": "salesforce_unavailable"}, "Salesforce failed a write"),
    ({"waiting_reason": "api_limit"}, "API budget is used up to its reserve"),
    ({"waiting_reason": "ledger_unavailable"}, "waits for the ledger"),
    ({"api_used": 13000}, "API budget nearly gone: 2000 of 15000 calls left"),
    (
        {"ledger_counts": {"links.pending": 400, "activities.pending": 600}},
        "1000 changes waiting to be pushed",
    ),
    ({"stream_subscribed": False}, "change stream is not subscribed"),
    ({"streaming": {"delivered_events": "low: 900 of 10000 left"}}, "delivered-event allocation low: 900"),
    (
        {"streaming": {"delivered_events": "exhausted since 2026-12-03T00:00:00+00:00 (0 of 10000 left)"}},
        "delivered-event allocation exhausted",
    ),
    (
        {"streaming": {"gap_reconciliation": "run 4 paused: api budget, retry in 30 s"}},
        "gap reconciliation run 4 paused",
    ),
]


@pytest.mark.parametrize(("changes", "reason"), DEGRADED, ids=[r for _, r in DEGRADED])
def test_each_warning_makes_the_daemon_degraded_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    """One warning at a time: degraded (still serving), and the reason names it."""
    health = assess(readings(**changes))
    assert health.state == "degraded" and health.serving
    assert len(health.reasons) == 1 and reason in health.reasons[0], health.reasons


NOT_READY = [
    ({"components": {"ingest": "running", "push": "failed"}}, "component push is failed"),
    ({"components": {}}, "no component has started"),
    ({"replication": _replication(connected=False)}, "replication stream"),
    (
        {"checks": (CheckResult("scheduler", False, "OperationalError: connection refused"), *CHECKS[1:])},
        "scheduler does not answer: OperationalError: connection refused",
    ),
    (
        {"checks": (CHECKS[0], CheckResult("ledger", False, "LedgerUnavailable: x"), CHECKS[2])},
        "ledger does not",
    ),
]


@pytest.mark.parametrize(("changes", "reason"), NOT_READY, ids=[r for _, r in NOT_READY])
def test_what_stops_the_work_makes_the_daemon_not_ready(changes: dict[str, Any], reason: str) -> None:
    """A component down, the stream cut, the scheduler or ledger silent: not ready (503), with the reason."""
    health = assess(readings(**changes))
    assert health.state == "not_ready" and not health.serving
    assert any(reason in r for r in health.reasons), health.reasons


def test_not_ready_outranks_degraded_and_only_blocking_reasons_are_given() -> None:
    """With the stream cut and Salesforce failing, the verdict is not ready, for the blocking reason."""
    health = assess(readings(replication=_replication(connected=False), waiting_reason="api_limit"))
    assert health.state == "not_ready" and len(health.reasons) == 1


def test_the_pusher_waiting_on_salesforce_is_one_reason_when_the_check_already_says_it() -> None:
    """The probe folds the pusher's Salesforce wait into the salesforce check: one reason, not two."""
    failing = (*CHECKS[:2], CheckResult("salesforce", False, "ping ok, but the pusher waits"))
    health = assess(readings(checks=failing, waiting_reason="salesforce_unavailable"))
    assert health.reasons == ("salesforce is failing: ping ok, but the pusher waits",)


def test_thresholds_are_the_operators() -> None:
    """A lower pending threshold and a higher API fraction turn the same readings degraded."""
    strict = Thresholds(pending=2, api_remaining_fraction=0.999)
    assert assess(readings()).state == "ready"
    reasons = assess(readings(), strict).reasons
    assert len(reasons) == 2 and "2 changes waiting" in reasons[1] and "14900 of 15000" in reasons[0]


def test_several_warnings_are_all_given() -> None:
    """Every warning found is a reason, in a stable order."""
    health = assess(readings(waiting_reason="ledger_unavailable", stream_subscribed=False, api_used=15000))
    assert health.state == "degraded" and len(health.reasons) == 3
    assert health.as_json() == {"state": "degraded", "reasons": list(health.reasons)}
