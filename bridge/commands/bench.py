"""`mogli-bridge bench`: throughput, latency, API calls and memory (developer tooling in bridge/devtools/)."""

from __future__ import annotations

import argparse

NEEDS_SETTINGS = False


def run(settings: None, args: argparse.Namespace) -> int:
    """Every workload, then the figures."""
    from bridge.devtools import require_dev_extra

    require_dev_extra("bench")
    if args.workers is not None and (args.orgs is None or args.workers < 1):
        print("mogli-bridge bench: --workers K needs --orgs and K >= 1")
        return 2
    if args.orgs is not None:
        from bridge.devtools.bench_orgs import run_orgs_bench

        return run_orgs_bench(
            orgs=args.orgs, quick=args.quick, as_json=args.json, out=args.out, workers=args.workers
        )
    from bridge.devtools.bench import run_bench

    return run_bench(quick=args.quick, naive=args.naive, as_json=args.json, out=args.out)
