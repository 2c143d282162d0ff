"""`mogli-bridge demo`: a private PostgreSQL, the emulator, the daemon in tenancy mode, the default org and
three customer orgs with a realistic mix of bookings, one org paused half-way and resumed (developer tooling
in bridge/devtools/)."""

from __future__ import annotations

import argparse

NEEDS_SETTINGS = False


def run(settings: None, args: argparse.Namespace) -> int:
    """The demo, start to end (or until stopped with --keep-running)."""
    from bridge.devtools import require_dev_extra

    require_dev_extra("demo")
    from bridge.devtools.demo import run_demo

    return run_demo(keep_running=args.keep_running)
