"""simple-salesforce, unmodified, against the emulator over HTTPS with the emulator's CA.

simple-salesforce is blocking and the emulator serves in the test's event loop, so each scenario runs
in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from tests.adapters.emulator.conftest import EmulatorClient

BATCH_200 = {"Sforce-Query-Options": "batchSize=200"}


def _login(emulator: EmulatorClient, token: str) -> Salesforce:
    """A Salesforce client on the emulator's instance_url and a password-grant session id."""
    assert emulator.ca_file is not None
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would beat `session.verify` (requests merges the environment
    # over session settings); this session trusts exactly the emulator's CA.
    session.trust_env = False
    session.verify = str(emulator.ca_file)
    return Salesforce(instance_url=emulator.url, session_id=token, session=session, version="60.0")


@pytest.fixture
async def sf(emulator_tls: EmulatorClient) -> Salesforce:
    """A simple-salesforce client logged in as the integration user over HTTPS."""
    return _login(emulator_tls, await emulator_tls.token())


def _crud(sf: Salesforce) -> None:
    created = sf.Contact.create({"LastName": "Simple", "FirstName": "Sam"})
    assert created["success"] is True
    contact_id = created["id"]
    assert sf.Contact.get(contact_id)["LastName"] == "Simple"
    assert sf.Contact.update(contact_id, {"LastName": "Simpler"}) == 204
    assert sf.Contact.get(contact_id)["LastName"] == "Simpler"
    assert sf.Contact.delete(contact_id) == 204
    assert sf.query(f"SELECT Id FROM Contact WHERE Id = '{contact_id}'")["totalSize"] == 0


async def test_create_read_update_delete(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """simple-salesforce creates, reads, updates and deletes a Contact (201/200/204/204)."""
    await asyncio.to_thread(_crud, sf)


def _upsert_twice(sf: Salesforce) -> tuple[int, int, dict[str, object]]:
    first = sf.Mogli_Event__c.upsert("Scheduling_Link_Id__c/link-ss", {"Name": "First"})
    second = sf.Mogli_Event__c.upsert("Scheduling_Link_Id__c/link-ss", {"Name": "Second"}, raw_response=True)
    return first, second.status_code, second.json()


async def test_upsert_twice_by_external_id(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """Upsert by External ID: 201 the first time, then 200 with `created: false`; one record results."""
    first, second, body = await asyncio.to_thread(_upsert_twice, sf)
    assert (first, second) == (201, 200)
    assert body["created"] is False
    records = emulator_tls.store.records("Mogli_Event__c")
    assert [r["Name"] for r in records] == ["Second"]


def _every_collections_form(sf: Salesforce) -> dict[str, Any]:
    """Create, retrieve by GET and by POST, update, upsert and delete through `Salesforce.restful`."""
    typed = {"type": "Account"}
    made = sf.restful(
        "composite/sobjects",
        method="POST",
        json={"records": [{"attributes": typed, "Name": "SS1"}, {"attributes": typed, "Name": "SS2"}]},
    )
    ids = [r["id"] for r in made]
    changed = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": typed, "Id": ids[0], "Name": "SS1b"}]},
    )
    by_get = sf.restful("composite/sobjects/Account", params={"ids": ",".join(ids), "fields": "Id,Name"})
    by_post = sf.restful("composite/sobjects/Account", method="POST", json={"ids": ids, "fields": ["Name"]})
    upserted = sf.restful(
        "composite/sobjects/Mogli_Event__c/Scheduling_Link_Id__c",
        method="PATCH",
        json={
            "records": [
                {"attributes": {"type": "Mogli_Event__c"}, "Scheduling_Link_Id__c": "ss", "Name": "SS"}
            ]
        },
    )
    removed = sf.restful("composite/sobjects", method="DELETE", params={"ids": ids[1], "allOrNone": "true"})
    return {
        "made": [r["success"] for r in made],
        "changed": [r["success"] for r in changed],
        "by_get": [r["Name"] for r in by_get],
        "by_post": [r["Name"] for r in by_post],
        "upserted": [(r["success"], r["created"]) for r in upserted],
        "removed": [r["success"] for r in removed],
    }


async def test_every_collections_form_through_restful(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """simple-salesforce's `restful` drives every documented sObject Collections form (create, retrieve by
    GET and by POST body, update, upsert, delete) against the emulator, with Salesforce's answer shapes.
    Doc: https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections.html
    and its per-operation pages."""
    seen = await asyncio.to_thread(_every_collections_form, sf)
    assert seen == {
        "made": [True, True],
        "changed": [True],
        "by_get": ["SS1b", "SS2"],
        "by_post": ["SS1b", "SS2"],
        "upserted": [(True, True)],
        "removed": [True],
    }
    assert [r["Name"] for r in emulator_tls.store.records("Account") if r["Name"].startswith("SS")] == [
        "SS1b"
    ]


def _page_through(sf: Salesforce) -> tuple[list[int], int, list[str]]:
    sizes: list[int] = []
    page = sf.query("SELECT Id, LastName FROM Contact WHERE LastName LIKE 'Bulk%'", headers=BATCH_200)
    ids = [r["Id"] for r in page["records"]]
    sizes.append(len(page["records"]))
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True, headers=BATCH_200)
        sizes.append(len(page["records"]))
        ids += [r["Id"] for r in page["records"]]
    everything = sf.query_all("SELECT Id FROM Contact WHERE LastName LIKE 'Bulk%'", headers=BATCH_200)
    return sizes, everything["totalSize"], ids


async def test_query_450_records_through_every_page(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """450 Contacts with batchSize 200: query + query_more walk pages of 200, 200, 50; query_all
    gathers all 450."""
    for start in range(0, 450, 200):
        records = [
            {"attributes": {"type": "Contact"}, "LastName": f"Bulk{n:03d}"}
            for n in range(start, min(start + 200, 450))
        ]
        reply = await emulator_tls.rest("POST", "/composite/sobjects", json={"records": records})
        assert all(r["success"] for r in reply.body)
    sizes, total, ids = await asyncio.to_thread(_page_through, sf)
    assert sizes == [200, 200, 50]
    assert total == 450
    assert len(set(ids)) == 450


def _deleted_visibility(sf: Salesforce) -> tuple[int, int, bool]:
    contact_id = sf.Contact.create({"LastName": "Recycled"})["id"]
    sf.Contact.delete(contact_id)
    soql = f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{contact_id}'"
    live = sf.query_all(soql)
    every = sf.query_all(soql, include_deleted=True)
    return live["totalSize"], every["totalSize"], every["records"][0]["IsDeleted"]


async def test_deleted_records_only_through_query_all(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """A deleted Contact is invisible to query and visible (IsDeleted true) to queryAll."""
    assert await asyncio.to_thread(_deleted_visibility, sf) == (0, 1, True)


def _who_is_account(sf: Salesforce) -> None:
    account_id = sf.Account.create({"Name": "Not a person"})["id"]
    sf.Event.create(
        {
            "Subject": "Wrong who",
            "StartDateTime": "2026-06-01T10:00:00Z",
            "EndDateTime": "2026-06-01T10:30:00Z",
            "WhoId": account_id,
        }
    )


async def test_who_id_on_an_account_raises_malformed_request(
    emulator_tls: EmulatorClient, sf: Salesforce
) -> None:
    """A WhoId pointing at an Account raises SalesforceMalformedRequest carrying FIELD_INTEGRITY_EXCEPTION."""
    with pytest.raises(SalesforceMalformedRequest) as caught:
        await asyncio.to_thread(_who_is_account, sf)
    assert caught.value.content[0]["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert caught.value.content[0]["fields"] == ["WhoId"]


async def test_expired_session_raises_expired_session(emulator_tls: EmulatorClient, sf: Salesforce) -> None:
    """After sessions/expire the next call raises SalesforceExpiredSession."""
    await emulator_tls.control("POST", "/sessions/expire")
    with pytest.raises(SalesforceExpiredSession):
        await asyncio.to_thread(sf.Contact.describe)


async def test_exhausted_allocation_raises_refused_request(
    emulator_tls: EmulatorClient, sf: Salesforce
) -> None:
    """With the daily allocation used up, REST answers 403 REQUEST_LIMIT_EXCEEDED, which simple-salesforce
    raises as SalesforceRefusedRequest; `api_usage` reflects the header."""
    await asyncio.to_thread(sf.query, "SELECT Id FROM Account")
    assert sf.api_usage["api-usage"].used == 1
    assert sf.api_usage["api-usage"].total == 15000
    await emulator_tls.control("POST", "/limits", {"allocation": 50, "used": 50})
    with pytest.raises(SalesforceRefusedRequest) as caught:
        await asyncio.to_thread(sf.Contact.create, {"LastName": "Over budget"})
    assert caught.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


async def test_ca_file_is_written_where_asked(emulator_tls: EmulatorClient, tmp_path: Path) -> None:
    """With TLS the CA certificate lands in the `ca_out` file as PEM and plain HTTP is not served."""
    assert emulator_tls.ca_file == tmp_path / "emulator-ca.pem"
    assert emulator_tls.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert emulator_tls.url.startswith("https://localhost:")
