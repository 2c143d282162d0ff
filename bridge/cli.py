"""Command line: parse, load settings, configure logging, hand over to `bridge.commands.<name>.run`.

The options of every command are declared here (parsing imports nothing heavy); each command lives in
`bridge/commands/<name>.py` as `run(settings, args) -> exit code`, imported only when chosen. A command that
needs no settings (emulator, demo, bench) says NEEDS_SETTINGS = False there and gets None.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from bridge.commands.checks import UsageError, uuid_text
from bridge.errors import BridgeError, ConfigurationError, FatalError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _org_argument(parser: argparse.ArgumentParser) -> None:
    """`--org ID`: restrict a command to one org."""
    parser.add_argument(
        "--org",
        default=None,
        metavar="ID",
        help="only this org (an org id as `orgs` lists it; 'default' is the org of [salesforce])",
    )


def _setup_arguments(parser: argparse.ArgumentParser) -> None:
    """`setup`'s options."""
    parser.add_argument(
        "--create-demo-schema", action="store_true", help="create the reference scheduler schema"
    )
    parser.add_argument(
        "--reset-source",
        action="store_true",
        help="drop the replication slot and forget the source position, so the next run re-reads "
        "the tables (after an admin dropped the slot)",
    )
    parser.add_argument("--skip-salesforce", action="store_true", help="do not log in to Salesforce")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: everything comes from the settings."""


def _emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """`emulator`'s options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8788, help="REST port (default 8788)")
    parser.add_argument("--org", type=Path, default=None, help="org file (TOML)")
    parser.add_argument("--state", type=Path, default=None, help="persist records in this SQLite file")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway local CA")
    parser.add_argument("--ca-out", type=Path, default=None, help="where to write the CA certificate (PEM)")
    parser.add_argument("--latency-ms", type=int, default=0, help="added latency per REST request")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve the Pub/Sub API (gRPC) here")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    """`demo`'s options."""
    parser.add_argument(
        "--keep-running", action="store_true", help="leave everything up and print how to reach it"
    )


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    """`reconcile`'s options."""
    parser.add_argument(
        "--link",
        action="append",
        default=[],
        type=uuid_text,
        metavar="ID",
        help="only this link (a UUID; repeatable)",
    )
    parser.add_argument(
        "--booking",
        action="append",
        default=[],
        type=uuid_text,
        metavar="ID",
        help="only this booking (a UUID; repeatable)",
    )
    parser.add_argument("--since", default=None, metavar="DATE", help="bookings starting on or after DATE")
    parser.add_argument("--until", default=None, metavar="DATE", help="bookings starting before DATE")
    parser.add_argument(
        "--changed-since",
        default=None,
        metavar="DATE",
        help="records changed on or after DATE (Salesforce's SystemModstamp, the ledger's rows)",
    )
    parser.add_argument(
        "--changed-until", default=None, metavar="DATE", help="with --changed-since: before DATE"
    )
    parser.add_argument("--dry-run", action="store_true", help="report drift, repair nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--wait-for-daemon",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="when a daemon owns the ledger but its admin API is not up yet (it is starting), wait this long",
    )
    _org_argument(parser)


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    """`status`'s options."""
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="after the summary, every section (ledger, source, daemon) key by key",
    )
    _org_argument(parser)


def _ledger_arguments(parser: argparse.ArgumentParser) -> None:
    """`ledger`'s options."""
    parser.add_argument(
        "what",
        choices=["links", "activities", "journal", "failures", "drift"],
        help="which rows: links, activities (one per booking), journal (what happened), failures "
        "(failed links and bookings), drift (found by reconciliations)",
    )
    parser.add_argument(
        "--link", default=None, type=uuid_text, metavar="ID", help="only rows of this link (a UUID)"
    )
    parser.add_argument(
        "--booking", default=None, type=uuid_text, metavar="ID", help="only rows of this booking (a UUID)"
    )
    parser.add_argument(
        "--state",
        default=None,
        help="links: unbooked, pending, synced, failed, deleted_in_salesforce; activities: pending, synced, "
        "failed, cancelled, deleted_in_salesforce, skipped",
    )
    parser.add_argument(
        "--since",
        default=None,
        metavar="DATE",
        help="rows changed on or after DATE: their updated_at (the journal: its entry time); an ISO date or "
        "datetime, UTC unless it says otherwise. Not `reconcile --since`, which means the booking's start",
    )
    count = parser.add_mutually_exclusive_group()
    count.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help="at most N rows, newest first (default 100); 0 means every row, as --all",
    )
    count.add_argument("--all", action="store_true", help="every row that matches")
    parser.add_argument(
        "--columns",
        default=None,
        metavar="A,B,C",
        help="only these columns, in this order (every format); unknown names are refused",
    )
    parser.add_argument(
        "--wide",
        action="store_true",
        help="table: every column at full width (full ids, full times); the default fits 100 columns",
    )
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default=None,
        help="default: table on a terminal, csv in a pipe; csv and json hold every column and full ids",
    )
    _org_argument(parser)


