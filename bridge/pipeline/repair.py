"""Repairs of drift findings: re-mirror scheduler rows through ingest, requeue rows, delete orphans.

Re-mirroring goes through the ledger's ordinary ingest as a snapshot-like transaction at the stored source
position: the ingest rules decide what to queue (exactly as if the change had streamed in) and the source
checkpoint does not move. A snapshot passes no LSN check, so the ledger leaves out every row the stream
changed after the re-mirror began to read the scheduler: that row is already newer than what was read.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from bridge.pipeline.ports import (
    MirrorKey,
    ReconcileStorePort,
    SalesforceSnapshot,
    SchedulerSnapshot,
)
from bridge.records.source import BookingRow, ChangeOp, LinkRow, SourceChange, SourceTable
from bridge.rules.drift import Finding, Repair

log = structlog.get_logger(__name__)


class Repairer:
    """Applies the repairs of a chunk's findings; says which findings it repaired."""

    def __init__(
        self,
        store: ReconcileStorePort,
        scheduler: SchedulerSnapshot,
        salesforce: SalesforceSnapshot,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._sf = salesforce

    async def repair(self, run_id: int, findings: Sequence[Finding]) -> tuple[set[int], int]:
        """Repair what can be repaired; returns (indexes of repaired findings, ledger rows queued)."""
        by_kind = {r: [i for i, f in enumerate(findings) if f.repair is r] for r in Repair}
        repaired: set[int] = set()
        queued = 0
        if by_kind[Repair.DELETE]:
            ids = [findings[i].salesforce_id or "" for i in by_kind[Repair.DELETE]]
            gone = await self._sf.delete(ids)
            repaired |= {i for i in by_kind[Repair.DELETE] if findings[i].salesforce_id in gone}
        if by_kind[Repair.INGEST]:
            mirrored, streamed = await self._remirror([findings[i] for i in by_kind[Repair.INGEST]])
            queued += mirrored
            repaired |= {i for i in by_kind[Repair.INGEST] if _mirror_key(findings[i]) not in streamed}
        if by_kind[Repair.MARK_DELETED]:
            deleted_ids = {findings[i].salesforce_id or "" for i in by_kind[Repair.MARK_DELETED]}
            await self._store.mark_deleted(deleted_ids, run_id)
            repaired |= set(by_kind[Repair.MARK_DELETED])
        if by_kind[Repair.ACCEPT_OWNER]:
            chosen = [findings[i] for i in by_kind[Repair.ACCEPT_OWNER]]
            await self._store.accept_owners(
                {f.booking_id or "": str(f.detail["found"]) for f in chosen}, run_id
            )
            repaired |= set(by_kind[Repair.ACCEPT_OWNER])
        requeue = by_kind[Repair.REQUEUE] + by_kind[Repair.RELINK]
        if requeue:
            chosen = [findings[i] for i in requeue]
            queued += await self._store.requeue_drifted(
                booking_ids={f.booking_id for f in chosen if f.booking_id},
                link_ids={f.link_id for f in chosen if f.link_id and not f.booking_id},
                relink_ids={f.link_id for f in chosen if f.link_id and f.repair is Repair.RELINK},
                run_id=run_id,
            )
            repaired |= set(requeue)
        log.info("reconcile.repaired", run_id=run_id, repaired=len(repaired), queued=queued)
        return repaired, queued

    async def _remirror(self, findings: Sequence[Finding]) -> tuple[int, set[MirrorKey]]:
        """Feed the scheduler's current rows (or their absence) to the ledger's ingest.

        Returns how many rows were applied and the keys left out because the stream changed them meanwhile.
        """
        user_ids = sorted({str(f.detail["user_id"]) for f in findings if "user_id" in f.detail})
        link_ids = sorted({f.link_id for f in findings if f.link_id and not f.booking_id})
        booking_ids = sorted({f.booking_id for f in findings if f.booking_id})
        mark = await self._store.journal_mark()  # before the reads: what streams in after is newer
        users = await self._scheduler.users(user_ids)
        links = await self._scheduler.links(link_ids)
        bookings = await self._scheduler.bookings(booking_ids)
        changes = [SourceChange(SourceTable.USERS, ChangeOp.UPDATE, users[u]) for u in user_ids if u in users]
        changes += [_change(SourceTable.LINKS, k, links.get(k), LinkRow(k)) for k in link_ids]
        changes += [_change(SourceTable.BOOKINGS, k, bookings.get(k), BookingRow(k)) for k in booking_ids]
        if not changes:
            return 0, set()
        streamed = await self._store.remirror(changes, mark)
        if streamed:
            log.info("reconcile.remirror_superseded", rows=len(streamed))
        return len(changes) - len(streamed), streamed


def _mirror_key(finding: Finding) -> MirrorKey:
    """The journal key of the row a re-mirror finding is about."""
    if finding.booking_id:
        return "activity", finding.booking_id
    if "user_id" in finding.detail:
        return "user", str(finding.detail["user_id"])
    return "link", finding.link_id or ""


def _change(
    table: SourceTable, key: str, row: LinkRow | BookingRow | None, gone: LinkRow | BookingRow
) -> SourceChange:
    """An upsert of the current row, or a delete when the scheduler no longer has it."""
    return (
        SourceChange(table, ChangeOp.UPDATE, row)
        if row is not None
        else SourceChange(table, ChangeOp.DELETE, gone)
    )
