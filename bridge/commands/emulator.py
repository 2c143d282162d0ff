"""`mogli-bridge emulator`: the local Salesforce org (REST, OAuth, CometD and, with --grpc-port, Pub/Sub)."""

from __future__ import annotations

import argparse

from bridge.errors import ConfigurationError

NEEDS_SETTINGS = False


def run(settings: None, args: argparse.Namespace) -> int:
    """Serve until stopped."""
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
