"""The exception tree of mogli-bridge, drawn whole (tests/unit/test_errors_tree.py holds it to the code).

Exception
└── BridgeError                     root of every error mogli-bridge raises on purpose
    ├── ConfigurationError          stop and say which key to fix (exit code 2 at start-up)
    ├── TransientError              retry with backoff; nothing is wrong with the data
    │   ├── SalesforceUnavailable   5xx, timeouts, dropped connections, UNABLE_TO_LOCK_ROW
    │   ├── ApiLimitExhausted       REQUEST_LIMIT_EXCEEDED: wait until the allocation resets
    │   ├── SourceDisconnected      the replication connection broke; reconnect
    │   └── LedgerUnavailable       the ledger is unreachable or locked; acknowledge nothing meanwhile
    ├── PermanentError              the record cannot be written as it is; record it and move on
    ├── FatalError                  the daemon cannot continue safely (e.g. replication slot dropped)
    └── LeaseLost                   this worker no longer holds the org's lease (fencing); never retried

StrEnum
└── ErrorKind                       how a failure is handled: transient, permanent or configuration
"""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    """How a failure is handled: retried, recorded on the row, or stops the daemon."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIGURATION = "configuration"


class BridgeError(Exception):
    """Root of every error mogli-bridge raises on purpose."""


class ConfigurationError(BridgeError):
    """Settings are wrong or incomplete; the message names the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class TransientError(BridgeError):
    """A failure that goes away by itself; retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SalesforceUnavailable(TransientError):
    """Salesforce did not answer usefully (5xx, timeout, connection reset, row lock)."""


class ApiLimitExhausted(TransientError):
    """The org's daily API allocation is used up (or we chose to stop short of it)."""


class SourceDisconnected(TransientError):
    """The replication connection to the scheduling database broke."""


class LedgerUnavailable(TransientError):
    """The ledger database cannot be reached (or stays locked); nothing is acknowledged until it is back."""


class PermanentError(BridgeError):
    """The data cannot be written as it is; retrying the same request will fail again."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class FatalError(BridgeError):
    """The daemon cannot continue without an operator; the message says what to do."""


class LeaseLost(BridgeError):
    """A fenced ledger write found that this worker no longer holds the org's lease at its epoch.

    Another worker took the org (or the lease expired), so this worker must not record any outcome or
    advance any position for it: the transaction rolled back and nothing changed. Deliberately not a
    TransientError (nor a LedgerUnavailable): retrying the same write with the same fence can never succeed.
    """

    def __init__(self, org_id: str, worker_id: str, epoch: int) -> None:
        super().__init__(f"worker {worker_id} lost the lease of org {org_id} (epoch {epoch})")
        self.org_id = org_id
        self.worker_id = worker_id
        self.epoch = epoch
