"""Decoding CometD change events, and re-reading records as changes through the REST client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sfclient_support import Control, Seed, event_item

from bridge.config import SalesforceObjectNames
from bridge.records.inbound import ChangeEntity, ChangeType, Field
from bridge.salesforce.changes import ChangeReader, decode_change, parse_datetime
from bridge.salesforce.rest import SalesforceClient

NAMES = SalesforceObjectNames()
EVENT_ID = "00U5e00000AbCdEEAV"


def message(change_type: str, entity: str = "Event", **body: Any) -> dict[str, Any]:
    """A CometD CDC message as the Streaming API delivers it."""
    header = {
        "entityName": entity,
        "recordIds": [EVENT_ID[:15]],
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/60.0",
        "transactionKey": "t-1",
        "sequenceNumber": 1,
        "commitTimestamp": 1718121600000,
        "changedFields": list(body),
    }
    return {
        "channel": f"/data/{entity}ChangeEvent",
        "data": {
            "schema": "s",
            "payload": {"ChangeEventHeader": header, **body},
            "event": {"replayId": 18502},
        },
    }


def test_update_carries_only_the_changed_fields() -> None:
    """An UPDATE names its fields in `present`; ids become 18 characters and datetimes aware UTC."""
    change = decode_change(message("UPDATE", StartDateTime="2024-06-13T16:00:00.000Z", WhoId=None), NAMES)
    assert change is not None
    assert (change.entity, change.change_type, change.replay_id) == (
        ChangeEntity.EVENT,
        ChangeType.UPDATE,
        18502,
    )
    assert change.record_ids == (EVENT_ID,)
    assert change.present == frozenset({Field.START, Field.WHO})
    assert change.start_at == datetime(2024, 6, 13, 16, 0, tzinfo=UTC) and change.who_id is None
    assert change.commit_time == datetime(2024, 6, 11, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        ("Event", ChangeEntity.EVENT),
        ("Mogli_Event__c", ChangeEntity.MOGLI_EVENT),
        ("Lead", ChangeEntity.LEAD),
        ("Task", ChangeEntity.OTHER),
    ],
)
def test_entity_names_map_to_watched_entities(entity: str, expected: ChangeEntity) -> None:
    """The configured Mogli Event object, Event and Lead are recognised; anything else is OTHER."""
    change = decode_change(message("DELETE", entity), NAMES)
    assert change is not None and change.entity is expected


def test_lead_conversion_fields_are_decoded() -> None:
    """A converted Lead's UPDATE carries IsConverted and the new Contact."""
    change = decode_change(
        message("UPDATE", "Lead", IsConverted=True, ConvertedContactId="0035e00000QrStUAAV"), NAMES
    )
    assert change is not None and change.is_converted is True
    assert change.converted_contact_id == "0035e00000QrStUAAV"


@pytest.mark.parametrize(
    "broken",
    [
        {"channel": "/data/EventChangeEvent"},
        {"data": {"payload": {}, "event": {"replayId": 1}}},
        {"data": {"payload": {"ChangeEventHeader": {"changeType": "SNAPSHOT?"}}, "event": {"replayId": 1}}},
        {"data": {"payload": {"ChangeEventHeader": {"changeType": "UPDATE"}}, "event": {}}},
    ],
)
def test_unreadable_messages_decode_to_none(broken: dict[str, Any]) -> None:
    """Messages without header, replay id or a known change type are not changes."""
    assert decode_change(broken, NAMES) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-12T15:00:00.000Z", datetime(2024, 6, 12, 15, 0, tzinfo=UTC)),
        ("2024-06-12T17:00:00.000+0200", datetime(2024, 6, 12, 15, 0, tzinfo=UTC)),
        ("", None),
        ("not a date", None),
    ],
)
def test_datetimes_in_both_salesforce_renderings(text: str, expected: datetime | None) -> None:
    """CometD's `Z` and REST's `+0000` forms both parse to aware UTC."""
    assert parse_datetime(text) == expected


async def test_reader_describes_live_and_deleted_events(
    client: SalesforceClient, seed: Seed, control: Control
) -> None:
    """Re-reading by id sees deleted records (queryAll): live ones as UNDELETE with values, deleted DELETE."""
    results = await client.upsert_events([event_item(seed, "booking-live"), event_item(seed, "booking-gone")])
    live, gone = (r.record_id for r in results)
    assert live and gone
    await client.delete_records([gone])
    when = datetime(2030, 1, 1, tzinfo=UTC)
    changes = {c.record_ids[0]: c for c in await ChangeReader(client, NAMES).read_events([live, gone], when)}
    assert changes[gone].change_type is ChangeType.DELETE
    assert changes[live].change_type is ChangeType.UNDELETE
    assert changes[live].external_id == "booking-live" and changes[live].owner_id == seed.owner
    assert Field.START in changes[live].present and changes[live].commit_time == when
