"""End to end: the status page of a running daemon, rendered by headless Chromium at a desktop and a phone
size (screenshots kept in the test's tmp dir), and its degraded state while Salesforce answers 503."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import urllib.request
from pathlib import Path

import pytest

from bridge.devtools.stack import HttpError, http_json, wait_until

from .conftest import Stack
from .test_ops import admin_port, settle

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
)
DESKTOP, PHONE = (1400, 1000), (390, 844)


def chromium() -> str:
    """The Chromium binary; skip (with the reason) only where `make test` could not install it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (make test installs the Debian package `chromium` where it can)")


def render(
    binary: str, url: str, workdir: Path, *mode: str, size: tuple[int, int] = DESKTOP
) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run at a window size, with its own throwaway profile."""
    profile = workdir / f"chromium-profile-{len(list(workdir.glob('chromium-profile-*')))}"
    return subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--window-size={size[0]},{size[1]}",
            f"--user-data-dir={profile}",
            *mode,
            url,
        ],
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


def healthy(port: int) -> bool:
    """GET /readyz (no token) answers 200 with state ready, not degraded (e.g. a stream still subscribing)."""
    try:
        status, body = http_json("GET", f"http://127.0.0.1:{port}/readyz")
    except (HttpError, OSError):
        return False
    return status == 200 and body["health"]["state"] == "ready"


def measure_width(binary: str, url: str, workdir: Path, size: tuple[int, int]) -> tuple[int, int]:
    """(document scrollWidth, viewport width) of the page at `url` laid out in a frame of `size`.

    Headless Chromium will not make its window narrower than 500 px, so the page (fetched as served) is laid
    out in a same-origin `srcdoc` frame of exactly that size inside a wrapper whose inline script writes the
    frame document's measurements into the DOM that --dump-dom prints."""
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode()
    wrapper = workdir / f"measure-{size[0]}.html"
    wrapper.write_text(
        '<!doctype html><html><body style="margin:0;overflow:hidden">'
        f'<iframe id="page" width="{size[0]}" height="{size[1]}" style="border:0" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        "<script>addEventListener('load', () => {"
        "const d = document.getElementById('page').contentWindow;"
        "document.body.insertAdjacentHTML('beforeend', '<pre id=\"measured\">' +"
        " d.document.documentElement.scrollWidth + ' ' + d.innerWidth + '</pre>');});</script>"
        "</body></html>"
    )
    dom = render(binary, wrapper.as_uri(), workdir, "--dump-dom", size=(max(size[0], 500), size[1]))
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(\d+) (\d+)</pre>', dom.stdout)
    assert found, dom.stdout[-2000:]
    return int(found.group(1)), int(found.group(2))


def test_status_page_shows_components_lags_failures_and_the_reconcile_form(
    stack: Stack, admin_port: int, tmp_path: Path
) -> None:
    """Chromium renders `/` of the running daemon: ready banner, components, replication lag, the failed
    booking by id and code, the reconciliation section with its token form; the screenshot is a real page."""
    binary = chromium()
    _, bad, daemon = settle(stack)
    wait_until(lambda: healthy(admin_port), what="/readyz to say ready")
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
    assert png_size(shot) == DESKTOP
    assert shot.stat().st_size > 20_000  # a rendered page of tables, not a blank canvas

    status, _ = http_json("GET", f"http://127.0.0.1:{admin_port}/healthz")
    assert status == 200
    assert daemon.terminate() == 0


def test_status_page_fits_a_desktop_and_a_phone_and_reloads_itself(
    stack: Stack, admin_port: int, tmp_path: Path
) -> None:
    """At 1400x1000 and at 390x844 the page renders (screenshots kept as status-1400.png and status-390.png)
    with no horizontal overflow of the document; it carries its own refresh, ages and inline SVG charts."""
    binary = chromium()
    _, _, daemon = settle(stack)
    wait_until(lambda: healthy(admin_port), what="/readyz to say ready")
    url = f"http://127.0.0.1:{admin_port}/"
    dom = render(binary, url, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<meta http-equiv="refresh"' in dom.stdout and dom.stdout.count("<svg") == 4
    assert " ago</td>" in dom.stdout or "just now" in dom.stdout
    for size in (DESKTOP, PHONE):
        scroll_width, viewport = measure_width(binary, url, tmp_path, size)
        assert viewport == size[0], (size, viewport)
        assert scroll_width <= viewport, f"horizontal overflow at {size}: {scroll_width} > {viewport}"
    for size in (DESKTOP, PHONE):
        shot = tmp_path / f"status-{size[0]}.png"
        target = url if size == DESKTOP else (tmp_path / f"measure-{size[0]}.html").as_uri()
        result = render(binary, target, tmp_path, f"--screenshot={shot}", size=size)
        assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
        assert png_size(shot) == size and shot.stat().st_size > 20_000, shot
    assert daemon.terminate() == 0


def test_salesforce_answering_503_makes_the_page_and_readyz_say_degraded(
    stack: Stack, admin_port: int, tmp_path: Path
) -> None:
    """While every write to Salesforce answers 503, /readyz (no token) stays 200 and says degraded with the
    pusher's reason, and the page (in Chromium) shows the amber banner, the reason and the failed
    Salesforce check; once the fault is cleared the daemon is ready again."""
    binary = chromium()
    s, seed = stack.scheduler, stack.seed
    _, _, daemon = settle(stack)
    wait_until(lambda: healthy(admin_port), what="/readyz to say ready")
    stack.emulator.add_fault(path="/composite/sobjects", status=503, error_code="SERVER_UNAVAILABLE")
    link = s.add_link("one_on_one", s.add_user(seed.users[1]), title="During the outage")
    s.add_booking(link, related=seed.contacts[1])
    base = f"http://127.0.0.1:{admin_port}"

    def health() -> dict[str, object]:
        status, body = http_json("GET", f"{base}/readyz")
        assert status == 200, body
        return body["health"]  # type: ignore[no-any-return]

    wait_until(lambda: health()["state"] == "degraded", what="/readyz to say degraded")
    reasons = health()["reasons"]
    assert isinstance(reasons, list) and any("Salesforce failed a write" in r for r in reasons), reasons
    assert any(line.get("event") == "push.salesforce_unavailable" for line in daemon.log_lines()), (
        "no 503 hit"
    )

    dom = render(binary, base + "/", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Degraded: the daemon works, but needs attention" in dom.stdout
    assert "Salesforce failed a write" in dom.stdout
    assert re.search(r'salesforce \(ping, writes\)</td><td class="bad">failed', dom.stdout)
    shot = tmp_path / "status-degraded.png"
    assert render(binary, base + "/", tmp_path, f"--screenshot={shot}").returncode == 0 and shot.exists()

    stack.emulator.clear_faults()
    wait_until(lambda: health()["state"] == "ready", what="/readyz to say ready once Salesforce answers")
    assert daemon.terminate() == 0
