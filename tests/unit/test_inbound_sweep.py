"""The inbound sweep (policy `recreate`): it asks the ledger every 2 s only while a link whose Mogli Event was
deleted in Salesforce waits for a new booking; an idle org costs the ledger one probe per idle interval, and a
deletion the inbound applies wakes the sweep at once."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, replace

from bridge.pipeline.inbound import Inbound
from bridge.records.inbound import ChangeEntity, ChangeType, InboundBatch, KnownLink, SalesforceChange
from bridge.rules.policy import PolicyOptions
from tests.unit.test_policy_inbound import CHANNEL, FAST, T0, Feed, Ledger, Reader, Writer

MOGLI_ID = "a0B000000000001AAA"
SWEEPING = replace(FAST, sweep_seconds=0.01, sweep_idle_seconds=3600.0)


@dataclass
class SweptLedger(Ledger):
    """Counts the sweep's calls; knows one synced link; says whether deleted links remain."""

    deleted: bool = False
    recreates: int = 0
    probes: int = 0

    async def find_inbound_links(
        self, salesforce_ids: Collection[str], link_ids: Collection[str] = ()
    ) -> list[KnownLink]:
        """The one link when its Mogli Event is named."""
        return [KnownLink("l1", MOGLI_ID, "synced", "one_on_one")] if MOGLI_ID in salesforce_ids else []

    async def apply_inbound(self, batch: InboundBatch) -> None:
        """Record; a link marked deleted is then what the probe finds."""
        await super().apply_inbound(batch)
        self.deleted |= any(link.state == "deleted_in_salesforce" for link in batch.links)

    async def recreate_deleted_links(self) -> list[str]:
        """Count; nothing recreated."""
        self.recreates += 1
        return []

    async def has_deleted_links(self) -> bool:
        """Count; as set."""
        self.probes += 1
        return self.deleted


async def _sweep_for(ledger: SweptLedger, seconds: float, feed: Feed | None = None) -> Inbound:
    inbound = Inbound(
        feed or Feed([]),
        ledger,
        Reader(),
        Writer([]),
        PolicyOptions(),
        on_work=lambda: None,
        settings=SWEEPING,
    )  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.ensure_future(inbound.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return inbound


async def test_an_org_without_deleted_links_is_swept_once_per_idle_interval() -> None:
    ledger = SweptLedger([])
    await _sweep_for(ledger, 0.3)
    assert (ledger.recreates, ledger.probes) == (1, 1)  # the first sweep after the start, then quiet


async def test_a_deleted_link_keeps_the_sweep_going() -> None:
    ledger = SweptLedger([], deleted=True)
    await _sweep_for(ledger, 0.3)
    assert ledger.recreates >= 5 and ledger.probes == ledger.recreates


async def test_a_mogli_event_deletion_wakes_the_quiet_sweep() -> None:
    """The quiet sweep (nothing deleted at its first probe) runs every tick again once the inbound applies
    a person's deletion of the link's Mogli Event."""
    deletion = SalesforceChange(CHANNEL, 7, ChangeEntity.MOGLI_EVENT, ChangeType.DELETE, (MOGLI_ID,), T0)  # type: ignore[call-arg]
    ledger = SweptLedger([])

    class Later(Feed):
        async def changes(self):  # type: ignore[no-untyped-def,override]
            await asyncio.sleep(0.1)  # after the first (quiet) sweep
            async for item in super().changes():
                yield item

    inbound = await _sweep_for(ledger, 0.4, Later([deletion]))
    assert inbound.applied == 1 and ledger.deleted
    assert ledger.recreates >= 5
