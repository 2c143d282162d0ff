"""Developer tooling, not the product: the test stack, private PostgreSQL clusters, the invariant oracle, the
demo and the benchmarks. Needs the `dev` extra (pgserver)."""

from __future__ import annotations

import importlib.util

DEV_EXTRA = "pip install 'mogli-bridge[dev]'"


def require_dev_extra(command: str) -> None:
    """Refuse `command` with a ConfigurationError (exit 2, one line) when the `dev` extra is not installed."""
    try:
        # Locate pgserver without importing it: its import sets up a server manager we never use.
        installed = importlib.util.find_spec("pgserver") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        from bridge.errors import ConfigurationError

        raise ConfigurationError(f"`mogli-bridge {command}` needs the dev extra: {DEV_EXTRA}")