def _orgs_arguments(parser: argparse.ArgumentParser) -> None:
    """`orgs`' options."""
    count = parser.add_mutually_exclusive_group()
    count.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N orgs (default 100); 0 means every org"
    )
    count.add_argument("--all", action="store_true", help="every org")
    parser.add_argument(
        "--columns",
        default=None,
        metavar="A,B,C",
        help="only these columns, in this order (every format); unknown names are refused",
    )
    parser.add_argument(
        "--wide", action="store_true", help="table: every column at full width (full ids, whole positions)"
    )
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default=None,
        help="default: table on a terminal, csv in a pipe; csv and json hold every column and full ids",
    )


def _retry_arguments(parser: argparse.ArgumentParser) -> None:
    """`retry`'s options."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--booking",
        action="append",
        default=[],
        type=uuid_text,
        metavar="ID",
        help="this booking (a UUID the ledger knows; repeatable)",
    )
    group.add_argument("--all-failed", action="store_true", help="every failed link and booking")
    _org_argument(parser)


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    """`bench`'s options."""
    parser.add_argument("--quick", action="store_true", help="a scaled-down run (about a minute)")
    parser.add_argument(
        "--naive", action="store_true", help="also run one REST call per record, for the ratio"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON figures to this file")
    parser.add_argument(
        "--orgs",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="N",
        help="the many-org bench instead: N customer orgs (default 100; 10 with --quick)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="K",
        help="with --orgs: the burst for 1..K worker processes on a PostgreSQL ledger",
    )


# name: (help, options), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "setup": ("migrate the ledger, create publication and slot, check Salesforce", _setup_arguments),
    "run": ("the daemon, in the foreground", _run_arguments),
    "emulator": ("the local Salesforce org", _emulator_arguments),
    "demo": ("private PostgreSQL + emulator + daemon + a realistic mix of bookings", _demo_arguments),
    "reconcile": ("compare scheduler, ledger and Salesforce; repair drift", _reconcile_arguments),
    "status": ("health, lags, API budget, pending and failed counts", _status_arguments),
    "ledger": ("query the ledger", _ledger_arguments),
    "retry": ("put failed records back in the queue", _retry_arguments),
    "orgs": ("every org: state, reason, pending, failed, API budget, stream positions", _orgs_arguments),
    "bench": ("the benchmark: throughput, latency, API calls, memory", _bench_arguments),
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"bridge.commands.{name}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mogli-bridge", description="Mogli Scheduler bookings to Salesforce.")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings (default: $MOGLI_BRIDGE_CONFIG, else config/bridge.toml)",
    )
    sub = p.add_subparsers(dest="command", required=True, help="the command to run")
    for name, (summary, add_arguments) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=summary))
    return p


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mogli-bridge` console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `mogli-bridge ledger links | head`: the reader left. No traceback, nothing more at exit's flush;
        # exit 1, since the output was cut short (as Python's documentation advises for SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        # A stop requested while the daemon is still starting is a clean stop; the daemon installs its own
        # draining handlers once its event loop runs.
        signal.signal(signal.SIGTERM, _exit_cleanly)
    command = _command(args.command)
    try:
        if not getattr(command, "NEEDS_SETTINGS", True):
            return int(command.run(None, args))
        from bridge.config import load_settings
        from bridge.logs import configure_logging

        settings = load_settings(args.config)
        configure_logging(settings.log.level, settings.log.format, settings.secrets())
        for warning in settings.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return int(command.run(settings, args))
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FatalError as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
