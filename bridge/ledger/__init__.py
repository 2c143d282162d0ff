"""The ledger: SQL tables (Alembic reads `tables.Base.metadata`), the outbox, and the repository over them
(`bridge.ledger.repository.Ledger`, imported from its module: this package face imports no module that
imports it back).

Holds no business rules: the rules in `bridge/rules/` decide what to write; the ledger remembers the
mirror of the source, the desired Salesforce state, and every outcome.
"""

from bridge.ledger.engine import make_engine, normalise_url
from bridge.ledger.migrate import current_revision, head_revision, upgrade_to_head
from bridge.records.ledger import (
    ActivityRecord,
    ActivitySyncState,
    Direction,
    DriftItem,
    FailureRecord,
    IngestBatch,
    IngestSummary,
    JournalEntry,
    LinkRecord,
    LinkSyncState,
    ReconciliationRun,
)

__all__ = [
    "ActivityRecord",
    "ActivitySyncState",
    "Direction",
    "DriftItem",
    "FailureRecord",
    "IngestBatch",
    "IngestSummary",
    "JournalEntry",
    "LinkRecord",
    "LinkSyncState",
    "ReconciliationRun",
    "current_revision",
    "head_revision",
    "make_engine",
    "normalise_url",
    "upgrade_to_head",
]
