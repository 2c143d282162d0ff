"""SOQL resources `/query` and `/queryAll`: batches and server-side cursors behind `nextRecordsUrl`."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ApiError

CURSOR_IDLE_SECONDS = 15 * 60.0  # Salesforce drops a query cursor after 15 minutes without use
MAX_OPEN_CURSORS = 1000


@dataclass(slots=True)
class _Cursor:
    records: Sequence[Any]
    total_size: int
    batch_size: int
    touched: float = field(default=0.0)


class QueryCursors:
    """Open query locators: the rest of a result, served a batch at a time, forgotten when idle."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._open: OrderedDict[str, _Cursor] = OrderedDict()
        self._serial = itertools.count(1)

    def first_page(
        self, records: Sequence[Any], total_size: int, batch_size: int, base: str
    ) -> dict[str, Any]:
        """The first response of a query; opens a cursor when more than one batch is needed."""
        if len(records) <= batch_size:
            return {"totalSize": total_size, "done": True, "records": list(records)}
        locator = sfid.to18(f"01gEm{next(self._serial):010d}")
        self._expire()
        self._open[locator] = _Cursor(records, total_size, batch_size, self._monotonic())
        while len(self._open) > MAX_OPEN_CURSORS:
            self._open.popitem(last=False)
        return self._page(locator, 0, base)

    def next_page(self, locator_and_offset: str, base: str) -> dict[str, Any]:
        """The batch named by `01g...-N`; 400 INVALID_QUERY_LOCATOR when unknown or expired."""
        locator, _, offset_text = locator_and_offset.partition("-")
        self._expire()
        cursor = self._open.get(locator)
        if cursor is None or not offset_text.isdigit() or int(offset_text) >= len(cursor.records):
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        cursor.touched = self._monotonic()
        self._open.move_to_end(locator)
        return self._page(locator, int(offset_text), base)

    def _page(self, locator: str, offset: int, base: str) -> dict[str, Any]:
        cursor = self._open[locator]
        end = offset + cursor.batch_size
        page: dict[str, Any] = {"totalSize": cursor.total_size, "done": end >= len(cursor.records)}
        if page["done"]:
            del self._open[locator]
        else:
            page["nextRecordsUrl"] = f"{base}/query/{locator}-{end}"
        page["records"] = list(cursor.records[offset:end])
        return page

    def clear(self) -> None:
        """Forget every open cursor."""
        self._open.clear()

    def _expire(self) -> None:
        cutoff = self._monotonic() - CURSOR_IDLE_SECONDS
        for locator in [k for k, c in self._open.items() if c.touched < cutoff]:
            del self._open[locator]
