"""Pure rules of the push stage: which claimed rows need a Salesforce call, and what each result means.

Nothing here does I/O; `push.py` drives the calls and records what these functions decide.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bridge.errors import ErrorKind
from bridge.records.outbound import (
    ActivityOutcome,
    ActivityWork,
    LinkOutcome,
    LinkWork,
    MogliEventFields,
    OutcomeState,
    RecordError,
    WriteResult,
)
from bridge.rules.mapping import (
    DeleteEvent,
    FailureCode,
    MappingOptions,
    NothingToDo,
    RuleFailure,
    UpsertEvent,
    event_action,
    mogli_event_for,
)


@dataclass(frozen=True, slots=True)
class PushSettings:
    """Pacing of the push worker."""

    batch_size: int = 200
    max_in_flight: int = 4  # Salesforce calls at once
    # Of those, calls carrying a part-filled batch, per kind (links, activities): more cuts latency at
    # moderate load, fewer saves API calls; a full batch may always take a free slot.
    max_partial_in_flight: int = 2
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 20
    idle_poll_seconds: float = 1.0
    # Above idle_poll_seconds: each idle poll that starts nothing doubles the next, up to this; new work, a
    # started call or the earliest retry this pusher scheduled comes first. None: a constant idle poll.
    idle_poll_max_seconds: float | None = None
    api_limit_wait_seconds: float = 300.0


def retry_delay(attempts: int, settings: PushSettings, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling: float = min(settings.retry_base_seconds * 2.0 ** min(attempts, 20), settings.retry_max_seconds)
    return max(settings.retry_base_seconds, ceiling * rand())


# ---------------------------------------------------------------------------------------------- links


@dataclass(slots=True)
class LinkPlan:
    """Claimed links split into rule failures (settled without a call) and Mogli Events to upsert."""

    outcomes: list[LinkOutcome] = field(default_factory=list)
    writes: list[tuple[LinkWork, MogliEventFields]] = field(default_factory=list)


def plan_links(work: Sequence[LinkWork]) -> LinkPlan:
    """Map every claimed link to its Mogli Event, or to a FAILED outcome when a rule refuses it."""
    plan = LinkPlan()
    for item in work:
        result = mogli_event_for(item)
        if isinstance(result, RuleFailure):
            plan.outcomes.append(
                LinkOutcome(
                    item.link.link_id,
                    item.version,
                    OutcomeState.FAILED,
                    error_code=result.code.value,
                    error=result.message,
                )
            )
        else:
            plan.writes.append((item, result))
    return plan


def link_outcome(
    item: LinkWork, fields: MogliEventFields, res: WriteResult, now: datetime, settings: PushSettings
) -> LinkOutcome:
    """The outcome of one Mogli Event upsert."""
    key, version = item.link.link_id, item.version
    if res.ok:
        return LinkOutcome(
            key,
            version,
            OutcomeState.SYNCED,
            mogli_event_id=res.record_id,
            owner_salesforce_id=fields.owner_id,
            rule="owner=link owner",
        )
    error = _present(res.error)
    if error.kind is ErrorKind.TRANSIENT and item.attempts + 1 < settings.max_attempts:
        retry_at = now + timedelta(seconds=retry_delay(item.attempts, settings))
        return LinkOutcome(
            key, version, OutcomeState.RETRY, error_code=error.code, error=error.message, retry_at=retry_at
        )
    return LinkOutcome(
        key,
        version,
        OutcomeState.FAILED,
        error_code=error.code,
        error=f"Salesforce rejected the Mogli Event: {error.code}: {error.message}",
    )


# ------------------------------------------------------------------------------------------ activities


@dataclass(slots=True)
class ActivityPlan:
    """Claimed bookings split into settled-without-a-call outcomes, Event upserts and Event deletes."""

    outcomes: list[ActivityOutcome] = field(default_factory=list)
    upserts: list[tuple[ActivityWork, UpsertEvent]] = field(default_factory=list)
    deletes: list[tuple[ActivityWork, DeleteEvent]] = field(default_factory=list)


def plan_activities(
    work: Sequence[ActivityWork], options: MappingOptions, now: datetime, settings: PushSettings
) -> ActivityPlan:
    """Apply the mapping rules to every claimed booking."""
    # Longer than most: one branch per kind of mapping action, kept together so they read as one table.
    plan = ActivityPlan()
    for item in work:
        action = event_action(item, options)
        booking_id, version = item.booking.booking_id, item.version
        if isinstance(action, UpsertEvent):
            plan.upserts.append((item, action))
        elif isinstance(action, DeleteEvent):
            plan.deletes.append((item, action))
        elif isinstance(action, NothingToDo):
            plan.outcomes.append(
                ActivityOutcome(
                    booking_id,
                    version,
                    OutcomeState.CANCELLED,
                    activity_id=item.activity_id,
                    rule=action.reason,
                )
            )
        elif action.code is FailureCode.MOGLI_EVENT_PENDING:
            # The link's Mogli Event is on its way; try again shortly rather than fail the booking.
            plan.outcomes.append(
                ActivityOutcome(
                    booking_id,
                    version,
                    OutcomeState.RETRY,
                    error_code=action.code.value,
                    error=action.message,
                    retry_at=now + timedelta(seconds=settings.retry_base_seconds),
                )
            )
        else:
            plan.outcomes.append(
                ActivityOutcome(
                    booking_id,
                    version,
                    OutcomeState.FAILED,
                    error_code=action.code.value,
                    error=action.message,
                )
            )
    return plan


def upsert_outcome(
    item: ActivityWork, action: UpsertEvent, res: WriteResult, now: datetime, settings: PushSettings
) -> ActivityOutcome:
    """The outcome of one Event upsert."""
    if res.ok:
        return ActivityOutcome(
            item.booking.booking_id,
            item.version,
            OutcomeState.SYNCED,
            activity_id=res.record_id,
            fields=action.fields,
            rule=action.rule,
        )
    return failure_outcome(item, res.error, now, "Salesforce rejected the Event", settings)


def failure_outcome(
    item: ActivityWork, error: RecordError | None, now: datetime, what: str, settings: PushSettings
) -> ActivityOutcome:
    """RETRY for a transient error with attempts left, else FAILED naming `what` went wrong."""
    error = _present(error)
    booking_id = item.booking.booking_id
    if error.kind is ErrorKind.TRANSIENT and item.attempts + 1 < settings.max_attempts:
        retry_at = now + timedelta(seconds=retry_delay(item.attempts, settings))
        return ActivityOutcome(
            booking_id,
            item.version,
            OutcomeState.RETRY,
            error_code=error.code,
            error=error.message,
            retry_at=retry_at,
        )
    return ActivityOutcome(
        booking_id,
        item.version,
        OutcomeState.FAILED,
        error_code=error.code,
        error=f"{what}: {error.code}: {error.message}",
    )


def _present(error: RecordError | None) -> RecordError:
    """A failed WriteResult always carries its error; a missing one is a bug in the client."""
    if error is None:
        raise AssertionError("a failed write result carries no error")
    return error
