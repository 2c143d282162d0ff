"""Serving one emulator application on a TCP port (the main org and every hosted org alike)."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from typing import Any

from aiohttp import web


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def listen(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: a free port); answers the runner and the bound port. OSError when the
    port cannot be bound (the runner is cleaned up)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError:
        await runner.cleanup()
        raise
    address: Any = runner.addresses[0]
    bound = int(address[1])
    if host in ("127.0.0.1", "localhost"):
        # `localhost` may resolve to ::1 first; answer there too so clients do not wait for a fallback.
        with contextlib.suppress(OSError):
            await web.TCPSite(runner, "::1", bound, ssl_context=ssl_context).start()
    return runner, bound


def base_url(host: str, port: int, *, tls: bool) -> str:
    """`scheme://host:port`, naming a loopback host `localhost`."""
    url_host = "localhost" if is_loopback(host) else host
    return f"{'https' if tls else 'http'}://{url_host}:{port}"
