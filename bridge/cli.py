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
    p = argparse.ArgumentParser(prog="mogli-bridge", description="Mogli Scheduler bookings to Salesforce.")
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
    e.add_argument("--grpc-port", type=int, default=None, help="also serve the Pub/Sub API (gRPC) here")

    d = sub.add_parser("demo", help="private PostgreSQL + emulator + daemon + a realistic mix of bookings")
    d.add_argument(
        "--keep-running", action="store_true", help="leave everything up and print how to reach it"
    )

    r = sub.add_parser("reconcile", help="compare scheduler, ledger and Salesforce; repair drift")
    r.add_argument("--link", action="append", default=[], metavar="ID", help="only this link (repeatable)")
    r.add_argument(
        "--booking", action="append", default=[], metavar="ID", help="only this booking (repeatable)"
    )
    r.add_argument("--since", default=None, metavar="DATE", help="bookings starting on or after DATE")
    r.add_argument("--until", default=None, metavar="DATE", help="bookings starting before DATE")
    r.add_argument(
        "--changed-since",
        default=None,
        metavar="DATE",
        help="records changed on or after DATE (Salesforce's SystemModstamp, the ledger's rows)",
    )
    r.add_argument("--changed-until", default=None, metavar="DATE", help="with --changed-since: before DATE")
    r.add_argument("--dry-run", action="store_true", help="report drift, repair nothing")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument(
        "--wait-for-daemon",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="when a daemon owns the ledger but its admin API is not up yet (it is starting), wait this long",
    )

    st = sub.add_parser("status", help="health, lags, API budget, pending and failed counts")
    st.add_argument("--json", action="store_true")

    lg = sub.add_parser("ledger", help="query the ledger")
    lg.add_argument("what", choices=["links", "activities", "journal", "failures", "drift"])
    lg.add_argument("--link", default=None)
    lg.add_argument("--booking", default=None)
    lg.add_argument("--state", default=None)
    lg.add_argument("--since", default=None, metavar="DATE")
    lg.add_argument("--limit", type=int, default=100)
    lg.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default=None,
        help="default: table on a terminal, csv in a pipe",
    )

    rt = sub.add_parser("retry", help="put failed records back in the queue")
    grp = rt.add_mutually_exclusive_group(required=True)
    grp.add_argument("--booking", action="append", default=[], metavar="ID")
    grp.add_argument("--all-failed", action="store_true")

    b = sub.add_parser("bench", help="the benchmark: throughput, latency, API calls, memory")
    b.add_argument("--quick", action="store_true", help="a scaled-down run (about a minute)")
    b.add_argument("--naive", action="store_true", help="also run one REST call per record, for the ratio")
    b.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    b.add_argument("--out", type=Path, default=None, help="also write the JSON figures to this file")
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
                grpc_port=args.grpc_port,
            )
        if args.command == "demo":
            from bridge.devtools.demo import run_demo

            return run_demo(keep_running=args.keep_running)
        if args.command == "bench":
            from bridge.devtools.bench import run_bench

            return run_bench(quick=args.quick, naive=args.naive, as_json=args.json, out=args.out)

        from bridge import app
        from bridge.config import load_settings
        from bridge.logs import configure_logging

        settings = load_settings(args.config)
        configure_logging(settings.log.level, settings.log.format, settings.secrets())
        for warning in settings.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.command == "setup":
            from bridge.commands import setup

            return setup.setup(
                settings,
                create_demo_schema=args.create_demo_schema,
                reset_source=args.reset_source,
                check_salesforce=not args.skip_salesforce,
            )
        if args.command == "run":
            return app.run(settings)
        if args.command == "reconcile":
            from bridge.commands.reconcile import run_reconcile

            return run_reconcile(
                settings,
                links=args.link,
                bookings=args.booking,
                since=args.since,
                until=args.until,
                changed_since=args.changed_since,
                changed_until=args.changed_until,
                dry_run=args.dry_run,
                as_json=args.json,
                wait_for_daemon=args.wait_for_daemon,
            )
        if args.command in ("status", "ledger", "retry"):
            from bridge.commands import ops

            if args.command == "status":
                return ops.status(settings, as_json=args.json)
            if args.command == "ledger":
                return ops.ledger(
                    settings,
                    args.what,
                    link=args.link,
                    booking=args.booking,
                    state=args.state,
                    since=args.since,
                    limit=args.limit,
                    fmt=args.format,
                )
            return ops.retry(settings, booking_ids=args.booking, all_failed=args.all_failed)
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
