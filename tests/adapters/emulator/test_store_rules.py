"""The emulator's record store over time: upsert, cascades, lead conversion, persistence, describe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.emulator.contracts import ApiError, ChangeEvent, DmlContext, StreamingSettings
from bridge.emulator.org import OrgConfig, OrgFileError, load_org, parse_org
from bridge.emulator.store import OrgStore

NOW = datetime(2024, 6, 10, 16, 0, 1, tzinfo=UTC)
REST = "com/salesforce/api/rest/60.0;client=mogli-bridge"


class RecordingPublisher:
    """The bus seam: keeps every published transaction's events."""

    def __init__(self) -> None:
        self.batches: list[list[ChangeEvent]] = []

    def publish(self, events: Sequence[ChangeEvent]) -> None:
        """Record one committed transaction."""
        self.batches.append(list(events))


@pytest.fixture
def pub() -> RecordingPublisher:
    """A fresh recording publisher."""
    return RecordingPublisher()


def make_store(pub: RecordingPublisher, org: OrgConfig | None = None, state: Path | None = None) -> OrgStore:
    """An OrgStore on the default org (or `org`) with a fixed clock."""
    return OrgStore(org or load_org(None), pub, lambda: NOW, state_file=state)


@pytest.fixture
def store(pub: RecordingPublisher) -> OrgStore:
    """The default org in memory."""
    return make_store(pub)


def ctx(store: OrgStore) -> DmlContext:
    """The integration user's REST context."""
    return DmlContext(store.integration_user_id, REST)


def first_id(store: OrgStore, sobject: str) -> str:
    """Id of the first record of `sobject` by id."""
    return str(store.query(f"SELECT Id FROM {sobject} ORDER BY Id LIMIT 1").records[0]["Id"])


def event(**fields: Any) -> dict[str, Any]:
    """A valid timed Event body plus `fields`."""
    return {"Subject": "Call", "StartDateTime": "2024-06-12T15:00:00Z", "DurationInMinutes": 30, **fields}


# -- upsert ------------------------------------------------------------------------------------------------


def test_upsert_creates_then_updates(store: OrgStore) -> None:
    """Reference §2.1: upsert by External ID creates first (created=True), then updates the same record."""
    with store.transaction(ctx(store)) as txn:
        first = txn.upsert("Mogli_Event__c", "scheduling_link_id__c", "L-1", {"Name": "One"})
    with store.transaction(ctx(store)) as txn:
        second = txn.upsert("Mogli_Event__c", "Scheduling_Link_Id__c", "L-1", {"Name": "Two"})
    assert first[1] is True and second == (first[0], False)
    record = store.get_by_external_id("Mogli_Event__c", "Scheduling_Link_Id__c", "L-1")
    assert (record["Id"], record["Name"]) == (first[0], "Two")


def test_upsert_on_non_unique_external_id_with_two_matches_is_300(pub: RecordingPublisher) -> None:
    """Reference §2.1: a value matching more than one record answers 300 with the matching ids."""
    data = {
        "users": [{"username": "a@example.com", "email": "a@example.com", "last_name": "A"}],
        "objects": [
            {
                "name": "Thing__c",
                "prefix": "a1D",
                "fields": [{"name": "Code__c", "type": "string", "external_id": True}],
            }
        ],
    }
    store = make_store(pub, parse_org(data, None))
    with store.transaction(ctx(store)) as txn:
        ids = sorted(txn.create("Thing__c", {"Name": n, "Code__c": "X"}) for n in ("a", "b"))
    for action in ("upsert", "get"):
        with pytest.raises(ApiError) as info:
            if action == "get":
                store.get_by_external_id("Thing__c", "Code__c", "X")
            else:
                with store.transaction(ctx(store)) as txn:
                    txn.upsert("Thing__c", "Code__c", "X", {"Name": "c"})
        assert (info.value.status, info.value.fields) == (300, ids)


def test_upsert_on_a_field_that_is_not_an_external_id_is_not_found(store: OrgStore) -> None:
    """Upsert needs an External ID (or unique) field."""
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.upsert("Event", "Subject", "x", {})
    assert info.value.error_code == "NOT_FOUND"


