"""The emulator's record store: ids, Event validation (reference §3.2), change events (§5), transactions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge import sfid
from bridge.emulator.contracts import ApiError, ChangeEvent, DmlContext
from bridge.emulator.org import OrgConfig, load_org
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

    @property
    def events(self) -> list[ChangeEvent]:
        """Every event, in publish order."""
        return [e for batch in self.batches for e in batch]


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pub() -> RecordingPublisher:
    """A fresh recording publisher."""
    return RecordingPublisher()


@pytest.fixture
def store(pub: RecordingPublisher) -> OrgStore:
    """The default org in memory."""
    return OrgStore(load_org(None), pub, Clock())


def ctx(store: OrgStore, origin: str = REST, user: str | None = None) -> DmlContext:
    """A DML context for the integration user (or `user`)."""
    return DmlContext(user or store.integration_user_id, origin)


def create(store: OrgStore, sobject: str, **fields: Any) -> str:
    """Create one record in its own transaction."""
    with store.transaction(ctx(store)) as txn:
        return txn.create(sobject, fields)


def seed_id(store: OrgStore, sobject: str, where: str = "") -> str:
    """Id of the first seed record of `sobject`."""
    return str(store.query(f"SELECT Id FROM {sobject} {where} ORDER BY Id LIMIT 1").records[0]["Id"])


def event_fields(store: OrgStore, **overrides: Any) -> dict[str, Any]:
    """A valid Event body (Contact WhoId, Mogli Event WhatId) with `overrides` applied."""
    base: dict[str, Any] = {
        "Subject": "Intro call",
        "StartDateTime": "2024-06-12T15:00:00Z",
        "EndDateTime": "2024-06-12T15:30:00Z",
        "WhoId": seed_id(store, "Contact"),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def api_error(store: OrgStore, sobject: str, fields: dict[str, Any]) -> ApiError:
    """The ApiError a create raises."""
    with pytest.raises(ApiError) as info:
        create(store, sobject, **fields)
    return info.value


# -- ids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sobject", "fields", "prefix"),
    [
        ("Account", {"Name": "A"}, "001"),
        ("Contact", {"LastName": "C"}, "003"),
        ("Lead", {"LastName": "L", "Company": "Co"}, "00Q"),
        ("Opportunity", {"Name": "O", "StageName": "Prospecting", "CloseDate": "2024-07-01"}, "006"),
        ("Mogli_Event__c", {"Name": "M", "Scheduling_Link_Id__c": "link-1"}, "a0X"),
        ("User", {"LastName": "U", "Username": "u@example.com", "Email": "u@example.com"}, "005"),
    ],
)
def test_created_ids_are_18_chars_with_checksum_and_key_prefix(
    store: OrgStore, sobject: str, fields: dict[str, Any], prefix: str
) -> None:
    """Reference §3.5: ids are 18 characters, carry the object's key prefix and a valid case checksum."""
    record_id = create(store, sobject, **fields)
    assert len(record_id) == 18 and record_id[:3] == prefix
    assert sfid.checksum(record_id[:15]) == record_id[15:]


def test_event_and_event_relation_prefixes(store: OrgStore) -> None:
    """Events get 00U and EventRelations 0RE."""
    event_id = create(store, "Event", **event_fields(store))
    relation = create(store, "EventRelation", EventId=event_id, RelationId=store.integration_user_id)
    assert (event_id[:3], relation[:3]) == ("00U", "0RE")


@pytest.mark.parametrize("form", ["15", "18-lower", "18-upper"])
def test_reads_accept_15_char_and_case_insensitive_18_char_ids(store: OrgStore, form: str) -> None:
    """Reference §3.5: input ids may be 15 characters or 18 in any case; output is canonical 18."""
    account = create(store, "Account", Name="Acme 2")
    given = {"15": account[:15], "18-lower": account.lower(), "18-upper": account.upper()}[form]
    assert store.get("Account", given)["Id"] == account


