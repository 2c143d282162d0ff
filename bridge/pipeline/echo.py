"""Echo suppression on the source side: the bridge's own write-backs are not new work.

`EchoFilter` wraps a ChangeSource. Transactions written under a replication origin whose name starts with
the bridge's prefix (`mogli_bridge_writer`, see `bridge/source/writeback.py`) are passed on without their
changes, so their LSN is still made durable and acknowledged but the ledger sees nothing to do. The
inbound pipeline already wrote the same values to the ledger when it decided on the write-back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import structlog

from bridge.pipeline.ports import ChangeSource
from bridge.records.source import SourceTransaction

log = structlog.get_logger(__name__)

DEFAULT_PREFIX = "mogli_bridge"


def is_own_write(txn: SourceTransaction, prefix: str = DEFAULT_PREFIX) -> bool:
    """True when the transaction was committed under one of the bridge's replication origins."""
    return txn.origin is not None and txn.origin.startswith(prefix)


class EchoFilter:
    """A ChangeSource that empties the bridge's own transactions and passes everything else through."""

    def __init__(self, source: ChangeSource, prefix: str = DEFAULT_PREFIX) -> None:
        self._source = source
        self._prefix = prefix
        self.suppressed = 0

    async def transactions(self) -> AsyncIterator[SourceTransaction]:
        """The wrapped source's transactions, the bridge's own ones without changes."""
        async for txn in self._source.transactions():
            if is_own_write(txn, self._prefix) and txn.changes:
                self.suppressed += 1
                log.debug("echo.source_write_suppressed", lsn=txn.end_lsn, changes=len(txn.changes))
                yield replace(txn, changes=())
            else:
                yield txn

    @property
    def behind(self) -> bool:
        """Whether the wrapped source is working through a backlog."""
        return self._source.behind

    def acknowledge(self, lsn: int) -> None:
        """Pass the acknowledgement through."""
        self._source.acknowledge(lsn)