def test_deleted_records_do_not_match_upsert(store: OrgStore) -> None:
    """An External ID held only by a record in the recycle bin is free: upsert creates a new record."""
    with store.transaction(ctx(store)) as txn:
        old, _ = txn.upsert("Mogli_Event__c", "Scheduling_Link_Id__c", "L-9", {"Name": "Old"})
        txn.delete(old)
    with store.transaction(ctx(store)) as txn:
        new, created = txn.upsert("Mogli_Event__c", "Scheduling_Link_Id__c", "L-9", {"Name": "New"})
    assert created and new != old


# -- cascade delete and undelete -----------------------------------------------------------------------------


def test_account_delete_cascades_to_contacts_and_events(store: OrgStore, pub: RecordingPublisher) -> None:
    """Reference §3.4: deleting an Account bins its Contacts and Events in one transaction."""
    account = first_id(store, "Account")
    contact = first_id(store, "Contact")
    with store.transaction(ctx(store)) as txn:
        on_account = txn.create("Event", event(WhatId=account))
        on_contact = txn.create("Event", event(WhoId=contact))
        unrelated = txn.create("Event", event(WhoId=first_id(store, "Lead")))
        deal = txn.create(
            "Opportunity",
            {"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2024-07-01", "AccountId": account},
        )
        on_deal = txn.create("Event", event(WhatId=deal))
    with store.transaction(ctx(store)) as txn:
        txn.delete(account)
    batch = pub.batches[-1]
    deleted = {e.record_ids[0] for e in batch}
    assert all(e.change_type == "DELETE" and e.fields == {} for e in batch)
    assert {account, contact, on_account, on_contact, deal, on_deal} <= deleted and unrelated not in deleted
    assert len({e.transaction_key for e in batch}) == 1
    assert store.query("SELECT Id FROM Event").total_size == 1
    everything = store.query("SELECT Id, IsDeleted FROM Event", include_deleted=True).records
    assert {r["Id"]: r["IsDeleted"] for r in everything} == {
        on_account: True,
        on_contact: True,
        unrelated: False,
        on_deal: True,
    }


def test_undelete_account_restores_what_the_delete_took(store: OrgStore, pub: RecordingPublisher) -> None:
    """Reference §3.4: undeleting the Account restores its Events with full UNDELETE events."""
    account = first_id(store, "Account")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event(WhatId=account))
    with store.transaction(ctx(store)) as txn:
        txn.delete(account)
    with store.transaction(ctx(store)) as txn:
        txn.undelete(account)
    undeleted = {e.record_ids[0]: e for e in pub.batches[-1]}
    assert account in undeleted and event_id in undeleted
    assert undeleted[event_id].change_type == "UNDELETE"
    assert undeleted[event_id].fields["WhatId"] == account
    assert store.get("Event", event_id)["IsDeleted"] is False


def test_undelete_of_a_cascaded_child_restores_only_it(store: OrgStore) -> None:
    """Undeleting one Event binned by its Account's delete leaves the Account in the recycle bin."""
    account = first_id(store, "Account")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event(WhatId=account))
        txn.delete(account)
        txn.undelete(event_id)
    assert store.get("Event", event_id)["WhatId"] == account
    assert store.query(f"SELECT Id FROM Account WHERE Id = '{account}'").records == []


def test_undelete_conflicting_with_a_reused_external_id_is_duplicate_value(store: OrgStore) -> None:
    """A record whose unique External ID was reused while it sat in the recycle bin cannot come back."""
    with store.transaction(ctx(store)) as txn:
        old = txn.create("Event", event(Scheduling_Booking_Id__c="B-1"))
        txn.delete(old)
        txn.create("Event", event(Scheduling_Booking_Id__c="B-1"))
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.undelete(old)
    assert info.value.error_code == "DUPLICATE_VALUE"


def test_deleting_a_mogli_event_cascades_to_its_events(store: OrgStore) -> None:
    """Activities of a custom WhatId parent go to the recycle bin with it."""
    with store.transaction(ctx(store)) as txn:
        parent = txn.create("Mogli_Event__c", {"Name": "Link", "Scheduling_Link_Id__c": "L"})
        child = txn.create("Event", event(WhatId=parent))
        txn.delete(parent)
    with pytest.raises(ApiError) as info:
        store.get("Event", child)
    assert info.value.error_code == "NOT_FOUND"


def test_undelete_of_a_live_record_fails(store: OrgStore) -> None:
    """Only recycle-bin records can be undeleted."""
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.undelete(first_id(store, "Account"))
    assert info.value.error_code == "UNDELETE_FAILED"


