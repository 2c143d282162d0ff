"""A ledger filled with a little of everything: synced, failed and pending bookings, a reconciliation run."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.ledger.repository import Ledger
from bridge.records.ledger import DriftItem
from bridge.records.outbound import ActivityOutcome, LinkOutcome, OutcomeState
from tests.adapters.ledger.factory import NOW, OWNER_SF, batch, booking, link, setup_link, txn

MOGLI = "a0B000000000001AAA"
EVENT = "00U000000000001AAA"
FAILED_CODE = "FIELD_INTEGRITY_EXCEPTION"


@dataclass(frozen=True)
class Filled:
    """The ids the filled ledger holds."""

    synced: str = "b-synced"
    failed: str = "b-failed"
    pending: str = "b-pending"
    unbooked_link: str = "l-unbooked"
    run_id: int = 0


async def fill(repo: Ledger) -> Filled:
    """Link l1 with one synced, one failed and one pending booking; an unbooked link; a run with drift."""
    ids = Filled()
    await repo.apply_source_batch(
        batch(
            setup_link(),
            txn(booking(ids.synced), booking(ids.failed), booking(ids.pending)),
            txn(link(ids.unbooked_link, "u1", title="Later")),
        )
    )
    [work] = await repo.claim_link_work(NOW, 10)
    await repo.record_link_outcomes(
        [
            LinkOutcome(
                "l1", work.version, OutcomeState.SYNCED, mogli_event_id=MOGLI, owner_salesforce_id=OWNER_SF
            )
        ],
        NOW,
    )
    versions = {w.booking.booking_id: w.version for w in await repo.claim_activity_work(NOW, 10)}
    await repo.record_activity_outcomes(
        [
            ActivityOutcome(ids.synced, versions[ids.synced], OutcomeState.SYNCED, activity_id=EVENT),
            ActivityOutcome(
                ids.failed,
                versions[ids.failed],
                OutcomeState.FAILED,
                error_code=FAILED_CODE,
                error=f"{FAILED_CODE}: WhoId is not valid",
            ),
        ],
        NOW,
    )
    run_id = await repo.start_reconciliation("cli", {"links": ["l1"]}, dry_run=False)
    await repo.add_drift(
        [
            DriftItem(run_id, "missing_in_salesforce", link_id="l1", booking_id=ids.pending, repaired=True),
            DriftItem(run_id, "orphan_in_salesforce", salesforce_id="00U000000000009AAA"),
        ]
    )
    await repo.finish_reconciliation(run_id, "finished", {"found": 2, "repaired": 1})
    return Filled(run_id=run_id)
