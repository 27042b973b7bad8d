"""`vigil status`: what a running monitor last published about itself (pipeline/live/status.py): per camera its
frames/s, lag and last alert, per Kafka partition its consumer lag, per stage its actors, nodes, calls in
flight and errors.

Exit status: 0 for a running monitor's fresh status; 1 when there is none, or the monitor stopped, or its
status is stale (it stopped reporting: killed, or stuck), each told in one line; 2 for bad input or a store
that cannot be read. With --json the document is printed as stored whenever there is one, and those lines go to
stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jobs.commands.common import add_common_options, config_from
from pipeline.live.status import MonitorStatus, freshness_line, render
from pipeline.storage.layout import monitor_status_key
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("status", help="a running monitor's cameras, partitions and stages")
    parser.add_argument("--name", help="the monitor's name (default: monitor.name of the config)")
    parser.add_argument("--json", action="store_true", help="the status document as JSON")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    name = args.name or config.monitor.name
    store = open_configured_store(config, create=False)
    key = monitor_status_key(name)
    # The lines saying there is no fresh status go to stdout, but to stderr with --json (stdout holds JSON only).
    say = sys.stderr if args.json else sys.stdout
    if not store.exists(key):
        print(f"monitor {name} has published no status in {store.url} (never started there?)", file=say)
        return 1
    try:
        document = store.get_json(key)
        status = MonitorStatus.from_json(document)
    except ValueError as exc:  # a document no vigil wrote, or cut short
        raise ValueError(f"{store.url}: {key}: {exc}") from None
    now = time.time()
    line = freshness_line(status, now)
    if args.json:
        print(json.dumps(document, sort_keys=True))
    if line:
        print(line, file=say)
    elif not args.json:
        print(render(status, now))
    return 1 if line else 0