def test_event_delete_takes_its_relations(store: OrgStore) -> None:
    """Deleting an Event deletes its EventRelations."""
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
        relation = txn.create(
            "EventRelation", {"EventId": event_id, "RelationId": first_id(store, "Contact")}
        )
        txn.delete(event_id)
    assert store.records("EventRelation") == []
    assert store.records("EventRelation", include_deleted=True)[0]["Id"] == relation


# -- event relations ---------------------------------------------------------------------------------------


def test_event_relation_defaults_and_duplicate(store: OrgStore) -> None:
    """EventRelation: IsInvitee true, IsParent false, Status New by default; one row per person."""
    contact = first_id(store, "Contact")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
        relation = txn.create("EventRelation", {"EventId": event_id, "RelationId": contact})
    record = store.get("EventRelation", relation)
    assert (record["IsInvitee"], record["IsParent"], record["Status"]) == (True, False, "New")
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.create("EventRelation", {"EventId": event_id, "RelationId": contact})
    assert info.value.error_code == "DUPLICATE_VALUE"


def test_event_relation_who_caps(store: OrgStore) -> None:
    """Reference §3.3: related whos are up to 50 contacts or one lead."""
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
        contacts = [txn.create("Contact", {"LastName": f"C{n}"}) for n in range(51)]
        leads = [txn.create("Lead", {"LastName": f"L{n}", "Company": "Co"}) for n in range(2)]
    with store.transaction(ctx(store)) as txn:
        for contact in contacts[:50]:
            txn.create("EventRelation", {"EventId": event_id, "RelationId": contact, "IsParent": True})
    for who in (contacts[50], leads[0]):
        with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
            txn.create("EventRelation", {"EventId": event_id, "RelationId": who, "IsParent": True})
        assert info.value.error_code in ("LIMIT_EXCEEDED", "FIELD_INTEGRITY_EXCEPTION")


def test_event_relation_invitee_cap(store: OrgStore) -> None:
    """Reference §3.3: at most 1,000 invitees on one event."""
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
        for n in range(1000):
            contact = txn.create("Contact", {"LastName": f"C{n}"})
            txn.create("EventRelation", {"EventId": event_id, "RelationId": contact})
        extra = txn.create("Contact", {"LastName": "one too many"})
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.create("EventRelation", {"EventId": event_id, "RelationId": extra})
    assert info.value.error_code == "LIMIT_EXCEEDED"


# -- lead conversion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("emit", [True, False])
def test_lead_conversion(pub: RecordingPublisher, emit: bool) -> None:
    """Reference §3.4: Account + Contact created, Lead converted, its Events re-pointed, one transaction."""
    org = load_org(None)
    org = replace(org, streaming=replace(org.streaming, emit_event_updates_on_lead_convert=emit))
    store = make_store(pub, org)
    lead = first_id(store, "Lead")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event(WhoId=lead))
    result = store.convert_lead(lead, DmlContext(store.integration_user_id, ""))
    converted = store.get("Lead", lead)
    assert converted["IsConverted"] is True and converted["Status"] == "Closed - Converted"
    assert (converted["ConvertedContactId"], converted["ConvertedAccountId"]) == (
        result["contactId"],
        result["accountId"],
    )
    assert store.get("Contact", result["contactId"])["AccountId"] == result["accountId"]
    moved = store.get("Event", event_id)
    assert (moved["WhoId"], moved["AccountId"]) == (result["contactId"], result["accountId"])
    batch = pub.batches[-1]
    expected = [("Account", "CREATE"), ("Contact", "CREATE"), ("Lead", "UPDATE")]
    expected += [("Event", "UPDATE")] if emit else []
    assert [(e.entity, e.change_type) for e in batch] == expected
    assert [e.sequence_number for e in batch] == list(range(1, len(batch) + 1))
    assert "IsConverted" in batch[2].changed_fields


def test_lead_conversion_moves_event_relations(store: OrgStore) -> None:
    """EventRelations naming the Lead name the new Contact after conversion."""
    lead = first_id(store, "Lead")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
        relation = txn.create("EventRelation", {"EventId": event_id, "RelationId": lead, "IsParent": True})
    result = store.convert_lead(lead, ctx(store))
    assert store.get("EventRelation", relation)["RelationId"] == result["contactId"]


