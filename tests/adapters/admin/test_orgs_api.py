"""The admin API per org, against a real SQLite ledger holding the default org and a second org: the org
rows, one org's detail and status, reconciliations on each org's runner, retry of one org, the per-org
gauges and the status page's org selector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.admin import AdminServer
from bridge.config import AdminSettings
from bridge.metrics import BridgeMetrics
from bridge.records.ledger import DEFAULT_ORG
from tests.adapters.admin.conftest import AUTH, TOKEN, Harness, Make
from tests.adapters.admin.fakes import FakeOptions, FakeRunner
from tests.adapters.admin.orgs_world import CHANNEL, ORG_CODE, OtherOrg, add_org


@dataclass
class OrgWorld:
    """A harness whose ledger also holds `org`, an admin app with per-org runners, and those runners."""

    h: Harness
    org: OtherOrg
    client: TestClient[Any, Any]
    runners: dict[str | None, FakeRunner]  # ledger org (None: default) -> its runtime's runner
    asked: list[str | None]


@pytest.fixture
async def world(make: Make) -> AsyncIterator[OrgWorld]:
    """The filled default org plus a second org; the org runner knows both orgs' runtimes."""
    h: Harness = await make()
    org = add_org(str(h.ledger.engine.url))
    runners: dict[str | None, FakeRunner] = {
        None: FakeRunner(h.ledger.scoped(None)),
        org.org_id: FakeRunner(h.ledger.scoped(org.org_id)),
    }
    asked: list[str | None] = []

    def org_runner(org_id: str | None) -> FakeRunner | None:
        asked.append(org_id)
        return runners.get(org_id)

    server: AdminServer[FakeOptions] = AdminServer(
        AdminSettings(token=TOKEN),
        probe=h.server.probe,
        ledger=h.ledger,
        metrics=BridgeMetrics(),
        notify_pusher=h.pusher.notify,
        make_options=FakeOptions,
        org_runner=org_runner,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(server.app()))
    await client.start_server()
    yield OrgWorld(h, org, client, runners, asked)
    await client.close()


async def test_api_orgs_lists_every_org_with_its_counts_budget_and_positions(world: OrgWorld) -> None:
    """GET /api/orgs: the default org first as 'default', then the other org with its own pending and failed
    counts (its link and two bookings pending, one booking failed), API budget and whole positions."""
    response = await world.client.get("/api/orgs", headers=AUTH)
    assert response.status == 200
    rows = await response.json()
    assert [r["org_id"] for r in rows] == [DEFAULT_ORG, world.org.org_id]
    default, other = rows
    assert (default["pending"], default["failed"]) == (
        1,
        1,
    )  # the filled ledger's pending and failed bookings
    assert other == {
        "org_id": world.org.org_id,
        "name": "Acme Clinics",
        "state": "active",
        "reason": None,
        "pending": 3,
        "failed": 1,
        "api_used": 120,
        "api_limit": 15000,
        "positions": {CHANNEL: world.org.position},
        "worker": None,
    }


async def test_api_orgs_needs_the_token(world: OrgWorld) -> None:
    """GET /api/orgs without the admin token is 401."""
    assert (await world.client.get("/api/orgs")).status == 401


