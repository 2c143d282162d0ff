"""Turning one committed transaction's changes into Change Data Capture events (reference §5.2, §5.4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.emulator.contracts import ChangeEvent, DmlContext
from bridge.emulator.store_txn import PendingChange

OVERFLOW_THRESHOLD = 100_000


@dataclass(frozen=True, slots=True)
class Commit:
    """What every event of one commit shares."""

    ctx: DmlContext
    transaction_key: str
    timestamp_ms: int
    number: int


def change_events(
    changes: Sequence[PendingChange], commit: Commit, overflow_at: int = OVERFLOW_THRESHOLD
) -> list[ChangeEvent]:
    """One event per change, numbered 1..n; past `overflow_at` changes, one GAP_OVERFLOW per entity.

    An UPDATE counts once per changed field, every other change once (reference §5.4).
    """
    out: list[ChangeEvent] = []
    counted = 0
    overflowed: list[str] = []
    for change in changes:
        counted += max(len(change.changed_fields), 1)
        if counted > overflow_at:
            if change.entity not in overflowed:
                overflowed.append(change.entity)
            continue
        out.append(
            _event(change.entity, change.change_type, (change.record_id,), change, commit, len(out) + 1)
        )
    for entity in overflowed:
        out.append(_event(entity, "GAP_OVERFLOW", (), None, commit, len(out) + 1))
    return out


def _event(
    entity: str,
    change_type: str,
    record_ids: tuple[str, ...],
    change: PendingChange | None,
    commit: Commit,
    sequence_number: int,
) -> ChangeEvent:
    return ChangeEvent(
        entity=entity,
        change_type=change_type,
        record_ids=record_ids,
        fields=change.fields if change is not None else {},
        changed_fields=change.changed_fields if change is not None else (),
        change_origin=commit.ctx.change_origin,
        commit_user=commit.ctx.user_id,
        transaction_key=commit.transaction_key,
        sequence_number=sequence_number,
        commit_timestamp_ms=commit.timestamp_ms,
        commit_number=commit.number,
        record_values=(change.snapshot,) if change is not None else (),
    )