def test_lead_conversion_with_opportunity_moves_what(store: OrgStore) -> None:
    """With an Opportunity, the Lead's Events get WhatId = the Opportunity."""
    lead = first_id(store, "Lead")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event(WhoId=lead))
    result = store.convert_lead(lead, ctx(store), create_opportunity=True)
    assert store.get("Event", event_id)["WhatId"] == result["opportunityId"]


@pytest.mark.parametrize("action", ["convert again", "update the lead", "use it as WhoId", "invite it"])
def test_a_converted_lead_can_be_neither_changed_nor_referenced(store: OrgStore, action: str) -> None:
    """After conversion the Lead is read-only and lookups to it fail with CANNOT_UPDATE_CONVERTED_LEAD."""
    lead = first_id(store, "Lead")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event())
    store.convert_lead(lead, ctx(store))
    with pytest.raises(ApiError) as info:
        if action == "convert again":
            store.convert_lead(lead, ctx(store))
        with store.transaction(ctx(store)) as txn:
            if action == "update the lead":
                txn.update("Lead", lead, {"Company": "Other"})
            elif action == "use it as WhoId":
                txn.update("Event", event_id, {"WhoId": lead})
            else:
                txn.create("EventRelation", {"EventId": event_id, "RelationId": lead})
    assert (info.value.status, info.value.error_code) == (400, "CANNOT_UPDATE_CONVERTED_LEAD")


# -- persistence, reset, seed --------------------------------------------------------------------------------


def test_state_file_survives_a_restart(pub: RecordingPublisher, tmp_path: Path) -> None:
    """With a state file, records (deleted ones too) survive a new OrgStore; new ids never collide."""
    state = tmp_path / "org.sqlite"
    first = make_store(pub, state=state)
    with first.transaction(ctx(first)) as txn:
        kept = txn.create("Event", event(Scheduling_Booking_Id__c="B-1"))
        gone = txn.create("Event", event())
        txn.delete(gone)
    first.close()
    second = make_store(pub, state=state)
    assert second.get("Event", kept)["StartDateTime"] == "2024-06-12T15:00:00.000+0000"
    assert second.get_by_external_id("Event", "Scheduling_Booking_Id__c", "B-1")["Id"] == kept
    assert [r["Id"] for r in second.records("Event", include_deleted=True)] == [kept, gone]
    with second.transaction(ctx(second)) as txn:
        newer = txn.create("Event", event())
        txn.undelete(gone)
    assert newer not in (kept, gone)
    second.close()


def test_users_created_through_rest_survive_a_restart(pub: RecordingPublisher, tmp_path: Path) -> None:
    """A User created via REST is found by id and username after a restart; seed passwords still work."""
    state = tmp_path / "org.sqlite"
    first = make_store(pub, state=state)
    with first.transaction(ctx(first)) as txn:
        user_id = txn.create("User", {"LastName": "N", "Username": "n@example.com", "Email": "n@example.com"})
    first.close()
    second = make_store(pub, state=state)
    assert second.user_by_username("n@example.com") == second.user_by_id(user_id)
    assert second.authenticate("bridge@example.com", "emulator") is not None


def test_any_exception_inside_a_transaction_rolls_it_back(store: OrgStore, pub: RecordingPublisher) -> None:
    """Not only ApiError: a programming error inside transaction() also leaves nothing behind."""
    with pytest.raises(ZeroDivisionError), store.transaction(ctx(store)) as txn:
        txn.create("Event", event())
        _ = 1 / 0
    assert store.records("Event", include_deleted=True) == [] and pub.batches == []


def test_rolled_back_work_is_not_persisted(pub: RecordingPublisher, tmp_path: Path) -> None:
    """Only committed transactions reach the state file."""
    state = tmp_path / "org.sqlite"
    first = make_store(pub, state=state)
    with pytest.raises(ApiError), first.transaction(ctx(first)) as txn:
        txn.create("Event", event())
        txn.create("Event", event(Subject="x" * 300))
    first.close()
    assert make_store(pub, state=state).records("Event") == []


def test_reset_returns_to_the_seed(pub: RecordingPublisher, tmp_path: Path) -> None:
    """reset() empties the org back to its seed records, with the same seed ids, also in the state file."""
    store = make_store(pub, state=tmp_path / "org.sqlite")
    seed_contacts = store.records("Contact")
    with store.transaction(ctx(store)) as txn:
        txn.create("Contact", {"LastName": "Extra"})
        txn.delete(seed_contacts[0]["Id"])
    store.reset()
    assert store.records("Contact") == seed_contacts
    store.close()
    assert make_store(pub, state=tmp_path / "org.sqlite").records("Contact") == seed_contacts