async def test_api_org_detail_holds_only_that_orgs_failures_and_404_for_an_unknown_org(
    world: OrgWorld,
) -> None:
    """GET /api/orgs/{id}: the org's row, counts and recent failures (its own failed booking, not the default
    org's); an unknown id is 404 naming it."""
    response = await world.client.get(f"/api/orgs/{world.org.org_id}", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["org_id"] == world.org.org_id
    assert body["counts"]["activities.failed"] == 1
    assert [(f["key"], f["error_code"]) for f in body["recent_failures"]] == [(world.org.failed, ORG_CODE)]
    default = await (await world.client.get(f"/api/orgs/{DEFAULT_ORG}", headers=AUTH)).json()
    assert [f["key"] for f in default["recent_failures"]] == [world.h.filled.failed]
    missing = await world.client.get("/api/orgs/no-such-org", headers=AUTH)
    assert missing.status == 404
    assert "no-such-org" in (await missing.json())["error"]


async def test_api_status_of_one_org_has_its_counts_budget_and_positions(world: OrgWorld) -> None:
    """GET /api/status?org=ID: the ledger section and API budget are that org's; an unknown org is 404."""
    body = await (await world.client.get(f"/api/status?org={world.org.org_id}", headers=AUTH)).json()
    assert body["org"]["org_id"] == world.org.org_id
    assert (body["ledger"]["pending"], body["ledger"]["failed"]) == (3, 1)
    assert (body["salesforce"]["api_used"], body["salesforce"]["api_limit"]) == (120, 15000)
    assert body["salesforce"]["stream_positions"] == {CHANNEL: world.org.position}
    whole = await (await world.client.get("/api/status", headers=AUTH)).json()
    assert "org" not in whole
    assert (await world.client.get("/api/status?org=nope", headers=AUTH)).status == 404


async def test_reconciliations_with_orgs_run_one_run_per_org_on_its_runner(world: OrgWorld) -> None:
    """POST /api/reconciliations with two orgs: each org's runner opens its run; the answer lists both ids."""
    body = {"orgs": [world.org.org_id, DEFAULT_ORG], "dry_run": True}
    response = await world.client.post("/api/reconciliations", json=body, headers=AUTH)
    assert response.status == 202
    answer = await response.json()
    assert [r["org"] for r in answer["runs"]] == [world.org.org_id, DEFAULT_ORG]
    assert answer["ids"] == [r["id"] for r in answer["runs"]] and answer["id"] == answer["ids"][0]
    assert world.asked == [world.org.org_id, None]
    assert len(world.runners[world.org.org_id].started) == 1
    assert len(world.runners[None].started) == 1


async def test_reconciliations_name_an_unknown_org_with_400(world: OrgWorld) -> None:
    """An unknown org in `orgs` is 400 naming it, and no run starts."""
    response = await world.client.post("/api/reconciliations", json={"orgs": ["ghost-org"]}, headers=AUTH)
    assert response.status == 400
    assert "ghost-org" in (await response.json())["error"]
    assert not any(r.started for r in world.runners.values())


async def test_reconciliation_of_an_org_without_runtime_is_409_with_its_state(world: OrgWorld) -> None:
    """An org whose runtime is gone (paused) is 409 with its state and reason, and nothing starts."""
    paused = add_org(
        str(world.h.ledger.engine.url), name="Paused Ltd", state="paused", reason="integration user inactive"
    )
    response = await world.client.post("/api/reconciliations", json={"orgs": [paused.org_id]}, headers=AUTH)
    assert response.status == 409
    body = await response.json()
    assert (body["org"], body["state"], body["reason"]) == (
        paused.org_id,
        "paused",
        "integration user inactive",
    )
    assert not any(r.started for r in world.runners.values())


async def test_without_an_org_runner_only_the_default_org_reconciles(make: Make) -> None:
    """Tenancy off (no org_runner): `orgs: ["default"]` runs on the daemon's runner; another org is 409."""
    h: Harness = await make()
    other = add_org(str(h.ledger.engine.url))
    response = await h.client.post("/api/reconciliations", json={"orgs": [DEFAULT_ORG]}, headers=AUTH)
    assert response.status == 202
    assert h.runner is not None and len(h.runner.started) == 1
    refused = await h.client.post("/api/reconciliations", json={"orgs": [other.org_id]}, headers=AUTH)
    assert refused.status == 409


async def test_retry_with_org_requeues_only_that_orgs_failures(world: OrgWorld) -> None:
    """POST /api/retry {all_failed, org}: the org's failed booking goes back to pending, the default org's
    failed booking stays failed; an unknown org is 400."""
    body = {"all_failed": True, "org": world.org.org_id}
    response = await world.client.post("/api/retry", json=body, headers=AUTH)
    assert response.status == 200
    assert (await response.json())["requeued"] == 1
    assert (await world.h.ledger.get_activity(world.org.failed)).state == "pending"  # type: ignore[union-attr]
    assert (await world.h.ledger.get_activity(world.h.filled.failed)).state == "failed"  # type: ignore[union-attr]
    unknown = await world.client.post("/api/retry", json={"all_failed": True, "org": "ghost"}, headers=AUTH)
    assert unknown.status == 400


async def test_metrics_have_per_org_gauges_read_from_the_ledger(world: OrgWorld) -> None:
    """/metrics: org_state, org_pending, org_failed and the API gauges for each org, labelled by org id."""
    text = await (await world.client.get("/metrics")).text()
    org = world.org.org_id
    assert f'mogli_bridge_org_state{{org="{org}",state="active"}} 1.0' in text
    assert f'mogli_bridge_org_state{{org="{org}",state="paused"}} 0.0' in text
    assert f'mogli_bridge_org_pending{{org="{org}"}} 3.0' in text
    assert f'mogli_bridge_org_failed{{org="{org}"}} 1.0' in text
    assert f'mogli_bridge_org_api_used{{org="{org}"}} 120.0' in text
    assert f'mogli_bridge_org_api_limit{{org="{org}"}} 15000.0' in text
    assert 'mogli_bridge_org_pending{org="default"} 1.0' in text


async def test_status_page_has_an_org_selector_and_shows_one_orgs_failures(world: OrgWorld) -> None:
    """The page lists both orgs with a selector; `?org=ID` shows that org's failures only; unknown is 404."""
    page = await (await world.client.get("/")).text()
    assert 'name="org"' in page and world.org.org_id in page and "Acme Clinics" in page
    one = await (await world.client.get(f"/?org={world.org.org_id}")).text()
    assert world.org.failed in one and world.h.filled.failed not in one
    assert (await world.client.get("/?org=ghost")).status == 404


async def test_status_page_of_the_default_org_alone_has_no_org_selector(make: Make) -> None:
    """A ledger of the default org alone (tenancy off) shows no org selector or orgs table."""
    h: Harness = await make()
    page = await (await h.client.get("/")).text()
    assert 'name="org"' not in page and "<h2>Orgs</h2>" not in page


async def test_the_page_form_of_one_org_reconciles_that_org(world: OrgWorld) -> None:
    """On `?org=ID` the form carries the org; posting it opens the run on that org's runner and goes back
    to that org's page."""
    page = await (await world.client.get(f"/?org={world.org.org_id}")).text()
    assert f'<input type="hidden" name="org" value="{world.org.org_id}">' in page
    form = {"token": TOKEN, "org": world.org.org_id, "dry_run": "1"}
    response = await world.client.post("/ui/reconciliations", data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith(f"/?org={world.org.org_id}&notice=reconciliation+run+")
    assert len(world.runners[world.org.org_id].started) == 1 and not world.runners[None].started
