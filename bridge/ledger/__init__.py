"""The ledger: SQL tables (Alembic reads `tables.Base.metadata`), the outbox, and the repository over them
(`bridge.ledger.repository.Ledger`, imported from its module: this package face imports no module that
imports it back).

Its records (what it answers) live in `bridge/records/ledger.py`. Holds no business rules: the rules in
`bridge/rules/` decide what to write; the ledger remembers the mirror of the source, the desired Salesforce
state, and every outcome.
"""

from bridge.ledger.engine import make_engine, normalise_url
from bridge.ledger.migrate import current_revision, head_revision, upgrade_to_head

__all__ = [
    "current_revision",
    "head_revision",
    "make_engine",
    "normalise_url",
    "upgrade_to_head",
]