def test_default_org_seed(store: OrgStore) -> None:
    """CONTRACT §6: the default org has users (one inactive), an account with contacts, and a lead."""
    assert store.org.accept_any_client and store.org.daily_api_requests == 15000
    assert store.org.streaming.cdc_entities == ("Event", "Lead", "Contact", "Mogli_Event__c")
    contacts = store.records("Contact")
    assert contacts and all(c["AccountId"] == first_id(store, "Account") for c in contacts)
    assert store.query("SELECT COUNT() FROM User WHERE IsActive = false").total_size == 1


def test_org_file_from_disk(pub: RecordingPublisher, tmp_path: Path) -> None:
    """An org file sets switches, clients, streaming settings and custom objects."""
    (tmp_path / "jwt.pem").write_text("PEM")
    path = tmp_path / "org.toml"
    path.write_text(
        '[org]\naccept_any_client = false\njwt_public_key_file = "jwt.pem"\nmultiday_events = true\n'
        '[[clients]]\nclient_id = "cid"\nclient_secret = "sec"\n'
        "[streaming]\nlong_poll_timeout_seconds = 2.5\nretention_seconds = 60\nsomething_else = 1\n"
        '[[users]]\nusername = "x@example.com"\nemail = "x@example.com"\nlast_name = "X"\npassword = "p"\n'
    )
    org = load_org(path)
    assert (org.accept_any_client, org.clients, org.jwt_public_key_pem, org.multiday_events) == (
        False,
        {"cid": "sec"},
        "PEM",
        True,
    )
    assert org.streaming == StreamingSettings(
        long_poll_timeout_seconds=2.5, retention_seconds=60, extra={"something_else": 1}
    )
    assert make_store(pub, org).integration_user_id == org.seed.users[0].id


_USER = {"username": "a@example.com", "email": "a@example.com", "last_name": "A"}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({}, "users"),
        ({"users": [{"username": "x"}]}, "users[1].email"),
        ({"users": [_USER], "objects": [{"name": "Bad", "prefix": "a0Z"}]}, "objects[1]"),
        ({"users": [_USER], "fields": [{"object": "Nope", "name": "X__c"}]}, "fields[1].object"),
        ({"users": [_USER], "fields": [{"object": "Event", "name": "NoSuffix"}]}, "fields[1].name"),
        (
            {"users": [_USER], "fields": [{"object": "Event", "name": "X__c", "type": "blob"}]},
            "fields[1].type",
        ),
        ({"users": [_USER], "streaming": [1]}, "streaming"),
        ({"users": [_USER], "org": {"jwt_public_key_file": "/nonexistent.pem"}}, "org.jwt_public_key_file"),
    ],
)
def test_malformed_org_file_names_the_key(data: dict[str, Any], key: str) -> None:
    """A malformed org file is an OrgFileError whose message starts with the offending key."""
    with pytest.raises(OrgFileError) as info:
        parse_org(data, None)
    assert str(info.value).startswith(key)


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ({"sobject": "Nope", "fields": {}}, "records[1].sobject"),
        ({"sobject": "Contact", "fields": {"FirstName": "x"}}, "records[1]: REQUIRED_FIELD_MISSING"),
        (
            {"sobject": "Contact", "fields": {"LastName": "x", "AccountId": "@missing"}},
            "records[1]: MALFORMED_ID",
        ),
    ],
)
def test_bad_seed_record_is_an_org_file_error(
    pub: RecordingPublisher, record: dict[str, Any], key: str
) -> None:
    """A seed record Salesforce would reject stops start-up with an OrgFileError naming the record."""
    org = parse_org({"users": [_USER], "records": [record]}, None)
    with pytest.raises(OrgFileError) as info:
        make_store(pub, org)
    assert str(info.value).startswith(key)


