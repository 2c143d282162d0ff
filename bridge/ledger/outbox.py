"""The outbox side of the ledger: claiming pending links and activities, recording push outcomes.

Claims take no lock (one worker pushes); instead every outcome write compares the version it was claimed
at, so a source change that lands between claim and record leaves the row pending for the next round.

In a scoped ledger (ledger/scope.py) claims return only the scope's org's rows, and every recording
transaction passes `gate.admitted` first: an outcome for a row of another org changes nothing and is logged.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping

from bridge.ledger.gate import admitted
from bridge.ledger.journal import outbound_row
from bridge.ledger.scope import scope_of
from bridge.ledger.tables import ACTIVITIES, JOURNAL, LINKS, USERS, UtcDateTime
from bridge.ledger.workset import Row, chunked, insert_many
from bridge.records.ledger import ActivitySyncState as A
from bridge.records.ledger import LinkSyncState as L
from bridge.records.outbound import ActivityOutcome, ActivityWork, LinkOutcome, LinkWork, OutcomeState
from bridge.records.source import BookingState, LinkState, UserState

# Error codes of bookings that failed only for want of their link's Mogli Event: the rules' WAITING_CODES
# that wait for a link (tests/unit/test_push_scheduling.py keeps the two in step).
LINK_WAITING_CODES = ("MOGLI_EVENT_PENDING", "MOGLI_EVENT_FAILED", "MOGLI_EVENT_DELETED")
_OWNER = USERS.alias("owner")
_ASSIGNEE = USERS.alias("assignee")
_LINK_ACTIONS = {
    OutcomeState.SYNCED: "salesforce.mogli_event_upserted",
    OutcomeState.FAILED: "salesforce.mogli_event_failed",
    OutcomeState.RETRY: "salesforce.mogli_event_retry",
    OutcomeState.CANCELLED: "salesforce.mogli_event_deleted",
}
_ACTIVITY_ACTIONS = {
    OutcomeState.SYNCED: "salesforce.event_upserted",
    OutcomeState.FAILED: "salesforce.event_failed",
    OutcomeState.RETRY: "salesforce.event_retry",
    OutcomeState.CANCELLED: "salesforce.event_deleted",
}


def _due(table: Table, now: datetime) -> ColumnElement[bool]:
    """Pending at a version not yet written, and not waiting for a retry time."""
    return and_(
        table.c.state == "pending",
        or_(table.c.synced_version.is_(None), table.c.version != table.c.synced_version),
        or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
    )


def _user(mapping: RowMapping, prefix: str) -> UserState | None:
    user_id = mapping[f"{prefix}_user_id"]
    if user_id is None:
        return None
    return UserState(user_id, mapping[f"{prefix}_salesforce_user_id"], mapping[f"{prefix}_org_id"])


def _link_state(mapping: RowMapping | Mapping[str, Any], prefix: str = "") -> LinkState:
    def get(name: str) -> Any:
        return mapping[f"{prefix}{name}"]

    return LinkState(
        link_id=get("link_id"),
        link_type=get("link_type"),
        owner_user_id=get("owner_user_id"),
        title=get("title"),
        description=get("description"),
        duration_minutes=get("duration_minutes"),
        is_active=get("is_active"),
        source_deleted=bool(get("source_deleted")),
        mogli_event_id=get("mogli_event_id"),
        state=get("state"),
        org_id=get("org_id"),
    )


def claim_links(connection: Connection, now: datetime, limit: int) -> list[LinkWork]:
    """Links whose Mogli Event must be written, first booked first, with their owner (the scope's org's)."""
    query = (
        select(
            LINKS,
            _OWNER.c.user_id.label("owner_user_id_"),
            _OWNER.c.salesforce_user_id.label("owner_salesforce_user_id"),
            _OWNER.c.org_id.label("owner_org_id"),
        )
        .outerjoin(_OWNER, _OWNER.c.user_id == LINKS.c.owner_user_id)
        .where(_due(LINKS, now), scope_of(connection).rows(LINKS), scope_of(connection).serving())
        .order_by(func.coalesce(LINKS.c.first_booked_at, LINKS.c.updated_at), LINKS.c.link_id)
        .limit(limit)
    )
    work = []
    for m in connection.execute(query).mappings():
        owner = None
        if m["owner_user_id_"] is not None:
            owner = UserState(m["owner_user_id_"], m["owner_salesforce_user_id"], m["owner_org_id"])
        work.append(LinkWork(link=_link_state(m), owner=owner, version=m["version"], attempts=m["attempts"]))
    return work


def claim_activities(
    connection: Connection, now: datetime, limit: int, exclude: Collection[str] = ()
) -> list[ActivityWork]:
    """Activities ready to push (the scope's org's): their link has its Mogli Event, failed, is missing, or
    they are deletes."""
    link_columns = [c.label(f"l_{c.name}") for c in LINKS.c]
    ready = or_(
        LINKS.c.link_id.is_(None),
        LINKS.c.mogli_event_id.is_not(None),
        LINKS.c.state == L.FAILED.value,
        ACTIVITIES.c.source_deleted.is_(True),
        ACTIVITIES.c.status == "cancelled",
    )
    query = (
        select(
            ACTIVITIES,
            *link_columns,
            _OWNER.c.user_id.label("owner_user_id"),
            _OWNER.c.salesforce_user_id.label("owner_salesforce_user_id"),
            _OWNER.c.org_id.label("owner_org_id"),
            _ASSIGNEE.c.user_id.label("assignee_user_id"),
            _ASSIGNEE.c.salesforce_user_id.label("assignee_salesforce_user_id"),
            _ASSIGNEE.c.org_id.label("assignee_org_id"),
        )
        .outerjoin(LINKS, LINKS.c.link_id == ACTIVITIES.c.link_id)
        .outerjoin(_OWNER, _OWNER.c.user_id == LINKS.c.owner_user_id)
        .outerjoin(_ASSIGNEE, _ASSIGNEE.c.user_id == ACTIVITIES.c.assigned_user_id)
        .where(
            _due(ACTIVITIES, now),
            ready,
            scope_of(connection).rows(ACTIVITIES),
            scope_of(connection).serving(),
        )
        .order_by(ACTIVITIES.c.updated_at, ACTIVITIES.c.booking_id)
        # The excluded (in-flight) ids are filtered here rather than in SQL so that a long list never
        # becomes an unbounded NOT IN.
        .limit(limit + len(exclude))
    )
    excluded = set(exclude)
    work: list[ActivityWork] = []
    for m in connection.execute(query).mappings():
        if m["booking_id"] in excluded:
            continue
        work.append(_activity_work(m))
        if len(work) >= limit:
            break
    return work


def _activity_work(m: RowMapping) -> ActivityWork:
    booking = BookingState(
        booking_id=m["booking_id"],
        link_id=m["link_id"],
        assigned_user_id=m["assigned_user_id"],
        start_at=m["start_at"],
        end_at=m["end_at"],
        status=m["status"],
        related_record_id=m["related_record_id"],
        source_deleted=bool(m["source_deleted"]),
        problems=tuple(m["problems"] or ()),
        org_id=m["org_id"],
    )
    link = _link_state(m, "l_") if m["l_link_id"] is not None else None
    return ActivityWork(
        booking=booking,
        link=link,
        owner=_user(m, "owner"),
        assignee=_user(m, "assignee"),
        activity_id=m["activity_id"],
        state=m["state"],
        version=m["version"],
        attempts=m["attempts"],
    )


# -------------------------------------------------------------------------------- outcomes


def _fresh(table: Table, key: str) -> ColumnElement[bool]:
    return and_(table.c[key] == bindparam("p_key"), table.c.version == bindparam("p_version"))


def _stale(table: Table, key: str) -> ColumnElement[bool]:
    return and_(table.c[key] == bindparam("p_key"), table.c.version != bindparam("p_version"))


def _settled(state: str, now: datetime) -> dict[str, Any]:
    """Columns of a row whose claimed version reached Salesforce."""
    return {
        "state": state,
        "synced_version": bindparam("p_version"),
        "attempts": 0,
        "last_error": None,
        "error_code": None,
        "next_attempt_at": None,
        "synced_at": now,
        "updated_at": now,
    }


def _failure_statements(table: Table, key: str, now: datetime) -> list[tuple[Any, OutcomeState]]:
    """FAILED and RETRY updates for links or activities.

    A stale claim (the row moved to a newer version meanwhile) stays pending and keeps the error, but
    neither counts an attempt against the newer version nor (RETRY) delays it for the old one's fault.
    """
    error = {
        "attempts": table.c.attempts + 1,
        "last_error": bindparam("p_error"),
        "error_code": bindparam("p_code"),
        "updated_at": now,
    }
    retry = {
        "attempts": table.c.attempts + 1,
        "next_attempt_at": bindparam("p_retry_at", type_=UtcDateTime()),
        "last_error": func.coalesce(bindparam("p_error"), table.c.last_error),
        "error_code": func.coalesce(bindparam("p_code"), table.c.error_code),
        "updated_at": now,
    }
    failed = {**error, "state": L.FAILED.value, "next_attempt_at": None}
    stale_error = {k: error[k] for k in ("last_error", "error_code", "updated_at")}
    stale_retry = {k: retry[k] for k in ("last_error", "error_code", "updated_at")}
    # A row that failed at its newer version (a truncate, say) keeps that reason, not the old push's.
    stale = and_(_stale(table, key), table.c.state != L.FAILED.value)
    return [
        (update(table).where(_fresh(table, key)).values(failed), OutcomeState.FAILED),
        (update(table).where(stale).values(stale_error), OutcomeState.FAILED),
        (update(table).where(_fresh(table, key)).values(retry), OutcomeState.RETRY),
        (update(table).where(stale).values(stale_retry), OutcomeState.RETRY),
    ]


def record_links(connection: Connection, outcomes: Sequence[LinkOutcome], now: datetime) -> list[LinkOutcome]:
    """Write link outcomes (one executemany per statement kind) and journal them; returns those recorded."""
    outcomes, orgs = admitted(connection, LINKS, "link_id", outcomes)
    key_mogli: Any = func.coalesce(bindparam("p_mogli"), LINKS.c.mogli_event_id)
    synced = {
        **_settled(L.SYNCED.value, now),
        "mogli_event_id": key_mogli,
        "owner_salesforce_id": func.coalesce(bindparam("p_owner"), LINKS.c.owner_salesforce_id),
    }
    statements = [
        (update(LINKS).where(_fresh(LINKS, "link_id")).values(synced), OutcomeState.SYNCED),
        (
            update(LINKS).where(_stale(LINKS, "link_id")).values(mogli_event_id=key_mogli, updated_at=now),
            OutcomeState.SYNCED,
        ),
        *_failure_statements(LINKS, "link_id", now),
    ]
    params = [_link_params(o) for o in outcomes]
    _execute_grouped(connection, statements, outcomes, params)
    insert_many(connection, JOURNAL, [_link_journal(o, now, orgs[o.link_id]) for o in outcomes])
    _release_waiting(connection, [o.link_id for o in outcomes if o.state is OutcomeState.SYNCED], now)
    return outcomes


def _release_waiting(connection: Connection, link_ids: Sequence[str], now: datetime) -> None:
    """Bookings failed for want of these links' Mogli Events go again, started meetings included.

    A link edit queues only bookings still to come; these failed because the link could not be written,
    so they are owed their Event whenever the Mogli Event exists again.
    """
    for part in chunked(sorted(set(link_ids))):
        waiting = and_(
            ACTIVITIES.c.link_id.in_(part),
            ACTIVITIES.c.state == A.FAILED.value,
            ACTIVITIES.c.error_code.in_(LINK_WAITING_CODES),
        )
        c = ACTIVITIES.c
        rows = connection.execute(
            select(c.booking_id, c.link_id, c.error_code, c.org_id).where(waiting)
        ).all()
        if not rows:
            continue
        values = {
            "state": A.PENDING.value,
            "version": ACTIVITIES.c.version + 1,
            "attempts": 0,
            "next_attempt_at": None,
            "updated_at": now,
        }
        connection.execute(update(ACTIVITIES).where(waiting).values(values))
        action = "ledger.mogli_event_available"
        entries = [
            outbound_row(now, "activity", key, action, {"link_id": link_id, "error_code": code}, org_id)
            for key, link_id, code, org_id in rows
        ]
        insert_many(connection, JOURNAL, entries)


def record_activities(
    connection: Connection, outcomes: Sequence[ActivityOutcome], now: datetime
) -> list[ActivityOutcome]:
    """Write activity outcomes (one executemany per statement kind), journal them; returns those recorded."""
    outcomes, orgs = admitted(connection, ACTIVITIES, "booking_id", outcomes)
    has_fields = bindparam("p_has_fields", type_=Boolean())

    def from_fields(column: str, param: str) -> Any:
        return case((has_fields, bindparam(param)), else_=ACTIVITIES.c[column])

    activity_id: Any = func.coalesce(bindparam("p_activity"), ACTIVITIES.c.activity_id)
    synced = {
        **_settled(A.SYNCED.value, now),
        "activity_id": activity_id,
        "owner_salesforce_id": from_fields("owner_salesforce_id", "p_owner"),
        "who_id": from_fields("who_id", "p_who"),
        "what_id": from_fields("what_id", "p_what"),
    }
    cancelled = {**_settled(A.CANCELLED.value, now), "activity_id": activity_id}
    keep_id = {"activity_id": activity_id, "updated_at": now}
    fresh, stale = _fresh(ACTIVITIES, "booking_id"), _stale(ACTIVITIES, "booking_id")
    statements = [
        (update(ACTIVITIES).where(fresh).values(synced), OutcomeState.SYNCED),
        (update(ACTIVITIES).where(stale).values(keep_id), OutcomeState.SYNCED),
        (update(ACTIVITIES).where(fresh).values(cancelled), OutcomeState.CANCELLED),
        (update(ACTIVITIES).where(stale).values(keep_id), OutcomeState.CANCELLED),
        *_failure_statements(ACTIVITIES, "booking_id", now),
    ]
    params = [_activity_params(o) for o in outcomes]
    _execute_grouped(connection, statements, outcomes, params)
    journal = [_activity_journal(o, now, orgs[o.booking_id]) for o in outcomes]
    insert_many(connection, JOURNAL, journal)
    return outcomes


def _execute_grouped(
    connection: Connection,
    statements: Sequence[tuple[Any, OutcomeState]],
    outcomes: Sequence[LinkOutcome | ActivityOutcome],
    params: Sequence[Row],
) -> None:
    for statement, state in statements:
        group = [p for o, p in zip(outcomes, params, strict=True) if o.state is state]
        for part in chunked(group):
            connection.execute(statement, part)


def _link_params(o: LinkOutcome) -> Row:
    return {
        "p_key": o.link_id,
        "p_version": o.version,
        "p_mogli": o.mogli_event_id,
        "p_owner": o.owner_salesforce_id,
        "p_error": o.error,
        "p_code": o.error_code,
        "p_retry_at": o.retry_at,
    }


def _activity_params(o: ActivityOutcome) -> Row:
    f = o.fields
    return {
        "p_key": o.booking_id,
        "p_version": o.version,
        "p_activity": o.activity_id,
        "p_has_fields": f is not None,
        "p_owner": f.owner_id if f else None,
        "p_who": f.who_id if f else None,
        "p_what": f.what_id if f else None,
        "p_error": o.error,
        "p_code": o.error_code,
        "p_retry_at": o.retry_at,
    }


def _outcome_detail(o: LinkOutcome | ActivityOutcome) -> dict[str, Any]:
    detail: dict[str, Any] = {"version": o.version, "rule": o.rule}
    if o.error_code is not None or o.error is not None:
        detail.update(error_code=o.error_code, error=o.error)
    if o.retry_at is not None:
        detail["retry_at"] = o.retry_at.isoformat()
    return detail


def _link_journal(o: LinkOutcome, now: datetime, org_id: str | None) -> Row:
    detail = _outcome_detail(o)
    detail.update(mogli_event_id=o.mogli_event_id, owner_salesforce_id=o.owner_salesforce_id)
    return outbound_row(now, "link", o.link_id, _LINK_ACTIONS[o.state], detail, org_id)


def _activity_journal(o: ActivityOutcome, now: datetime, org_id: str | None) -> Row:
    detail = _outcome_detail(o)
    detail["activity_id"] = o.activity_id
    if o.fields is not None:
        detail.update(owner_id=o.fields.owner_id, who_id=o.fields.who_id, what_id=o.fields.what_id)
        detail["mogli_event_id"] = o.fields.mogli_event_id
    detail.update(dict(o.detail))
    return outbound_row(now, "activity", o.booking_id, _ACTIVITY_ACTIONS[o.state], detail, org_id)
