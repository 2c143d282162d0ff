"""Command line: parse, load settings, configure logging, call one function in app.py."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.errors import BridgeError, ConfigurationError, FatalError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mogli-bridge", description=__doc__)
    p.add_argument("--config", type=Path, default=None, help="TOML settings (default config/bridge.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="migrate the ledger, create publication and slot, check Salesforce")
    s.add_argument("--create-demo-schema", action="store_true", help="create the reference scheduler schema")
    s.add_argument(
        "--reset-source",
        action="store_true",
        help="drop the replication slot and forget the source position, so the next run re-reads "
        "the tables (after an admin dropped the slot)",
    )
    s.add_argument("--skip-salesforce", action="store_true", help="do not log in to Salesforce")

    sub.add_parser("run", help="the daemon, in the foreground")

    e = sub.add_parser("emulator", help="the local Salesforce org")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=8788)
    e.add_argument("--org", type=Path, default=None, help="org file (TOML)")
    e.add_argument("--state", type=Path, default=None, help="persist records in this SQLite file")
    e.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway local CA")
    e.add_argument("--ca-out", type=Path, default=None, help="where to write the CA certificate (PEM)")
    e.add_argument("--latency-ms", type=int, default=0, help="added latency per REST request")
    e.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")

    d = sub.add_parser("demo", help="private PostgreSQL + emulator + daemon + a realistic mix of bookings")
    d.add_argument(
        "--keep-running", action="store_true", help="leave everything up and print how to reach it"
    )
    return p


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mogli-bridge` console script."""
    args = _parser().parse_args(argv)
    if args.command == "run":
        # A stop requested while the daemon is still starting is a clean stop; the daemon installs its own
        # draining handlers once its event loop runs.
        signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        if args.command == "emulator":
            from bridge.emulator.server import serve

            if args.tls and args.ca_out is None:
                raise ConfigurationError("--tls needs --ca-out FILE for the CA certificate", "--ca-out")
            return serve(
                host=args.host,
                port=args.port,
                org_file=args.org,
                state_file=args.state,
                tls=args.tls,
                ca_out=args.ca_out,
                latency_ms=args.latency_ms,
                allow_remote=args.allow_remote,
            )
        if args.command == "demo":
            from bridge.demo import run_demo

            return run_demo(keep_running=args.keep_running)

        from bridge import app
        from bridge.config import load_settings
        from bridge.logs import configure_logging

        settings = load_settings(args.config)
        configure_logging(settings.log.level, settings.log.format, settings.secrets())
        for warning in settings.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.command == "setup":
            return app.setup(
                settings,
                create_demo_schema=args.create_demo_schema,
                reset_source=args.reset_source,
                check_salesforce=not args.skip_salesforce,
            )
        if args.command == "run":
            return app.run(settings)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FatalError as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return EXIT_USAGE
