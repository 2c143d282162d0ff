"""The Reconciler: compares the scheduling database, the ledger and Salesforce in chunks and repairs drift.

A run has two phases. First the links of the scope (and their owners, and the bookings' assignees), then the
bookings, sorted by id in chunks of `chunk_size`. Every chunk is read from the three sides, classified by
the pure `drift` module, repaired (unless dry run) and stored with the run's progress in one ledger
transaction; a run that stopped (crash, API budget) is resumed by `start` with the same options from the
chunk after the last stored one. Repairs go through the ledger (re-mirror, requeue) so that the pusher writes
Salesforce as it always does, by External ID; only orphans and duplicates are deleted here. (About 400 lines:
the two phases and the resumable progress read together; the repairs themselves live in `repair.py`.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.errors import ApiLimitExhausted, TransientError
from bridge.pipeline.ports import (
    ReconcileLedger,
    ReconcileStorePort,
    SalesforceSnapshot,
    SchedulerSnapshot,
)
from bridge.pipeline.repair import Repairer
from bridge.records.ledger import ActivityRecord, DriftItem, LinkRecord
from bridge.rules.drift import (
    BookingView,
    DriftKind,
    Finding,
    LedgerView,
    LinkView,
    RepairPolicy,
    classify_booking,
    classify_link,
    classify_user,
)
from bridge.rules.mapping import MappingOptions

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]  # (phase, done, total)
# Runs this process is executing right now: never resumed a second time by another Reconciler here (other
# processes are kept out by the ledger's instance lock).
_ACTIVE: set[int] = set()
_MOGLI_GONE = frozenset(
    {DriftKind.LEDGER_POINTS_AT_DELETED, DriftKind.MOGLI_EVENT_MISSING, DriftKind.LEDGER_ID_MISMATCH}
)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """What to reconcile; dry run or repair.

    Either link ids, booking ids and/or a window on the booking's start (`since`, `until`), or a window on
    the change time (`changed_since`, `changed_until`): the Events and Mogli Events Salesforce changed in it
    (SystemModstamp, deleted ones too) and the ledger rows changed in it, with what they relate to. The
    change window is what a lost stretch of the change stream needs, whenever the meetings take place.
    """

    links: tuple[str, ...] = ()
    bookings: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    requested_by: str = "cli"
    changed_since: datetime | None = None
    changed_until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until", "changed_since", "changed_until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:  # naive means UTC, as on the command line
                object.__setattr__(self, name, value.replace(tzinfo=UTC))
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        if self.changed_until is not None and self.changed_since is None:
            raise ValueError("changed_until needs changed_since")
        if self.changed_since and self.changed_until and self.changed_since >= self.changed_until:
            raise ValueError("changed_since must be before changed_until")
        if self.changed_since is not None and (self.links or self.bookings or self.since or self.until):
            raise ValueError("changed_since cannot be combined with links, bookings, since or until")

    def scope(self) -> dict[str, Any]:
        """The options as the run's JSON scope (also the key a run is resumed by)."""
        scope: dict[str, Any] = {
            "links": sorted(self.links),
            "bookings": sorted(self.bookings),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        if self.changed_since is not None:  # absent otherwise: runs stored before it existed still resume
            scope["changed_since"] = self.changed_since.isoformat()
            scope["changed_until"] = self.changed_until.isoformat() if self.changed_until else None
        return scope

    @property
    def full(self) -> bool:
        """True when no filter narrows the run: orphans anywhere in Salesforce are in scope."""
        return not (self.links or self.bookings or self.since or self.until or self.changed_since)


@dataclass(frozen=True, slots=True)
class ReconcileSummary:
    """How a run ended: state ('finished' | 'paused' | 'failed'), drift counts by kind, repairs."""

    run_id: int
    state: str
    dry_run: bool
    counts: dict[str, int]
    repaired: int
    links_checked: int
    bookings_checked: int
    message: str | None = None

    @property
    def total(self) -> int:
        """Drift items found."""
        return sum(self.counts.values())


@dataclass
class _Progress:
    """What the run's summary column stores between chunks."""

    counts: Counter[str] = field(default_factory=Counter)
    repaired: int = 0
    links_done: bool = False
    links_checked: int = 0
    bookings_checked: int = 0
    after: str | None = None  # last booking id of the last stored chunk
    relinked: set[str] = field(default_factory=set)
    queued: int = 0

    @classmethod
    def load(cls, summary: Any) -> _Progress:
        """Progress from a stored summary (empty for a new run)."""
        s = dict(summary or {})
        return cls(
            counts=Counter(s.get("counts") or {}),
            repaired=int(s.get("repaired") or 0),
            links_done=bool(s.get("links_done")),
            links_checked=int(s.get("links_checked") or 0),
            bookings_checked=int(s.get("bookings_checked") or 0),
            after=s.get("after"),
            relinked=set(s.get("relinked") or ()),
            queued=int(s.get("queued") or 0),
        )

    def dump(self) -> dict[str, Any]:
        """The JSON summary."""
        return {
            "counts": dict(self.counts),
            "total": sum(self.counts.values()),
            "repaired": self.repaired,
            "links_done": self.links_done,
            "links_checked": self.links_checked,
            "bookings_checked": self.bookings_checked,
            "after": self.after,
            "relinked": sorted(self.relinked),
            "queued": self.queued,
        }


class Reconciler:
    """Runs reconciliations through ports: ledger, scheduler snapshot reads and Salesforce snapshot reads."""

    def __init__(
        self,
        *,
        ledger: ReconcileLedger,
        store: ReconcileStorePort,
        scheduler: SchedulerSnapshot,
        salesforce: SalesforceSnapshot,
        options: MappingOptions,
        policy: RepairPolicy = RepairPolicy(),
        chunk_size: int = 200,
        after_repair: Callable[[], Awaitable[None]] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._scheduler = scheduler
        self._sf = salesforce
        self._options = options
        self._policy = policy
        self._chunk = max(chunk_size, 1)
        self._after_repair = after_repair
        self._progress = progress
        self._repairer = Repairer(store, scheduler, salesforce)

    async def start(self, options: ReconcileOptions) -> int:
        """Open a run (or resume the unfinished run with the same scope); returns its id."""
        scope = options.scope()
        previous = await self._store.find_resumable(scope, options.dry_run)
        if previous is not None and previous.id not in _ACTIVE:
            await self._store.resume(previous.id)
            log.info("reconcile.resumed", run_id=previous.id)
            return previous.id
        run_id = await self._ledger.start_reconciliation(options.requested_by, scope, options.dry_run)
        log.info("reconcile.started", run_id=run_id, dry_run=options.dry_run, full=options.full)
        return run_id

    async def execute(self, run_id: int, options: ReconcileOptions) -> ReconcileSummary:
        """Run (or continue) the run to its end; a spent API budget pauses it cleanly."""
        run = await self._ledger.get_reconciliation(run_id)
        progress = _Progress.load(run.summary if run is not None else None)
        state, message = "finished", None
        _ACTIVE.add(run_id)
        try:
            await self._run(run_id, options, progress)
        except TransientError as exc:
            # Budget spent, Salesforce or the ledger away: stop cleanly; the next run resumes after the last
            # stored chunk.
            state = "paused"
            reason = (
                "the Salesforce API budget is spent" if isinstance(exc, ApiLimitExhausted) else "unavailable"
            )
            message = f"paused: {reason} ({exc}); run reconcile again with the same options to resume"
            log.warning("reconcile.paused", run_id=run_id, error=type(exc).__name__, reason=str(exc))
        except Exception:
            await self._close(run_id, "failed", "failed: see the log")
            raise
        finally:
            _ACTIVE.discard(run_id)
        progress = await self._close(run_id, state, message)
        if progress.queued and self._after_repair is not None and not options.dry_run:
            await self._after_repair()
        log.info("reconcile.finished", run_id=run_id, state=state, drift=sum(progress.counts.values()))
        return ReconcileSummary(
            run_id=run_id,
            state=state,
            dry_run=options.dry_run,
            counts=dict(progress.counts),
            repaired=progress.repaired,
            links_checked=progress.links_checked,
            bookings_checked=progress.bookings_checked,
            message=message,
        )

    async def _close(self, run_id: int, state: str, message: str | None) -> _Progress:
        """End the run with its last stored progress (a chunk cut short by an error is not counted)."""
        run = await self._ledger.get_reconciliation(run_id)
        stored = dict(run.summary or {}) if run is not None else {}
        await self._ledger.finish_reconciliation(run_id, state, {**stored, "message": message})
        return _Progress.load(stored)

    # ------------------------------------------------------------------ scope

    async def _universe(self, options: ReconcileOptions) -> tuple[list[str], set[str], set[str]]:
        """Booking ids, link ids and user ids of the scope, from all three sides."""
        if options.changed_since is not None:
            return await self._changed_universe(options.changed_since, options.changed_until)
        args = (options.links, options.bookings, options.since, options.until)
        triples = [*await self._scheduler.booking_ids(*args), *await self._store.activity_ids(*args)]
        bookings = {b for b, _, _ in triples} | set(options.bookings)
        links = {link for _, link, _ in triples if link} | set(options.links)
        users = {user for _, _, user in triples if user}
        if options.full:
            bookings |= await self._sf.booking_keys(None, None)
            links |= set(await self._scheduler.link_ids()) | set(await self._store.link_ids())
            links |= await self._sf.link_keys()
            users |= set(await self._scheduler.user_ids())
        elif (options.since or options.until) and not options.links and not options.bookings:
            bookings |= await self._sf.booking_keys(options.since, options.until)
        if options.links:
            known = await self._store.links(options.links)
            moglis = [r.mogli_event_id for r in known.values() if r.mogli_event_id]
            bookings |= await self._sf.booking_keys_of_links(moglis)
        return sorted(bookings), links, users

    async def _changed_universe(
        self, since: datetime, until: datetime | None
    ) -> tuple[list[str], set[str], set[str]]:
        """Records Salesforce changed in the window, ledger rows changed in it, and what they relate to.

        The ledger side stands for the scheduler side: every scheduler change reaches the ledger through the
        replication slot, which loses nothing, so a row the scheduler changed in the window was ingested
        (or is still on its way, and the stream brings it).
        """
        events, moglis = await self._sf.changed_keys(since, until)
        triples, changed_links = await self._store.changed_ids(since, until)
        bookings = events | {b for b, _, _ in triples}
        known = (await self._store.activities(bookings)).values()
        links = moglis | set(changed_links) | {a.link_id for a in known if a.link_id}
        users = {a.assigned_user_id for a in known if a.assigned_user_id}
        return sorted(bookings), links, users

    # ------------------------------------------------------------------ phases

    async def _run(self, run_id: int, options: ReconcileOptions, progress: _Progress) -> None:
        bookings, links, users = await self._universe(options)
        if not progress.links_done:
            await self._links_phase(run_id, options, progress, sorted(links), users)
        todo = [b for b in bookings if progress.after is None or b > progress.after]
        done = len(bookings) - len(todo)
        for start in range(0, len(todo), self._chunk):
            chunk = todo[start : start + self._chunk]
            findings = await self._booking_findings(chunk, progress)
            progress.bookings_checked += len(chunk)
            progress.after = chunk[-1]
            await self._store_chunk(run_id, options, progress, findings)
            done += len(chunk)
            self._report("bookings", done, len(bookings))

    async def _links_phase(
        self,
        run_id: int,
        options: ReconcileOptions,
        progress: _Progress,
        links: list[str],
        users: set[str],
    ) -> None:
        findings: list[Finding] = []
        for start in range(0, len(links), self._chunk):
            chunk = links[start : start + self._chunk]
            source = await self._scheduler.links(chunk)
            users |= {r.owner_id for r in source.values() if r.owner_id}
            ledger_links = await self._store.links(chunk)
            ledger_users = await self._store.users(
                {r.owner_user_id for r in ledger_links.values() if r.owner_user_id}
            )
            moglis = await self._sf.mogli_events_by_link(chunk)
            found: list[Finding] = []
            for link_id in chunk:
                view = LinkView(
                    link_id,
                    source.get(link_id),
                    ledger_links.get(link_id),
                    [m for m in moglis if m.link_id == link_id],
                )
                found += classify_link(view, ledger_users, self._policy)
            findings += await self._links_unmoved(found, ledger_links)
            progress.links_checked += len(chunk)
            self._report("links", min(start + self._chunk, len(links)), len(links))
        findings += await self._user_findings(sorted(users))
        progress.links_done = True
        # Bookings on a link whose Mogli Event is gone are the link's business this run (their Events went
        # with it, or are rewritten when it is recreated): one damage, one item.
        progress.relinked |= {f.link_id for f in findings if f.kind in _MOGLI_GONE and f.link_id}
        await self._store_chunk(run_id, options, progress, findings)

    async def _links_unmoved(self, findings: list[Finding], before: dict[str, LinkRecord]) -> list[Finding]:
        """Drop the findings of links the pipeline changed while their chunk was compared (as
        `_without_moved` does for bookings: the push wrote the Mogli Event between the two reads)."""
        link_ids = sorted({f.link_id for f in findings if f.link_id})
        if not link_ids:
            return findings
        now = await self._store.links(link_ids)
        moved = {k for k in link_ids if _link_stamp(before.get(k)) != _link_stamp(now.get(k))}
        if moved:
            log.info("reconcile.raced_by_the_pipeline", links=len(moved))
        return [f for f in findings if f.link_id not in moved]

    async def _user_findings(self, user_ids: Sequence[str]) -> list[Finding]:
        findings: list[Finding] = []
        for start in range(0, len(user_ids), self._chunk):
            chunk = user_ids[start : start + self._chunk]
            source, ledger = await self._scheduler.users(chunk), await self._store.users(chunk)
            for user_id in chunk:
                findings += classify_user(user_id, source.get(user_id), ledger)
        return findings

    async def _booking_findings(self, chunk: Sequence[str], progress: _Progress) -> list[Finding]:
        source = await self._scheduler.bookings(chunk)
        ledger = await self._store.activities(chunk)
        link_ids = {a.link_id for a in ledger.values() if a.link_id}
        links = await self._store.links(link_ids)
        user_ids = {r.owner_user_id for r in links.values() if r.owner_user_id}
        user_ids |= {a.assigned_user_id for a in ledger.values() if a.assigned_user_id}
        view = LedgerView(links, await self._store.users(user_ids), frozenset(progress.relinked))
        events = await self._sf.events_by_booking(chunk)
        findings: list[Finding] = []
        for booking_id in chunk:
            booking = BookingView(
                booking_id,
                source.get(booking_id),
                ledger.get(booking_id),
                [e for e in events if e.booking_id == booking_id],
            )
            findings += classify_booking(booking, view, self._options, self._policy)
        return await self._without_moved(findings, ledger, links)

    async def _without_moved(
        self, findings: list[Finding], ledger: dict[str, ActivityRecord], links: dict[str, LinkRecord]
    ) -> list[Finding]:
        """Drop the findings of bookings the pipeline changed while this chunk was compared.

        The ledger is read before the org; a push (or an ingest) that wrote the row or its link in between
        makes the org look newer than the ledger read, which is a race with the bridge's own work, not
        drift: the row is read again, and a finding stands only when its activity and link are as they were.
        """
        booking_ids = sorted({f.booking_id for f in findings if f.booking_id})
        if not booking_ids:
            return findings
        now_ledger = await self._store.activities(booking_ids)
        now_links = await self._store.links({a.link_id for a in now_ledger.values() if a.link_id})

        def stamp(acts: dict[str, ActivityRecord], lnks: dict[str, LinkRecord], bid: str) -> tuple[Any, ...]:
            act = acts.get(bid)
            link = lnks.get(act.link_id) if act is not None and act.link_id else None
            return (None if act is None else (act.state, act.version, act.synced_version), _link_stamp(link))

        moved = {b for b in booking_ids if stamp(ledger, links, b) != stamp(now_ledger, now_links, b)}
        if moved:
            log.info("reconcile.raced_by_the_pipeline", bookings=len(moved))
        return [f for f in findings if f.booking_id not in moved]

    async def _store_chunk(
        self, run_id: int, options: ReconcileOptions, progress: _Progress, findings: Iterable[Finding]
    ) -> None:
        found = list(findings)
        repaired: set[int] = set()
        if found and not options.dry_run:
            repaired, queued = await self._repairer.repair(run_id, found)
            progress.queued += queued
        items = [_drift_item(run_id, f, i in repaired) for i, f in enumerate(found)]
        progress.counts.update(f.kind.value for f in found)
        progress.repaired += len(repaired)
        await self._store.record_chunk(run_id, items, progress.dump())

    def _report(self, phase: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(phase, done, total)


def _link_stamp(link: LinkRecord | None) -> tuple[Any, ...] | None:
    """What a push or an ingest changes in a link's ledger row (None: no row)."""
    return None if link is None else (link.state, link.version, link.synced_version)


def _drift_item(run_id: int, finding: Finding, repaired: bool) -> DriftItem:
    """The stored form of a finding."""
    return DriftItem(
        run_id=run_id,
        kind=finding.kind.value,
        link_id=finding.link_id,
        booking_id=finding.booking_id,
        salesforce_id=finding.salesforce_id,
        detail={**finding.detail, "repair": finding.repair.value},
        repaired=repaired,
    )