@pytest.mark.parametrize(
    ("record_id", "status", "code"),
    [("not-an-id", 400, "MALFORMED_ID"), ("001Em9999999999", 404, "NOT_FOUND")],
)
def test_get_errors(store: OrgStore, record_id: str, status: int, code: str) -> None:
    """A malformed id is MALFORMED_ID; a well-formed unknown id is 404 NOT_FOUND."""
    with pytest.raises(ApiError) as info:
        store.get("Account", record_id)
    assert (info.value.status, info.value.error_code) == (status, code)


def test_get_with_wrong_object_type_is_not_found(store: OrgStore) -> None:
    """GET /sobjects/Contact/{an Account id} answers 404."""
    with pytest.raises(ApiError) as info:
        store.get("Contact", seed_id(store, "Account"))
    assert info.value.error_code == "NOT_FOUND"


def test_datetimes_are_stored_to_the_second(pub: RecordingPublisher) -> None:
    """Datetime fields keep whole seconds: input and system timestamps render with `.000`."""
    clock = Clock()
    clock.now = NOW.replace(microsecond=987654)
    store = OrgStore(load_org(None), pub, clock)
    event_id = create(store, "Event", **event_fields(store, StartDateTime="2024-06-12T15:00:00.250Z"))
    record = store.get("Event", event_id)
    assert (record["StartDateTime"], record["CreatedDate"]) == (
        "2024-06-12T15:00:00.000+0000",
        "2024-06-10T16:00:01.000+0000",
    )
    assert pub.batches[-1][0].commit_timestamp_ms == int(NOW.timestamp()) * 1000 + 987


def test_get_with_unknown_field_is_invalid_field(store: OrgStore) -> None:
    """`?fields=` naming an unknown column is INVALID_FIELD in Salesforce's wording."""
    with pytest.raises(ApiError) as info:
        store.get("Account", seed_id(store, "Account"), ["Name", "Nope__c"])
    assert (info.value.error_code, info.value.message) == (
        "INVALID_FIELD",
        "No such column 'Nope__c' on sobject of type Account",
    )


@pytest.mark.parametrize(
    ("record_id", "expected"),
    [("00USd0000000001", "Event"), ("a0XEm0000000001MAA", "Mogli_Event__c"), ("zzz000000000000", None)],
)
def test_sobject_for_id_uses_the_key_prefix(store: OrgStore, record_id: str, expected: str | None) -> None:
    """The object of an id is read from its key prefix, custom prefixes included."""
    assert store.sobject_for_id(record_id) == expected


def test_upsert_by_id_updates_that_record(store: OrgStore) -> None:
    """`Id` works as the upsert key: an existing id updates (created=False)."""
    account = seed_id(store, "Account")
    with store.transaction(ctx(store)) as txn:
        assert txn.upsert("Account", "Id", account[:15], {"Name": "Renamed"}) == (account, False)
    assert store.get("Account", account)["Name"] == "Renamed"


def test_record_json_shape(store: OrgStore) -> None:
    """Reference §2.1: attributes carry type and versioned url; datetimes render as `...000+0000`."""
    event_id = create(store, "Event", **event_fields(store, StartDateTime="2024-06-12T17:00:00+02:00"))
    record = store.get("event", event_id, ["subject", "StartDateTime"], api_version="60.0")
    assert record == {
        "attributes": {"type": "Event", "url": f"/services/data/v60.0/sobjects/Event/{event_id}"},
        "Subject": "Intro call",
        "StartDateTime": "2024-06-12T15:00:00.000+0000",
    }


# -- Event validation -------------------------------------------------------------------------------------

