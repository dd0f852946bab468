"""Run every benchmark, print the side-by-side table and rewrite docs/benchmarks.md.

Only the decode path exists so far (foundation issue). The end-to-end ingestion, State and inspect
latency benchmarks come with the benchmark issue; they will use the same table and results file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from benchmarks import decode, inspect_latency, state

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--json", type=Path, help="also write machine-readable results here")
    parser.add_argument(
        "--no-brokers", action="store_true", help="skip benchmarks that start brokers and workers"
    )
    args = parser.parse_args()
    rows = decode.run(quick=args.quick) + state.run(quick=args.quick)
    if not args.no_brokers:
        rows += inspect_latency.run(quick=args.quick)
    header = "| benchmark | aiocelerymon | Celery/kombu | ratio |\n|---|---:|---:|---:|"
    lines = [
        f"| {r['name']} | {r['ours']:,.0f} {r['unit']} | {r['theirs']:,.0f} {r['unit']} "
        f"| {r.get('ratio', r['ours'] / r['theirs']):.1f}x |"
        for r in rows
    ]
    table = "\n".join([header, *lines])
    print(table)
    import kombu

    machine = (
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{platform.system()}; kombu {kombu.__version__}"
    )
    RESULTS.write_text(
        "# Benchmarks\n\n"
        "Run with `nox -s bench` (it rewrites this file). Each row runs our code and Celery's on\n"
        "the same input in the same process. These are measurements, not test assertions.\n\n"
        "## Method\n\n"
        "* **decode task.multi envelope**: a Redis pub/sub payload as a Celery worker publishes\n"
        "  it (kombu envelope, base64 body, a `task.multi` list of 24 task events) turned into\n"
        "  event dicts. Ours: `decode_envelope` + `codec.decode` (orjson). Celery's: what\n"
        "  kombu's Redis channel does per message (`json.loads` of the envelope, base64, then\n"
        "  `kombu.serialization.loads`). The figure is events per second, best of 5 rounds.\n"
        "* **State**: received/started/succeeded for ~67k tasks from 4 workers (200k events),\n"
        "  as the receiver hands them on, into `celery.events.state.State` and ours; CPU time\n"
        "  of the feeding loop. Memory: tracemalloc growth per retained finished task.\n"
        "* **ping latency**: two real workers on local Redis and RabbitMQ; ours knows the\n"
        "  workers and returns when both answered, Celery's `app.control.ping(timeout=1.0)`\n"
        "  always waits its timeout. Plus concurrent `inspect().ping()` calls/s on one client.\n\n"
        f"## Results\n\nMachine: {machine}, {_cores()} cores.\n\n{table}\n"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
