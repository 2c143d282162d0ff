"""`mogli-bridge run`: the daemon, in the foreground (built and supervised by bridge/app.py)."""

from __future__ import annotations

import argparse

from bridge.config import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    """0 after a clean stop, 1 fatal, 2 configuration."""
    from bridge import app

    return app.run(settings)
