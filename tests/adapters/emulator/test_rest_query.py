"""SOQL resources (reference §2.2): batches, `nextRecordsUrl` paging, batch size, queryAll, errors."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bridge.emulator.contracts import ApiError
from bridge.emulator.query import CURSOR_IDLE_SECONDS, QueryCursors
from tests.adapters.emulator.conftest import EmulatorClient


async def _contacts(emulator: EmulatorClient, count: int) -> list[str]:
    records = [{"attributes": {"type": "Contact"}, "LastName": f"Q{n:04d}"} for n in range(count)]
    ids: list[str] = []
    for start in range(0, count, 200):
        reply = await emulator.rest(
            "POST", "/composite/sobjects", json={"records": records[start : start + 200]}
        )
        ids += [r["id"] for r in reply.body]
    return ids


def _q(soql: str) -> str:
    return "/query?q=" + quote(soql)


async def test_paging_follows_next_records_url_to_the_end(emulator: EmulatorClient) -> None:
    """450 rows with `batchSize=200`: pages of 200, 200, 50; `done` false until the last; every page
    carries totalSize; `nextRecordsUrl` has the `/query/01g...-N` shape and is absent on the last page."""
    ids = await _contacts(emulator, 450)
    headers = {"Sforce-Query-Options": "batchSize=200"}
    page = await emulator.rest("GET", _q("SELECT Id FROM Contact WHERE LastName LIKE 'Q%'"), headers=headers)
    sizes, seen = [], []
    while True:
        assert page.status == 200
        assert page.body["totalSize"] == 450
        sizes.append(len(page.body["records"]))
        seen += [r["Id"] for r in page.body["records"]]
        if page.body["done"]:
            assert "nextRecordsUrl" not in page.body
            break
        next_url = page.body["nextRecordsUrl"]
        assert next_url.startswith("/services/data/v60.0/query/01g")
        page = await emulator.request(
            "GET", next_url, headers={"Authorization": f"Bearer {emulator.access_token}"}
        )
    assert sizes == [200, 200, 50]
    assert sorted(seen) == sorted(ids)


async def test_batch_size_is_clamped_and_defaults_to_2000(emulator: EmulatorClient) -> None:
    """batchSize below 200 is raised to 200; without the header a batch holds up to 2000 rows."""
    await _contacts(emulator, 250)
    small = await emulator.rest(
        "GET", _q("SELECT Id FROM Contact"), headers={"Sforce-Query-Options": "batchSize=50"}
    )
    assert len(small.body["records"]) == 200 and small.body["done"] is False
    default = await emulator.rest("GET", _q("SELECT Id FROM Contact"))
    assert default.body["done"] is True
    assert len(default.body["records"]) == default.body["totalSize"]


async def test_query_all_includes_deleted_records(emulator: EmulatorClient) -> None:
    """A deleted record disappears from /query but stays visible, IsDeleted true, through /queryAll."""
    contact_id = (await emulator.rest("POST", "/sobjects/Contact", json={"LastName": "Gone"})).body["id"]
    await emulator.rest("DELETE", f"/sobjects/Contact/{contact_id}")
    soql = quote(f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{contact_id}'")
    live = await emulator.rest("GET", f"/query?q={soql}")
    everything = await emulator.rest("GET", f"/queryAll?q={soql}")
    assert live.body["totalSize"] == 0
    assert everything.body["totalSize"] == 1
    assert everything.body["records"][0]["IsDeleted"] is True


async def test_query_errors(emulator: EmulatorClient) -> None:
    """Bad SOQL answers 400 MALFORMED_QUERY, a missing `q` too; an unknown locator answers 400
    INVALID_QUERY_LOCATOR."""
    bad = await emulator.rest("GET", _q("SELEKT Id FROM Contact"))
    assert (bad.status, bad.body[0]["errorCode"]) == (400, "MALFORMED_QUERY")
    missing = await emulator.rest("GET", "/query")
    assert (missing.status, missing.body[0]["errorCode"]) == (400, "MALFORMED_QUERY")
    locator = await emulator.rest("GET", "/query/01gEm0000000099-200")
    assert (locator.status, locator.body[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")


async def test_a_finished_cursor_is_closed(emulator: EmulatorClient) -> None:
    """Once its last page is served the cursor is gone: asking for it again is INVALID_QUERY_LOCATOR."""
    await _contacts(emulator, 201)
    first = await emulator.rest(
        "GET", _q("SELECT Id FROM Contact"), headers={"Sforce-Query-Options": "batchSize=200"}
    )
    next_path = first.body["nextRecordsUrl"].removeprefix("/services/data/v60.0")
    last = await emulator.rest("GET", next_path)
    assert last.body["done"] is True
    again = await emulator.rest("GET", next_path)
    assert again.body[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_idle_cursors_expire() -> None:
    """A query cursor left idle longer than the idle limit is forgotten (INVALID_QUERY_LOCATOR)."""
    now = [0.0]
    cursors = QueryCursors(monotonic=lambda: now[0])
    page = cursors.first_page(list(range(450)), 450, 200, "/services/data/v60.0")
    locator = page["nextRecordsUrl"].rsplit("/", 1)[1]
    assert len(cursors.next_page(locator, "/services/data/v60.0")["records"]) == 200
    now[0] += CURSOR_IDLE_SECONDS + 1
    with pytest.raises(ApiError) as caught:
        cursors.next_page(locator.replace("-200", "-400"), "/services/data/v60.0")
    assert caught.value.error_code == "INVALID_QUERY_LOCATOR"