def test_huge_transaction_overflows_into_gap_overflow_per_entity(pub: RecordingPublisher) -> None:
    """Reference §5.4: past the overflow threshold a transaction's remaining changes become one GAP_OVERFLOW
    per entity, without record ids or fields (the threshold is 100,000; `overflow_threshold` lowers it)."""
    org = load_org(None)
    store = make_store(pub, replace(org, streaming=replace(org.streaming, extra={"overflow_threshold": 3})))
    with store.transaction(ctx(store)) as txn:
        for n in range(2):
            txn.create("Event", event(Subject=f"E{n}"))
        txn.create("Contact", {"LastName": "C0"})
        txn.create("Event", event(Subject="E2"))
        txn.create("Contact", {"LastName": "C1"})
        txn.create("Event", event(Subject="E3"))
    batch = pub.batches[-1]
    assert [(e.entity, e.change_type) for e in batch] == [
        ("Event", "CREATE"),
        ("Event", "CREATE"),
        ("Contact", "CREATE"),
        ("Event", "GAP_OVERFLOW"),
        ("Contact", "GAP_OVERFLOW"),
    ]
    assert [e.sequence_number for e in batch] == [1, 2, 3, 4, 5]
    assert (batch[3].record_ids, batch[3].fields) == ((), {})
    assert store.query("SELECT COUNT() FROM Event").total_size == 4


def test_commit_numbers_increase_per_transaction(store: OrgStore, pub: RecordingPublisher) -> None:
    """Every event of one commit shares a commitNumber; later commits have larger ones."""
    for n in range(2):
        with store.transaction(ctx(store)) as txn:
            txn.create("Event", event(Subject=f"a{n}"))
            txn.create("Event", event(Subject=f"b{n}"))
    numbers = [[e.commit_number for e in batch] for batch in pub.batches]
    assert numbers[0][0] == numbers[0][1] < numbers[1][0] == numbers[1][1]


# -- describe ----------------------------------------------------------------------------------------------


def test_describe_reports_custom_fields_and_prefixes(store: OrgStore) -> None:
    """describe lists the Event custom fields (External ID, unique) and WhatId targets, Mogli_Event__c too."""
    described = store.describe("event", "60.0")
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["Scheduling_Booking_Id__c"]["externalId"] and fields["Scheduling_Booking_Id__c"]["unique"]
    assert (fields["Mogli_Event_Id__c"]["type"], fields["Mogli_Event_Id__c"]["length"]) == ("string", 18)
    assert "Mogli_Event__c" in fields["WhatId"]["referenceTo"]
    assert fields["AccountId"]["createable"] is False
    prefixes = {o["name"]: o["keyPrefix"] for o in store.describe_global("60.0")["sobjects"]}
    assert prefixes["Mogli_Event__c"] == "a0X" and prefixes["EventRelation"] == "0RE"
    assert (
        store.sobject_exists("mogli_event__C") and store.canonical_name("mogli_event__C") == "Mogli_Event__c"
    )


def test_query_errors_for_unknown_object(store: OrgStore) -> None:
    """SOQL over an unknown object is INVALID_TYPE; describe of one is NOT_FOUND."""
    with pytest.raises(ApiError) as info:
        store.query("SELECT Id FROM Nope__c")
    assert info.value.error_code == "INVALID_TYPE"
    with pytest.raises(ApiError) as info:
        store.describe("Nope__c", "60.0")
    assert info.value.status == 404


# -- indexed queries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Id = '{0}'", [0]),
        ("Id IN ('{0}', '{1}') AND Subject = 'Call'", [0, 1]),
        ("Id IN ('{0}', '{1}') AND Subject = 'Other'", []),
        ("Scheduling_Booking_Id__c IN ('b-1', 'B-3', 'nope')", [0, 2]),
        ("Scheduling_Booking_Id__c = 'B-2'", [1]),
        ("Scheduling_Booking_Id__c != 'B-2'", [0, 2]),
    ],
)
def test_queries_on_ids_and_external_ids(store: OrgStore, where: str, expected: list[int]) -> None:
    """Queries by Id (any case, 15 or 18) and External ID values find exactly the live matching rows."""
    with store.transaction(ctx(store)) as txn:
        ids = [txn.create("Event", event(Scheduling_Booking_Id__c=f"B-{n}")) for n in (1, 2, 3)]
        gone = txn.create("Event", event(Scheduling_Booking_Id__c="B-4"))
        txn.delete(gone)
    forms = [ids[0][:15], ids[1].lower()]
    result = store.query(f"SELECT Id FROM Event WHERE {where.format(*forms)}")
    assert sorted(r["Id"] for r in result.records) == sorted(ids[n] for n in expected)