VALIDATION_CASES: list[tuple[str, dict[str, Any], str, list[str], str]] = [
    (
        "WhoId must be Contact or Lead",
        {"WhoId": "@account"},
        "FIELD_INTEGRITY_EXCEPTION",
        ["WhoId"],
        "Name ID: id value of incorrect type: 001",
    ),
    (
        "Lead WhoId forbids WhatId",
        {"WhoId": "@lead", "WhatId": "@account"},
        "FIELD_INTEGRITY_EXCEPTION",
        ["WhatId"],
        "",
    ),
    (
        "timed event needs end or duration",
        {"EndDateTime": None},
        "REQUIRED_FIELD_MISSING",
        ["DurationInMinutes"],
        "Required fields are missing",
    ),
    (
        "end and duration must agree",
        {"DurationInMinutes": 45},
        "FIELD_INTEGRITY_EXCEPTION",
        ["EndDateTime", "DurationInMinutes"],
        "",
    ),
    (
        "end not before start",
        {"EndDateTime": "2024-06-12T14:00:00Z"},
        "FIELD_INTEGRITY_EXCEPTION",
        ["EndDateTime"],
        "",
    ),
    (
        "duration capped at 1440",
        {"EndDateTime": None, "DurationInMinutes": 1441},
        "FIELD_INTEGRITY_EXCEPTION",
        ["DurationInMinutes"],
        "Duration must be between 0 and 1440 minutes",
    ),
    (
        "Subject at most 255",
        {"Subject": "x" * 256},
        "STRING_TOO_LONG",
        ["Subject"],
        "Subject: data value too large",
    ),
    ("Description at most 32000", {"Description": "x" * 32001}, "STRING_TOO_LONG", ["Description"], ""),
    ("Owner must be active", {"OwnerId": "@inactive"}, "INACTIVE_OWNER_OR_USER", ["OwnerId"], ""),
    ("Owner must exist", {"OwnerId": "005Em9999999999"}, "INVALID_CROSS_REFERENCE_KEY", ["OwnerId"], ""),
    ("Owner must be a User", {"OwnerId": "@account"}, "FIELD_INTEGRITY_EXCEPTION", ["OwnerId"], ""),
    ("WhatId must exist", {"WhatId": "a0XEm9999999999"}, "INVALID_CROSS_REFERENCE_KEY", ["WhatId"], ""),
    ("WhatId must not be a Contact", {"WhatId": "@contact"}, "FIELD_INTEGRITY_EXCEPTION", ["WhatId"], ""),
    (
        "WhatId must not be deleted",
        {"WhatId": "@deleted"},
        "ENTITY_IS_DELETED",
        ["WhatId"],
        "entity is deleted",
    ),
    ("WhoId must be a well-formed id", {"WhoId": "xyz"}, "MALFORMED_ID", ["WhoId"], ""),
    (
        "unknown field",
        {"Foo__c": 1},
        "INVALID_FIELD",
        ["Foo__c"],
        "No such column 'Foo__c' on sobject of type Event",
    ),
    ("read-only field", {"AccountId": "@account"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["AccountId"], ""),
    (
        "datetime must parse",
        {"StartDateTime": "tomorrow"},
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        ["StartDateTime"],
        "",
    ),
    (
        "boolean must be boolean",
        {"IsAllDayEvent": 3},
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        ["IsAllDayEvent"],
        "",
    ),
]


def _resolve(store: OrgStore, fields: dict[str, Any]) -> dict[str, Any]:
    """Replace `@account`, `@lead`, ... with ids of matching records."""
    deleted = create(store, "Mogli_Event__c", Name="gone", Scheduling_Link_Id__c="gone")
    with store.transaction(ctx(store)) as txn:
        txn.delete(deleted)
    refs = {
        "@account": seed_id(store, "Account"),
        "@lead": seed_id(store, "Lead"),
        "@contact": seed_id(store, "Contact"),
        "@inactive": str(store.query("SELECT Id FROM User WHERE IsActive = false").records[0]["Id"]),
        "@deleted": deleted,
    }
    return {k: refs.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}


@pytest.mark.parametrize(
    ("rule", "overrides", "code", "fields", "message"), VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES]
)
def test_event_validation_rules(
    store: OrgStore, rule: str, overrides: dict[str, Any], code: str, fields: list[str], message: str
) -> None:
    """Reference §3.2 / §2.5: an invalid Event is rejected with Salesforce's code, fields and message."""
    body = event_fields(store, **_resolve(store, overrides))
    if overrides.get("EndDateTime", "") is None:
        body.pop("EndDateTime", None)
    error = api_error(store, "Event", body)
    assert (error.status, error.error_code, error.fields) == (400, code, fields)
    assert error.message.startswith(message)
    assert store.query("SELECT COUNT() FROM Event").total_size == 0


