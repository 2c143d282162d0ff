"""End to end: the status page of a running daemon, rendered by headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bridge.devtools.stack import http_json, wait_until

from .conftest import Stack
from .test_ops import admin_port, ready, settle

__all__ = ["admin_port"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def chromium() -> str:
    """The Chromium binary; skip (with the reason) only where `make test` could not install it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (make test installs the Debian package `chromium` where it can)")


def render(binary: str, url: str, workdir: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with its own throwaway profile."""
    profile = workdir / f"chromium-profile-{len(list(workdir.glob('chromium-profile-*')))}"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, url],
        capture_output=True,
        text=True,
        timeout=90,
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def test_status_page_shows_components_lags_failures_and_the_reconcile_form(
    stack: Stack, admin_port: int, tmp_path: Path
) -> None:
    """Chromium renders `/` of the running daemon: ready banner, components, replication lag, the failed
    booking by id and code, the reconciliation section with its token form; the screenshot is a real page."""
    binary = chromium()
    _, bad, daemon = settle(stack)
    wait_until(lambda: ready(admin_port), what="/readyz to answer 200")
    url = f"http://127.0.0.1:{admin_port}/"

    dom = render(binary, url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for text in ("mogli-bridge", "Ready: every component runs", "Components", "ingest", "push", "admin"):
        assert text in page, text
    for text in ("Replication", "lag (bytes)", "Recent failures", bad, "Reconciliation runs"):
        assert text in page, text
    assert 'name="token"' in page and "Start reconciliation" in page

    shot = tmp_path / "status.png"
    result = render(binary, url, tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 900)
    assert shot.stat().st_size > 20_000  # a rendered page of tables, not a blank canvas

    status, _ = http_json("GET", f"http://127.0.0.1:{admin_port}/healthz")
    assert status == 200
    assert daemon.terminate() == 0
