"""The emulator process surface: `serve()` until a signal, loopback-only by default, TLS on both names."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bridge.emulator.server import EmulatorStartError, serve, start_emulator
from tests.adapters.emulator.conftest import EmulatorClient, running_emulator

SERVE = (
    "import sys; from pathlib import Path; from bridge.emulator.server import serve; "
    "sys.exit(serve(host='127.0.0.1', port=0, org_file=None, state_file=None, tls=True, "
    "ca_out=Path(sys.argv[1]), latency_ms=0, allow_remote=False))"
)


def test_serve_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`serve()` prints one line with the URL, writes the CA file, answers HTTPS, and exits 0 on SIGTERM."""
    ca = tmp_path / "ca.pem"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(ca)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "listening on" not in line:  # structlog, unconfigured here, also writes to stdout
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
        assert "https://localhost:" in line
        url = line.split()[line.split().index("on") + 1]
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(url + "/services/data/", context=context, timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback host without allow_remote exits 2 with a message naming the option."""
    code = serve(
        host="0.0.0.0",
        port=0,
        org_file=None,
        state_file=None,
        tls=False,
        ca_out=None,
        latency_ms=0,
        allow_remote=False,
    )
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_reports_a_bad_org_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An org file that does not parse exits 2 with a message naming `--org`."""
    bad = tmp_path / "org.toml"
    bad.write_text("[org\n")
    code = serve(
        host="127.0.0.1",
        port=0,
        org_file=bad,
        state_file=None,
        tls=False,
        ca_out=None,
        latency_ms=0,
        allow_remote=False,
    )
    assert code == 2
    assert "--org" in capsys.readouterr().err


async def test_start_emulator_refuses_remote_without_permission() -> None:
    """start_emulator raises EmulatorStartError for a non-loopback host unless allow_remote."""
    with pytest.raises(EmulatorStartError):
        await start_emulator(host="0.0.0.0")


async def test_tls_certificate_covers_the_loopback_address(emulator_tls: EmulatorClient) -> None:
    """The server certificate names both `localhost` and `127.0.0.1`."""
    assert emulator_tls.ca_file is not None
    context = ssl.create_default_context(cafile=str(emulator_tls.ca_file))
    url = emulator_tls.url.replace("localhost", "127.0.0.1") + "/services/data/"
    async with aiohttp.ClientSession() as http, http.get(url, ssl=context) as response:
        assert response.status == 200


async def test_instance_url_uses_localhost_even_via_127(emulator: EmulatorClient) -> None:
    """A token requested through 127.0.0.1 still answers an instance_url on `localhost`."""
    url = emulator.url.replace("localhost", "127.0.0.1") + "/services/oauth2/token"
    form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    async with emulator.http.post(url, data=form) as response:
        body = await response.json()
    assert body["instance_url"] == emulator.url


async def test_latency_option_still_serves(tmp_path: Path) -> None:
    """An emulator started with latency answers normally (the delay itself is measured by bench)."""
    running = await start_emulator(latency_ms=1)
    try:
        async with aiohttp.ClientSession() as http, http.get(running.url + "/services/data/") as response:
            assert response.status == 200
    finally:
        await running.stop()
        await asyncio.sleep(0)


async def test_state_file_keeps_records_across_restarts(tmp_path: Path) -> None:
    """With a state file, records created over REST are still there after the emulator restarts."""
    state = tmp_path / "org.sqlite"
    async with running_emulator(state_file=state) as first:
        account_id = (await first.rest("POST", "/sobjects/Account", json={"Name": "Durable"})).body["id"]
    async with running_emulator(state_file=state) as second:
        read = await second.rest("GET", f"/sobjects/Account/{account_id}")
    assert (read.status, read.body["Name"]) == (200, "Durable")