def test_duplicate_booking_external_id_is_duplicate_value(store: OrgStore) -> None:
    """A unique External ID value already on a live record gives DUPLICATE_VALUE naming that record."""
    first = create(store, "Event", **event_fields(store, Scheduling_Booking_Id__c="B-1"))
    error = api_error(store, "Event", event_fields(store, Scheduling_Booking_Id__c="b-1"))
    assert error.error_code == "DUPLICATE_VALUE" and first in error.message


@pytest.mark.parametrize(
    ("switch", "overrides"),
    [
        ("multiday_events", {"EndDateTime": None, "DurationInMinutes": 2 * 1440}),
        ("lead_whatid_rule", {"WhoId": "@lead", "WhatId": "@account"}),
    ],
)
def test_org_switches_relax_rules(pub: RecordingPublisher, switch: str, overrides: dict[str, Any]) -> None:
    """The org file's multiday_events allows up to 14 days; lead_whatid_rule=false allows Lead + WhatId."""
    org = load_org(None)
    flipped = {"multiday_events": True, "lead_whatid_rule": False}[switch]
    store = OrgStore(_replace(org, **{switch: flipped}), pub, Clock())
    body = event_fields(store, **_resolve(store, overrides))
    body.pop("EndDateTime", None) if "DurationInMinutes" in overrides else None
    event_id = create(store, "Event", **body)
    assert store.get("Event", event_id)["Id"] == event_id


def _replace(org: OrgConfig, **changes: Any) -> OrgConfig:
    from dataclasses import replace

    return replace(org, **changes)


def test_all_day_event_longer_than_a_day_needs_multiday(store: OrgStore) -> None:
    """An all-day event spanning two days breaks the 1,440-minute cap unless multiday events are on."""
    body = {
        "Subject": "Offsite",
        "IsAllDayEvent": True,
        "ActivityDate": "2024-06-12",
        "DurationInMinutes": 2880,
    }
    error = api_error(store, "Event", body)
    assert (error.error_code, error.fields) == ("FIELD_INTEGRITY_EXCEPTION", ["DurationInMinutes"])


def test_unknown_object_is_not_found(store: OrgStore) -> None:
    """DML, reads and the record listing of an object the org lacks answer 404 NOT_FOUND."""
    for action in (lambda: store.records("Nope__c"), lambda: store.get("Nope__c", "001Sd0000000001")):
        with pytest.raises(ApiError) as info:
            action()
        assert (info.value.status, info.value.error_code) == (404, "NOT_FOUND")
    assert api_error(store, "Nope__c", {"Name": "x"}).error_code == "NOT_FOUND"