def test_parent_relationship_fields_nest_under_the_relationship(store: OrgStore) -> None:
    """`Who.Name` nests as {"attributes": {"type": "Name", ...}, "Name": ...}; an empty lookup is null."""
    contact = first_id(store, "Contact")
    with store.transaction(ctx(store)) as txn:
        event_id = txn.create("Event", event(WhoId=contact))
    [record] = store.query("SELECT Id, Who.Name, Who.Type, What.Name, Owner.Username FROM Event").records
    assert record == {
        "attributes": {"type": "Event", "url": f"/services/data/v62.0/sobjects/Event/{event_id}"},
        "Id": event_id,
        "Who": {
            "attributes": {"type": "Name", "url": f"/services/data/v62.0/sobjects/Contact/{contact}"},
            "Name": store.get("Contact", contact)["Name"],
            "Type": "Contact",
        },
        "What": None,
        "Owner": {
            "attributes": {
                "type": "User",
                "url": f"/services/data/v62.0/sobjects/User/{store.integration_user_id}",
            },
            "Username": "bridge@example.com",
        },
    }


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT Subject FROM Event WHERE Who.Type = 'Lead'", ["lead"]),
        ("SELECT Subject FROM Event WHERE Who.Type != 'Lead' ORDER BY Subject", ["contact", "none"]),
        ("SELECT Subject FROM Event WHERE Account.Name LIKE 'Acme%'", ["contact"]),
        ("SELECT Subject FROM Event ORDER BY Who.Name NULLS LAST", ["lead", "contact", "none"]),
    ],
)
def test_parent_relationship_fields_filter_and_sort(store: OrgStore, soql: str, expected: list[str]) -> None:
    """Parent fields work in WHERE and ORDER BY (Lee Prospect sorts before Sam Sample / Kim Example)."""
    contact = str(store.query("SELECT Id FROM Contact WHERE Name = 'Sam Sample'").records[0]["Id"])
    with store.transaction(ctx(store)) as txn:
        txn.create("Event", event(Subject="contact", WhoId=contact))
        txn.create("Event", event(Subject="lead", WhoId=first_id(store, "Lead")))
        txn.create("Event", event(Subject="none"))
    assert [r["Subject"] for r in store.query(soql).records] == expected


@pytest.mark.parametrize(
    ("soql", "entity"),
    [
        ("SELECT Nope.Name FROM Event", "Event"),
        ("SELECT Account.Foo FROM Contact", "Account"),
        ("SELECT Who.Company FROM Event", "Name"),
        ("SELECT Account.Owner.Name FROM Contact", "Contact"),
    ],
)
def test_unknown_relationship_fields_are_invalid_field(store: OrgStore, soql: str, entity: str) -> None:
    """An unknown relationship, parent field, or a second level is INVALID_FIELD naming the entity."""
    with pytest.raises(ApiError) as info:
        store.query(soql)
    assert info.value.error_code == "INVALID_FIELD" and f"on entity '{entity}'" in info.value.message


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT COUNT(Id) FROM Contact", {"expr0": 2}),
        ("SELECT COUNT(Email) n FROM Contact WHERE Name LIKE 'Sam%'", {"n": 1}),
        ("SELECT COUNT(Phone) FROM Contact", {"expr0": 0}),
    ],
)
def test_count_of_a_field_is_an_aggregate_result(
    store: OrgStore, soql: str, expected: dict[str, int]
) -> None:
    """COUNT(field) [alias] answers one AggregateResult row counting non-null values."""
    result = store.query(soql)
    assert result.total_size == 1
    assert result.records == [{"attributes": {"type": "AggregateResult"}, **expected}]


def test_count_mixed_with_fields_is_malformed(store: OrgStore) -> None:
    """An aggregate next to plain fields needs GROUP BY, which the subset lacks: MALFORMED_QUERY."""
    with pytest.raises(ApiError) as info:
        store.query("SELECT COUNT(Id), Name FROM Contact")
    assert info.value.error_code == "MALFORMED_QUERY"


def test_query_all_by_external_id_includes_deleted(store: OrgStore) -> None:
    """queryAll by External ID value also finds records in the recycle bin."""
    with store.transaction(ctx(store)) as txn:
        gone = txn.create("Event", event(Scheduling_Booking_Id__c="B-9"))
        txn.delete(gone)
    soql = "SELECT Id, IsDeleted FROM Event WHERE Scheduling_Booking_Id__c = 'B-9'"
    assert store.query(soql).records == []
    assert [r["IsDeleted"] for r in store.query(soql, include_deleted=True).records] == [True]
