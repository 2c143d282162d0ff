"""Reconciliation's reads by change time against the emulator: SystemModstamp windows over queryAll."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sfclient_support import Seed, event_item

from bridge.config import SalesforceObjectNames
from bridge.records.outbound import MogliEventFields
from bridge.salesforce.reads import SalesforceReads, _parse_datetime
from bridge.salesforce.rest import SalesforceClient


async def _after(moment: datetime) -> None:
    """Wait until the wall clock (the emulator's) has passed `moment`."""
    await asyncio.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0) + 0.05)


async def test_changed_keys_cover_records_written_updated_or_deleted_in_the_window(
    client: SalesforceClient, seed: Seed
) -> None:
    """Events created, edited or deleted at or after `since` are in [since, ∞); one untouched since is not;
    [before, since) holds only that one; a Mogli Event created after `since` is in, the older one is not."""
    reads = SalesforceReads(client, SalesforceObjectNames())
    written = await client.upsert_events([event_item(seed, k) for k in ("old", "edited", "deleted")])
    ids = {r.key: r.record_id for r in written}
    [row] = await client.query(f"SELECT SystemModstamp FROM Event WHERE Id = '{ids['old']}'")
    stamp = _parse_datetime(row["SystemModstamp"])
    assert stamp is not None
    before, since = stamp.replace(microsecond=0), stamp.replace(microsecond=0) + timedelta(seconds=1)
    await _after(since)

    await client.upsert_events([event_item(seed, "new"), event_item(seed, "edited", subject="Moved")])
    await client.delete_records([ids["deleted"] or ""])
    owner = seed.owner
    [mogli] = await client.upsert_mogli_events(
        [MogliEventFields("link-new", "New", "one_on_one", None, owner)]
    )
    assert mogli.ok

    events, links = await reads.changed_keys(since, None)
    assert events == {"new", "edited", "deleted"} and links == {"link-new"}
    events, links = await reads.changed_keys(before, since)
    assert events == {"old"} and "link-new" not in links