def test_multiday_cap_is_14_days(pub: RecordingPublisher) -> None:
    """With multiday events on, more than 20,160 minutes is still rejected."""
    store = OrgStore(_replace(load_org(None), multiday_events=True), pub, Clock())
    body = event_fields(store, EndDateTime=None, DurationInMinutes=20161)
    error = api_error(store, "Event", body)
    assert error.message == "Duration must be between 0 and 20160 minutes"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"DurationInMinutes": 45, "EndDateTime": None}, {"EndDateTime": "2024-06-12T15:45:00.000+0000"}),
        ({}, {"DurationInMinutes": 30, "ActivityDateTime": "2024-06-12T15:00:00.000+0000"}),
        ({}, {"ActivityDate": "2024-06-12", "AccountId": "@account"}),
        ({"WhoId": None, "WhatId": "@account"}, {"AccountId": "@account"}),
        (
            {"IsAllDayEvent": True, "StartDateTime": None, "EndDateTime": None, "ActivityDate": "2024-06-12"},
            {
                "DurationInMinutes": 1440,
                "ActivityDateTime": None,
                "StartDateTime": "2024-06-12T00:00:00.000+0000",
            },
        ),
    ],
)
def test_event_derived_fields(store: OrgStore, given: dict[str, Any], expected: dict[str, Any]) -> None:
    """Reference §3.1: End or Duration, ActivityDateTime, ActivityDate and AccountId are derived."""
    body = event_fields(store, **_resolve(store, given))
    for key, value in given.items():
        if value is None:
            body.pop(key, None)
    record = store.get("Event", create(store, "Event", **body))
    account = seed_id(store, "Account")
    assert {k: record[k] for k in expected} == {
        k: account if v == "@account" else v for k, v in expected.items()
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"StartDateTime": "2024-06-12T16:00:00Z"}, ("2024-06-12T16:30:00.000+0000", 30)),
        ({"EndDateTime": "2024-06-12T16:00:00Z"}, ("2024-06-12T16:00:00.000+0000", 60)),
        ({"DurationInMinutes": 15}, ("2024-06-12T15:15:00.000+0000", 15)),
    ],
)
def test_update_revalidates_and_rederives_the_merged_record(
    store: OrgStore, change: dict[str, Any], expected: tuple[str, int]
) -> None:
    """A partial update of start, end or duration keeps the other two consistent."""
    event_id = create(store, "Event", **event_fields(store))
    with store.transaction(ctx(store)) as txn:
        txn.update("Event", event_id, change)
    record = store.get("Event", event_id)
    assert (record["EndDateTime"], record["DurationInMinutes"]) == expected


def test_update_with_explicit_nulls_clears_fields(store: OrgStore) -> None:
    """Null values in an update clear WhoId and Description; AccountId is re-derived (to null)."""
    event_id = create(store, "Event", **event_fields(store, Description="text"))
    with store.transaction(ctx(store)) as txn:
        txn.update("Event", event_id, {"WhoId": None, "Description": None})
    record = store.get("Event", event_id)
    assert (record["WhoId"], record["Description"], record["AccountId"]) == (None, None, None)


def test_update_to_lead_who_with_what_is_rejected(store: OrgStore) -> None:
    """Updates re-validate the merged record: a Lead WhoId on an Event that has a WhatId fails."""
    account = seed_id(store, "Account")
    event_id = create(store, "Event", **event_fields(store, WhatId=account))
    with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
        txn.update("Event", event_id, {"WhoId": seed_id(store, "Lead")})
    assert info.value.fields == ["WhatId"]
    assert store.get("Event", event_id)["WhoId"] == seed_id(store, "Contact")


def test_update_of_deleted_record_is_entity_is_deleted(store: OrgStore) -> None:
    """PATCH of a record in the recycle bin answers ENTITY_IS_DELETED."""
    event_id = create(store, "Event", **event_fields(store))
    with store.transaction(ctx(store)) as txn:
        txn.delete(event_id)
    for action in ("update", "delete"):
        with pytest.raises(ApiError) as info, store.transaction(ctx(store)) as txn:
            if action == "update":
                txn.update("Event", event_id, {"Subject": "x"})
            else:
                txn.delete(event_id)
        assert info.value.error_code == "ENTITY_IS_DELETED"


def test_required_fields_missing_lists_them(store: OrgStore) -> None:
    """REQUIRED_FIELD_MISSING names every missing required field."""
    error = api_error(store, "Lead", {"FirstName": "x"})
    assert error.error_code == "REQUIRED_FIELD_MISSING"
    assert error.fields == ["LastName", "Company"]


# -- users ------------------------------------------------------------------------------------------------


def test_user_created_through_rest_is_active_and_found(store: OrgStore) -> None:
    """CONTRACT §6: POST User with LastName, Username, Email; IsActive defaults to true; findable by id."""
    user_id = create(store, "User", LastName="New", Username="new@example.com", Email="new@example.com")
    user = store.user_by_id(user_id)
    assert user is not None and user.is_active and user.username == "new@example.com"
    assert store.user_by_username("NEW@example.com") == user
    assert store.authenticate("new@example.com", "") is None


