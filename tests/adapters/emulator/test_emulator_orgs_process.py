"""The emulator as a process (`mogli-bridge emulator`) hosts orgs, driven through EmulatorProcess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devtools.stack import EmulatorProcess, http_json


@pytest.fixture
def process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """The emulator in a subprocess."""
    emu = EmulatorProcess(tmp_path)
    try:
        yield emu
    finally:
        emu.stop()


def test_the_process_creates_lists_and_logs_hosted_orgs(process: EmulatorProcess) -> None:
    """create_org answers a reachable org, orgs() lists it after the main org, and requests() shows the
    org's own token request and REST call (the token as a fingerprint) and nothing in the main org's log."""
    org = process.create_org("Acme", users=[{"Username": "sync@acme.example"}])
    form = {"grant_type": "client_credentials", "client_id": "app", "client_secret": "s"}
    _, token = http_json("POST", f"{org['url']}/services/oauth2/token", form=form)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    status, _ = http_json("GET", f"{org['url']}/services/data/v60.0/limits", headers=headers)

    listed = process.orgs()
    logged = process.requests(org["url"])

    assert status == 200
    assert [(o["name"], o["main"]) for o in listed] == [("main", True), ("Acme", False)]
    assert [u["Username"] for u in org["users"]] == ["sync@acme.example"]
    assert [(r["path"], r["token"] is None) for r in logged] == [
        ("/services/oauth2/token", True),
        ("/services/data/v60.0/limits", False),
    ]
    assert process.requests(org["url"], since=logged[-1]["at"])[0]["path"] == "/services/data/v60.0/limits"
    assert process.requests() == []
