"""`Ledger.scoped(org)`: one org's view of the shared ledger (claims, outcomes, reads, checkpoints,
reconciliation, inbound), next to the unscoped ledger that still sees every org."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, select, update
from structlog.testing import capture_logs

from bridge.ledger import outbox, upgrade_to_head
from bridge.ledger.inbound import MOGLI_EVENT_DELETED
from bridge.ledger.repository import Ledger
from bridge.ledger.tables import CHECKPOINTS, JOURNAL, LINKS
from bridge.records.inbound import ActivityChange, InboundBatch, LinkChange
from bridge.records.ledger import DEFAULT_ORG, Direction, DriftItem, JournalEntry, OrgState
from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState
from bridge.records.source import ChangeOp
from tests.adapters.ledger.factory import FUTURE, NOW, PAST, booking, change
from tests.adapters.ledger.tenants import ORG_A, ORG_B, ORGS_IDS, SALESFORCE_USER, SUFFIX, three_orgs

CHANNEL = "/data/EventChangeEvent"


def _streams(connection: Connection) -> dict[str, str]:
    rows = connection.execute(select(CHECKPOINTS.c.stream, CHECKPOINTS.c.position))
    return {str(s): str(p) for s, p in rows}


def _journal_orgs(connection: Connection, key: str) -> list[str | None]:
    query = select(JOURNAL.c.org_id).where(JOURNAL.c.entity_key == key).order_by(JOURNAL.c.id)
    return [org for (org,) in connection.execute(query)]


async def _sync_links(repo: Ledger) -> None:
    """Record every org's link as written, each through its own org's view."""
    for org in ORGS_IDS:
        view = repo.scoped(org)
        [work] = await view.claim_link_work(NOW, 10)
        outcome = LinkOutcome(
            work.link.link_id, work.version, OutcomeState.SYNCED, mogli_event_id=f"a0B{org}"
        )
        await view.record_link_outcomes([outcome], NOW)


async def test_org_names_the_scope(repo: Ledger) -> None:
    """`org` is None unscoped, 'default' for the default org (asked as None or 'default'), else the org id."""
    assert repo.org is None
    assert repo.scoped(None).org == DEFAULT_ORG
    assert repo.scoped(DEFAULT_ORG).org == DEFAULT_ORG
    assert repo.scoped(ORG_A).org == ORG_A


async def test_each_view_claims_only_its_org(repo: Ledger) -> None:
    """Each org's view claims its own link and booking, with org_id on link, owner and booking; the
    unscoped ledger claims all three."""
    await three_orgs(repo)
    assert {w.link.link_id for w in await repo.claim_link_work(NOW, 10)} == {"l-0", "l-a", "l-b"}
    for org, s in SUFFIX.items():
        [work] = await repo.scoped(org).claim_link_work(NOW, 10)
        assert work.link.link_id == f"l-{s}" and work.link.org_id == org
        assert work.owner is not None and work.owner.org_id == org
    await _sync_links(repo)
    assert {w.booking.booking_id for w in await repo.claim_activity_work(NOW, 10)} == {"b-0", "b-a", "b-b"}
    for org, s in SUFFIX.items():
        [work] = await repo.scoped(org).claim_activity_work(NOW, 10)
        assert work.booking.booking_id == f"b-{s}" and work.booking.org_id == org
        assert work.link is not None and work.link.org_id == org
        assert work.owner is not None and work.owner.org_id == org


async def test_outcome_through_the_wrong_scope_changes_nothing(repo: Ledger) -> None:
    """An outcome for org A's link recorded through org B's view (or the default org's) leaves the row
    pending, journals nothing and logs an error naming the id; through org A's view it is recorded and
    journaled under org A."""
    await three_orgs(repo)
    [work] = await repo.scoped(ORG_A).claim_link_work(NOW, 10)
    outcome = LinkOutcome("l-a", work.version, OutcomeState.SYNCED, mogli_event_id="a0BA")
    for wrong in (ORG_B, None):
        with capture_logs() as logs:
            await repo.scoped(wrong).record_link_outcomes([outcome], NOW)
        [error] = [e for e in logs if e["event"] == "ledger.outcome_outside_scope"]
        assert error["log_level"] == "error" and error["ids"] == ["l-a"] and error["orgs"] == [ORG_A]
        link = await repo.get_link("l-a")
        assert link is not None and link.state == "pending" and link.mogli_event_id is None
    assert all(e.action.startswith("source.") for e in await repo.list_journal(link_id="l-a"))
    await repo.scoped(ORG_A).record_link_outcomes([outcome], NOW)
    link = await repo.get_link("l-a")
    assert link is not None and link.state == "synced" and link.mogli_event_id == "a0BA"
    upserted = [
        e for e in await repo.list_journal(link_id="l-a") if e.action == "salesforce.mogli_event_upserted"
    ]
    assert [e.org_id for e in upserted] == [ORG_A]


async def test_activity_outcome_through_the_wrong_scope_changes_nothing(repo: Ledger) -> None:
    """An Event outcome for org B's booking recorded through org A's view changes nothing; org A's own
    outcome in the same batch is recorded, and only it reaches the outcome observers."""
    await three_orgs(repo)
    await _sync_links(repo)
    [work_a] = await repo.scoped(ORG_A).claim_activity_work(NOW, 10)
    [work_b] = await repo.scoped(ORG_B).claim_activity_work(NOW, 10)
    outcomes = [
        ActivityOutcome("b-a", work_a.version, OutcomeState.SYNCED, activity_id="00UA"),
        ActivityOutcome("b-b", work_b.version, OutcomeState.SYNCED, activity_id="00UB"),
    ]
    observed: list[int] = []
    repo.observe_outcomes(lambda _entity, states: observed.append(len(states)))
    with capture_logs() as logs:
        await repo.scoped(ORG_A).record_activity_outcomes(outcomes, NOW)
    assert observed == [1], "observers hear of the recorded outcome only"
    assert [e["ids"] for e in logs if e["event"] == "ledger.outcome_outside_scope"] == [["b-b"]]
    mine, theirs = await repo.get_activity("b-a"), await repo.get_activity("b-b")
    assert mine is not None and mine.state == "synced" and mine.activity_id == "00UA"
    assert theirs is not None and theirs.state == "pending" and theirs.activity_id is None
    assert repo.call_read(_journal_orgs, "b-b") == [ORG_B]  # its source entry only, no outcome
    assert repo.call_read(_journal_orgs, "b-a")[-1] == ORG_A


async def test_reads_are_scoped(repo: Ledger) -> None:
    """counts, list_links, list_activities, get_link/get_activity, mirror_state, list_failures and
    list_journal of a view show only its org's rows."""
    await three_orgs(repo)
    [work] = await repo.scoped(ORG_B).claim_link_work(NOW, 10)
    failed = LinkOutcome("l-b", work.version, OutcomeState.FAILED, error="no", error_code="X")
    await repo.scoped(ORG_B).record_link_outcomes([failed], NOW)
    assert (await repo.counts())["links.pending"] == 2
    for org, s in SUFFIX.items():
        view = repo.scoped(org)
        assert [r.link_id for r in await view.list_links()] == [f"l-{s}"]
        assert [r.booking_id for r in await view.list_activities()] == [f"b-{s}"]
        assert list(await view.mirror_state(["b-0", "b-a", "b-b"])) == [f"b-{s}"]
        assert await view.get_link(f"l-{s}") is not None
        assert {await view.get_link(f"l-{o}") for o in "0ab" if o != s} == {None}
        assert {await view.get_activity(f"b-{o}") for o in "0ab" if o != s} == {None}
        assert {e.entity_key for e in await view.list_journal()} == {f"u-{s}", f"l-{s}", f"b-{s}"}
        assert {e.org_id for e in await view.list_journal()} == {org}
    assert (await repo.scoped(ORG_B).counts()) == {"links.failed": 1, "activities.pending": 1}
    assert (await repo.scoped(ORG_A).counts()) == {"links.pending": 1, "activities.pending": 1}
    assert [f.key for f in await repo.scoped(ORG_B).list_failures()] == ["l-b"]
    assert await repo.scoped(ORG_A).list_failures() == []


async def test_requeue_is_scoped(repo: Ledger) -> None:
    """requeue of every failure through one org's view moves only that org's failed rows."""
    await three_orgs(repo)
    for org in (ORG_A, ORG_B):
        [work] = await repo.scoped(org).claim_link_work(NOW, 10)
        failed = LinkOutcome(work.link.link_id, work.version, OutcomeState.FAILED, error="no", error_code="X")
        await repo.scoped(org).record_link_outcomes([failed], NOW)
    assert await repo.scoped(ORG_A).requeue(all_failed=True) == 1
    link_a, link_b = await repo.get_link("l-a"), await repo.get_link("l-b")
    assert link_a is not None and link_a.state == "pending"
    assert link_b is not None and link_b.state == "failed"
    [entry] = [e for e in await repo.list_journal(link_id="l-a") if e.action == "admin.requeue"]
    assert entry.org_id == ORG_A


async def test_checkpoints_per_org(repo: Ledger) -> None:
    """A channel's position is per org: the default org keeps the bare name, org A's is stored as
    'org/<id>/<channel>'; 'source' is one global stream; list_checkpoints shows a view its own positions
    under bare names."""
    await repo.scoped(None).write_checkpoint(CHANNEL, "10")
    await repo.scoped(ORG_A).write_checkpoint(CHANNEL, "20")
    await repo.scoped(ORG_A).write_checkpoint("source", "999")
    assert repo.call_read(_streams) == {CHANNEL: "10", f"org/{ORG_A}/{CHANNEL}": "20", "source": "999"}
    assert await repo.scoped(ORG_A).read_checkpoint(CHANNEL) == "20"
    assert await repo.scoped(None).read_checkpoint(CHANNEL) == "10"
    assert await repo.read_checkpoint(CHANNEL) == "10"
    assert await repo.scoped(ORG_B).read_checkpoint(CHANNEL) is None
    assert await repo.scoped(ORG_B).read_checkpoint("source") == "999"
    assert await repo.scoped(ORG_A).list_checkpoints() == {CHANNEL: "20", "source": "999"}
    assert await repo.scoped(None).list_checkpoints() == {CHANNEL: "10", "source": "999"}
    assert await repo.scoped(ORG_B).list_checkpoints() == {"source": "999"}
    assert len(await repo.list_checkpoints()) == 3


async def test_inbound_position_goes_to_the_org_stream(repo: Ledger) -> None:
    """apply_inbound through org A's view writes org A's position and journals under org A; an Event id
    or Salesforce user of org A is unknown to org B's view."""
    await three_orgs(repo)
    await _sync_links(repo)
    view_a = repo.scoped(ORG_A)
    [work] = await view_a.claim_activity_work(NOW, 10)
    await view_a.record_activity_outcomes(
        [ActivityOutcome("b-a", work.version, OutcomeState.SYNCED, activity_id="00UA")], NOW
    )
    change = ActivityChange("b-a", "salesforce.event_changed", who_id="003A")
    await view_a.apply_inbound(InboundBatch((change,), checkpoint_stream=CHANNEL, checkpoint_position="7"))
    streams = repo.call_read(_streams)
    assert streams[f"org/{ORG_A}/{CHANNEL}"] == "7" and CHANNEL not in streams
    [entry] = [e for e in await repo.list_journal(booking_id="b-a") if e.action == "salesforce.event_changed"]
    assert entry.org_id == ORG_A
    view_b = repo.scoped(ORG_B)
    assert await view_b.find_inbound_activities(["00UA"], ["b-a"]) == []
    assert [a.booking_id for a in await view_a.find_inbound_activities(["00UA"])] == ["b-a"]
    assert await view_b.activities_of_people(["003A"]) == []
    assert await view_b.find_inbound_links(["a0B" + ORG_A], ["l-a"]) == []
    assert [k.link_id for k in await view_a.find_inbound_links([], ["l-a"])] == ["l-a"]
    assert await view_b.user_for_salesforce_id(SALESFORCE_USER[ORG_A]) is None
    assert await view_a.user_for_salesforce_id(SALESFORCE_USER[ORG_A]) == "u-a"
    # An inbound change naming org A's booking through org B's view changes nothing.
    await view_b.apply_inbound(
        InboundBatch((ActivityChange("b-a", "salesforce.event_changed", who_id="003B"),))
    )
    activity = await repo.get_activity("b-a")
    assert activity is not None and activity.who_id == "003A"
    changed = [e for e in await repo.list_journal(booking_id="b-a") if e.action == "salesforce.event_changed"]
    assert len(changed) == 1, "the foreign change is not journaled"
    await view_b.apply_inbound(
        InboundBatch(
            links=(LinkChange("l-a", "salesforce.mogli_event_deleted", state="deleted_in_salesforce"),)
        )
    )
    link = await repo.get_link("l-a")
    assert link is not None and link.state == "synced"
    assert not [
        e for e in await repo.list_journal(link_id="l-a") if e.action == "salesforce.mogli_event_deleted"
    ]


async def test_reconcile_store_reads_per_org(repo: Ledger) -> None:
    """A view's reconcile store reads only its org's activities, links and users; its runs carry its org
    and resumable/unfinished runs, drift and totals are its own."""
    await three_orgs(repo)
    for org, s in SUFFIX.items():
        view = repo.scoped(org)
        assert [b for b, _, _ in await view.activity_ids([], [], None, None)] == [f"b-{s}"]
        assert await view.link_ids() == [f"l-{s}"]
        changed_activities, changed_links = await view.changed_ids(PAST, None)
        assert [b for b, _, _ in changed_activities] == [f"b-{s}"] and changed_links == [f"l-{s}"]
        assert list(await view.links(["l-0", "l-a", "l-b"])) == [f"l-{s}"]
        assert list(await view.activities(["b-0", "b-a", "b-b"])) == [f"b-{s}"]
        assert list(await view.users(["u-0", "u-a", "u-b"])) == [f"u-{s}"]
    view_a, view_b = repo.scoped(ORG_A), repo.scoped(ORG_B)
    run_a = await view_a.start_reconciliation("gaps", {"full": True}, dry_run=False)
    run_b = await view_b.start_reconciliation("gaps", {"full": True}, dry_run=False)
    assert (await repo.get_reconciliation(run_a)).org_id == ORG_A  # type: ignore[union-attr]
    assert await view_b.get_reconciliation(run_a) is None
    assert (await view_a.find_resumable({"full": True}, False)).id == run_a  # type: ignore[union-attr]
    assert [r.id for r in await view_b.unfinished_reconciliations("gaps")] == [run_b]
    assert await repo.scoped(None).unfinished_reconciliations("gaps") == []
    await view_a.record_chunk(run_a, [DriftItem(run_a, "missing_event", "l-a", "b-a", None)], {"done": 1})
    [item] = await repo.list_drift()
    assert item.org_id == ORG_A
    assert await view_b.list_drift() == [] and (await view_b.drift_totals()).found == 0
    assert (await view_a.drift_totals()).found == 1
    assert [r.id for r in await view_a.list_reconciliations()] == [run_a]
    await view_b.finish_reconciliation(run_a, "finished", {})  # another org's run: not closed from here
    assert (await repo.get_reconciliation(run_a)).state == "running"  # type: ignore[union-attr]
    assert (await repo.get_reconciliation(run_a)).summary == {"done": 1}  # type: ignore[union-attr]


async def test_reconcile_repairs_stay_in_their_org(repo: Ledger) -> None:
    """requeue_drifted, mark_deleted and accept_owners through org A's view touch only org A's rows."""
    await three_orgs(repo)
    await _sync_links(repo)
    view_a = repo.scoped(ORG_A)
    run = await view_a.start_reconciliation("admin", {}, dry_run=False)
    queued = await view_a.requeue_drifted(
        booking_ids=["b-a", "b-b"], link_ids=["l-b"], relink_ids=[], run_id=run
    )
    assert queued == 1
    link_b = await repo.get_link("l-b")
    assert link_b is not None and link_b.state == "synced"
    assert await view_a.mark_deleted(["a0B" + ORG_B], run) == 0
    assert await view_a.accept_owners({"b-b": "005X"}, run) == 0
    activity_b = await repo.get_activity("b-b")
    assert activity_b is not None and activity_b.owner_salesforce_id is None
    assert await view_a.mark_deleted(["a0B" + ORG_A], run) == 1
    link_a = await repo.get_link("l-a")
    assert link_a is not None and link_a.state == "deleted_in_salesforce"


async def test_append_journal_takes_the_scope_org(repo: Ledger) -> None:
    """An entry appended through org A's view is org A's unless it names its own org."""
    await repo.scoped(ORG_A).append_journal(
        [
            JournalEntry(NOW, Direction.ADMIN, "link", "x1", "admin.note"),
            JournalEntry(NOW, Direction.ADMIN, "link", "x2", "admin.note", org_id=ORG_B),
        ]
    )
    assert repo.call_read(_journal_orgs, "x1") == [ORG_A]
    assert repo.call_read(_journal_orgs, "x2") == [ORG_B]


async def test_view_shares_the_worker_and_leaves_closing_to_its_ledger(repo: Ledger) -> None:
    """Closing a view leaves the ledger usable; the view reports to the ledger's outcome observers."""
    seen: list[str] = []
    repo.observe_outcomes(lambda entity, states: seen.append(entity))
    view = repo.scoped(ORG_A)
    await view.record_link_outcomes([], NOW)
    await view.close()
    await repo.ping()
    assert seen == ["link"]


async def test_remirror_leaves_out_rows_of_another_org(repo: Ledger) -> None:
    """A re-mirror through org A's view applies org A's scheduler rows and leaves out (and returns) a row
    the ledger holds in org B."""
    await three_orgs(repo)
    moved = FUTURE + timedelta(hours=3)
    changes = [
        change(booking("b-a", "l-a", start=moved), ChangeOp.UPDATE),
        change(booking("b-b", "l-b", start=moved), ChangeOp.UPDATE),
    ]
    view_a = repo.scoped(ORG_A)
    left_out = await view_a.remirror(changes, await view_a.journal_mark())
    assert left_out == {("activity", "b-b")}
    mine, theirs = await repo.get_activity("b-a"), await repo.get_activity("b-b")
    assert mine is not None and mine.start_at == moved
    assert theirs is not None and theirs.start_at == FUTURE


def _plans(ledger: Ledger, claim: Any) -> list[str]:
    """SQLite's query plan of every SELECT the claim function `claim` sends through `ledger`."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(ledger.engine, "before_cursor_execute", record)
    try:
        ledger.call_read(claim, NOW, 10)
    finally:
        event.remove(ledger.engine, "before_cursor_execute", record)
    with ledger.engine.connect() as connection:
        return [
            " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in sent
        ]


def test_scoped_claims_use_the_org_indexes(tmp_path: Path) -> None:
    """On SQLite a scoped claim searches links by (org_id, state) and activities by (org_id, state,
    updated_at, booking_id), for a customer org and for the default org (org_id IS NULL)."""
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    upgrade_to_head(url)
    ledger = Ledger.from_url(url, clock=lambda: NOW)
    try:
        for org in (ORG_A, None):
            view = ledger.scoped(org)
            [links] = _plans(view, outbox.claim_links)
            assert "ix_links_org_id_state" in links, links
            [activities] = _plans(view, outbox.claim_activities)
            assert "ix_activities_org_id_state_updated_at" in activities, activities
    finally:
        ledger.dispose()


def _mogli_events_deleted(connection: Connection) -> None:
    """Org A's and org B's links as the inbound path leaves them when their Mogli Event is deleted."""
    values = {"state": "deleted_in_salesforce", "error_code": MOGLI_EVENT_DELETED}
    connection.execute(update(LINKS).where(LINKS.c.link_id.in_(["l-a", "l-b"])).values(values))


async def test_recreate_deleted_links_is_scoped(repo: Ledger) -> None:
    """recreate_deleted_links through org A's view queues org A's deleted link only."""
    await three_orgs(repo)
    repo.call(_mogli_events_deleted)
    assert await repo.scoped(ORG_A).recreate_deleted_links() == ["l-a"]
    link_a, link_b = await repo.get_link("l-a"), await repo.get_link("l-b")
    assert link_a is not None and link_a.state == "pending"
    assert link_b is not None and link_b.state == "deleted_in_salesforce"
    assert await repo.scoped(ORG_B).recreate_deleted_links() == ["l-b"]


async def test_has_deleted_links_is_scoped_and_counts_links_still_waiting(repo: Ledger) -> None:
    """The inbound sweep's probe: org A's view sees org A's deleted link only; once it is recreated (a new
    booking waited for it) org A has none left while org B still has its own; the default org has none."""
    await three_orgs(repo)
    assert not await repo.scoped(ORG_A).has_deleted_links()
    repo.call(_mogli_events_deleted)
    assert await repo.scoped(ORG_A).has_deleted_links()
    assert not await repo.scoped(None).has_deleted_links()
    assert await repo.scoped(ORG_A).recreate_deleted_links() == ["l-a"]
    assert not await repo.scoped(ORG_A).has_deleted_links()
    assert await repo.scoped(ORG_B).has_deleted_links()


async def test_a_disconnected_org_claims_nothing_until_it_is_connected_again(repo: Ledger) -> None:
    """A claim checks the org's state in its own statement: once `orgs` says disconnected (written by the
    same transaction as the disconnect's ingest), the org's view claims nothing, the others go on; connected
    again, its rows come back."""
    await three_orgs(repo)
    await repo.set_org_state(ORG_A, OrgState.DISCONNECTED, "disconnected in the scheduler")
    assert await repo.scoped(ORG_A).claim_link_work(NOW, 10) == []
    assert [w.link.link_id for w in await repo.scoped(ORG_B).claim_link_work(NOW, 10)] == ["l-b"]
    await repo.set_org_state(ORG_A, OrgState.ACTIVE, None)
    await _sync_links(repo)
    await repo.set_org_state(ORG_A, OrgState.DISCONNECTED, "disconnected in the scheduler")
    assert await repo.scoped(ORG_A).claim_activity_work(NOW, 10) == []
    assert [w.booking.booking_id for w in await repo.scoped(None).claim_activity_work(NOW, 10)] == ["b-0"]
    await repo.set_org_state(ORG_A, OrgState.ACTIVE, None)
    assert [w.booking.booking_id for w in await repo.scoped(ORG_A).claim_activity_work(NOW, 10)] == ["b-a"]