def test_user_email_must_be_an_address(store: OrgStore) -> None:
    """Email fields reject values that are not addresses with INVALID_EMAIL_ADDRESS."""
    error = api_error(
        store, "User", {"LastName": "x", "Username": "x@example.com", "Email": "not-an-address"}
    )
    assert (error.error_code, error.fields) == ("INVALID_EMAIL_ADDRESS", ["Email"])


def test_default_org_password_grant_user(store: OrgStore) -> None:
    """CONTRACT §6: bridge@example.com / emulator authenticates; a wrong password does not."""
    user = store.authenticate("bridge@example.com", "emulator")
    assert user is not None and user.id == store.integration_user_id
    assert store.authenticate("bridge@example.com", "wrong") is None
    assert store.authenticate("inactive@example.com", "") is None


def test_duplicate_username_is_duplicate_value(store: OrgStore) -> None:
    """Username is unique across the org."""
    error = api_error(
        store, "User", {"LastName": "x", "Username": "bridge@example.com", "Email": "a@example.com"}
    )
    assert error.error_code == "DUPLICATE_VALUE"


# -- change events ----------------------------------------------------------------------------------------


def test_create_change_event_body(store: OrgStore, pub: RecordingPublisher) -> None:
    """Reference §5.2: CREATE carries every non-null field and system fields, never Id/IsDeleted/Modstamp."""
    event_id = create(store, "Event", **event_fields(store))
    (event,) = pub.events
    assert (event.entity, event.change_type, event.record_ids) == ("Event", "CREATE", (event_id,))
    assert event.fields["StartDateTime"] == "2024-06-12T15:00:00.000Z"
    assert event.fields["CreatedById"] == store.integration_user_id
    assert event.fields["LastModifiedDate"] == "2024-06-10T16:00:01.000Z"
    assert not {"Id", "IsDeleted", "SystemModstamp", "Location"} & set(event.fields)
    assert (event.change_origin, event.commit_user, event.commit_timestamp_ms) == (
        REST,
        store.integration_user_id,
        int(NOW.timestamp() * 1000),
    )
    assert event.changed_fields == ()


def test_update_change_event_has_only_changed_fields(store: OrgStore, pub: RecordingPublisher) -> None:
    """Reference §5.2: UPDATE = changed fields + LastModifiedDate (+ LastModifiedById when it changed)."""
    event_id = create(store, "Event", **event_fields(store))
    person = str(store.user_by_username("owner1@example.com").id)  # type: ignore[union-attr]
    with store.transaction(DmlContext(person, "com/salesforce/api/soap/60.0")) as txn:
        txn.update("Event", event_id, {"StartDateTime": "2024-06-13T16:00:00Z", "Subject": "Intro call"})
    update = pub.events[-1]
    assert update.change_type == "UPDATE"
    assert update.changed_fields == (
        "StartDateTime",
        "EndDateTime",
        "ActivityDateTime",
        "ActivityDate",
        "LastModifiedDate",
        "LastModifiedById",
    )
    assert set(update.fields) == set(update.changed_fields)
    assert update.fields["LastModifiedById"] == person == update.commit_user


def test_update_by_same_user_omits_last_modified_by(store: OrgStore, pub: RecordingPublisher) -> None:
    """LastModifiedById appears in an UPDATE only when the modifying user changed."""
    event_id = create(store, "Event", **event_fields(store))
    with store.transaction(ctx(store)) as txn:
        txn.update("Event", event_id, {"Subject": "New"})
    assert pub.events[-1].changed_fields == ("Subject", "LastModifiedDate")


