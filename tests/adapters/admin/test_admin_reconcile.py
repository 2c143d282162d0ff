"""Reconciliation through the admin API and the status page's form, with a hand-written runner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.adapters.admin.conftest import AUTH, TOKEN, Harness, Make


async def _wait_finished(h: Harness, run_id: int) -> dict[str, Any]:
    """Poll the run until the background execution closed it."""
    for _ in range(200):
        body: dict[str, Any] = await (
            await h.client.get(f"/api/reconciliations/{run_id}", headers=AUTH)
        ).json()
        if body["state"] != "running":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never finished")


async def test_start_answers_202_and_the_run_finishes_in_the_background(make: Make) -> None:
    """POST validates the options, answers the run id; GET shows the finished run and its drift counts."""
    h: Harness = await make()
    body = {"links": ["l1"], "since": "2026-11-01", "until": "2026-12-01T00:00:00+00:00", "dry_run": False}
    response = await h.client.post("/api/reconciliations", json=body, headers=AUTH)
    assert response.status == 202
    run_id = (await response.json())["id"]
    assert h.runner is not None
    [options] = h.runner.started
    assert options.links == ("l1",) and options.requested_by == "admin-api"
    assert options.since is not None and options.since.tzinfo is not None
    run = await _wait_finished(h, run_id)
    assert run["state"] == "finished" and run["scope"] == {"links": ["l1"], "bookings": []}
    assert run["drift"] == {"found": 1, "repaired": 1, "by_kind": {"missing_in_salesforce": 1}}
    assert h.runner.finished == [run_id]


async def test_a_run_by_change_time_is_passed_on(make: Make) -> None:
    """POST with changed_since/changed_until hands the runner a change window (zone-aware) and no other
    filter."""
    h: Harness = await make()
    body = {"changed_since": "2026-11-01T10:00:00Z", "changed_until": "2026-11-02", "dry_run": True}
    response = await h.client.post("/api/reconciliations", json=body, headers=AUTH)
    assert response.status == 202
    assert h.runner is not None
    [options] = h.runner.started
    assert options.changed_since == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert options.changed_until == datetime(2026, 11, 2, tzinfo=UTC)
    assert options.links == () and options.since is None and options.dry_run
    await _wait_finished(h, (await response.json())["id"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"links": "l1"}, "links must be a list"),
        ({"since": "yesterday"}, "not an ISO date"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "since must be before until"),
        ({"dry_run": "no"}, "dry_run must be true or false"),
        ({"link": ["l1"]}, "unknown keys: link"),
        ({"changed_until": "2026-01-01"}, "changed_until needs changed_since"),
        ({"changed_since": "2026-02-01", "changed_until": "2026-01-01"}, "changed_since must be before"),
        ({"changed_since": "2026-02-01", "links": ["l1"]}, "cannot be combined"),
        ({"changed_since": 3}, "changed_since must be an ISO date"),
        ([], "JSON object"),
    ],
)
async def test_start_refuses_invalid_options(make: Make, body: Any, reason: str) -> None:
    """A bad body is 400 with a reason, and no run is started."""
    h: Harness = await make()
    response = await h.client.post("/api/reconciliations", json=body, headers=AUTH)
    assert response.status == 400
    assert reason in (await response.json())["error"]
    assert h.runner is not None and h.runner.started == []


async def test_without_a_runner_reconciliation_is_503(make: Make) -> None:
    """A daemon without a reconciler answers 503 with a clear message."""
    h: Harness = await make(with_runner=False)
    response = await h.client.post("/api/reconciliations", json={}, headers=AUTH)
    assert response.status == 503
    assert "not available" in (await response.json())["error"]


async def test_a_second_run_while_one_executes_is_409(make: Make) -> None:
    """One run at a time: a second request while the first executes is refused."""
    h: Harness = await make(block=True)
    first = await h.client.post("/api/reconciliations", json={"dry_run": True}, headers=AUTH)
    assert first.status == 202
    second = await h.client.post("/api/reconciliations", json={"dry_run": True}, headers=AUTH)
    assert second.status == 409
    assert h.runner is not None
    h.runner.release.set()
    run = await _wait_finished(h, (await first.json())["id"])
    assert run["dry_run"] is True and run["drift"]["repaired"] == 0


async def test_stopping_the_app_cancels_a_run_in_progress(make: Make) -> None:
    """The admin app tracks its run tasks and cancels them when it shuts down."""
    h: Harness = await make(block=True)
    response = await h.client.post("/api/reconciliations", json={}, headers=AUTH)
    run_id = (await response.json())["id"]
    await h.client.close()
    assert h.runner is not None and h.runner.cancelled == [run_id] and h.runner.finished == []


async def test_unknown_or_malformed_run_ids(make: Make) -> None:
    """GET of a run that does not exist is 404; a non-integer id is 400."""
    h: Harness = await make()
    assert (await h.client.get("/api/reconciliations/999", headers=AUTH)).status == 404
    assert (await h.client.get("/api/reconciliations/abc", headers=AUTH)).status == 400


async def test_status_page_renders_read_only_without_a_token(make: Make) -> None:
    """`/` shows components, lags, failures (ids and codes, no free text) and runs without a token."""
    h: Harness = await make()
    response = await h.client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    for text in ("Components", "ingest", "Replication", "4096", "Recent failures", h.filled.failed):
        assert text in page
    assert "FIELD_INTEGRITY_EXCEPTION" in page and "WhoId is not valid" not in page
    assert f"<td>{h.filled.run_id}</td>" in page
    assert 'name="token"' in page


async def test_page_form_needs_the_token_then_starts_a_run(make: Make) -> None:
    """The form's token field is checked: a wrong one is 401 and starts nothing; the right one starts one."""
    h: Harness = await make()
    form = {"token": "guess", "links": "l1, l2", "since": "", "until": "", "dry_run": "1"}
    assert (await h.client.post("/ui/reconciliations", data=form)).status == 401
    assert h.runner is not None and h.runner.started == []
    form["token"] = TOKEN
    response = await h.client.post("/ui/reconciliations", data=form, allow_redirects=False)
    assert response.status == 303 and "started" in response.headers["Location"]
    [options] = h.runner.started
    assert options.links == ("l1", "l2") and options.dry_run and options.requested_by == "admin-page"
    page = await (await h.client.get(response.headers["Location"])).text()
    assert "reconciliation run" in page and "started" in page