def test_no_op_update_still_publishes_an_update(store: OrgStore, pub: RecordingPublisher) -> None:
    """An update that changes no value is still a save: Salesforce stamps LastModifiedDate and publishes an
    UPDATE whose changedFields name it (Change Event Body Fields, cdc_event_fields_body.htm: "It also
    includes the LastModifiedDate system field")."""
    event_id = create(store, "Event", **event_fields(store))
    with store.transaction(ctx(store)) as txn:
        txn.update("Event", event_id, {"Subject": "Intro call"})
    assert len(pub.batches) == 2
    (update,) = pub.batches[1]
    assert (update.change_type, update.record_ids) == ("UPDATE", (event_id,))
    assert update.changed_fields == ("LastModifiedDate",)
    assert set(update.fields) == {"LastModifiedDate"}


def test_transaction_events_share_key_and_number_in_order(store: OrgStore, pub: RecordingPublisher) -> None:
    """Reference §5.2: one transaction's events share transactionKey; sequenceNumber runs 1..n."""
    with store.transaction(ctx(store)) as txn:
        ids = [txn.create("Event", event_fields(store, Subject=f"E{n}")) for n in range(3)]
        txn.delete(ids[0])
    (batch,) = pub.batches
    assert [e.sequence_number for e in batch] == [1, 2, 3, 4]
    assert len({e.transaction_key for e in batch}) == 1
    assert [e.change_type for e in batch] == ["CREATE", "CREATE", "CREATE", "DELETE"]
    assert batch[-1].fields == {}


def test_failed_transaction_keeps_nothing(store: OrgStore, pub: RecordingPublisher) -> None:
    """An exception inside transaction() rolls back every write and publishes nothing."""
    with pytest.raises(ApiError), store.transaction(ctx(store)) as txn:
        txn.create("Event", event_fields(store))
        txn.create("Event", event_fields(store, WhoId=seed_id(store, "Account")))
    assert store.query("SELECT COUNT() FROM Event").total_size == 0
    assert pub.batches == []


def test_savepoint_rolls_back_one_record(store: OrgStore, pub: RecordingPublisher) -> None:
    """allOrNone=false: a failing record inside savepoint() is undone, the others commit."""
    with store.transaction(ctx(store), all_or_none=False) as txn:
        good = txn.create("Event", event_fields(store, Subject="ok"))
        with pytest.raises(ApiError), txn.savepoint():
            txn.update("Event", good, {"Subject": "changed"})
            txn.create("Event", event_fields(store, Subject="x" * 300))
    assert store.get("Event", good)["Subject"] == "ok"
    assert [e.change_type for e in pub.events] == ["CREATE"]


# -- robustness ---------------------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [
    None,
    "",
    0,
    -1,
    1e30,
    "inf",
    "nan",
    True,
    "x",
    "x" * 300,
    [],
    {},
    ["a"],
    {"a": 1},
    "2024-06-12T15:00:00Z",
    "2024-13-45T99:00:00Z",
    "2024-06-12",
    "005Sd0000000001",
    "00QSd0000000004",
    "001Sd0000000001IAA",
    "a0XEm0000000001",
    "003XXXXXXXXXXXXXXX",
]


@pytest.mark.parametrize("seed", range(40))
def test_arbitrary_field_values_only_ever_raise_api_errors(store: OrgStore, seed: int) -> None:
    """Whatever JSON values arrive for Event fields, create and update answer a record or an ApiError."""
    import random

    rng = random.Random(seed)
    names = ["Subject", "WhoId", "WhatId", "OwnerId", "StartDateTime", "EndDateTime", "DurationInMinutes",
             "ActivityDateTime", "ActivityDate", "IsAllDayEvent", "Description", "ShowAs",
             "Scheduling_Booking_Id__c"]  # fmt: skip
    event_id = create(store, "Event", **event_fields(store))
    for _ in range(25):
        body = {name: rng.choice(_ODD_VALUES) for name in rng.sample(names, rng.randint(1, 5))}
        try:
            with store.transaction(ctx(store)) as txn:
                if rng.random() < 0.5:
                    txn.create("Event", body)
                else:
                    txn.update("Event", event_id, body)
        except ApiError as exc:
            assert exc.status in (300, 400, 404) and exc.error_code
    assert store.get("Event", event_id)["Id"] == event_id
