"""`vigil alerts`: print the alerts the monitor stored, as JSON lines."""

from __future__ import annotations

import argparse
import json

from jobs.commands.common import add_common_options, config_from
from pipeline.live.sink import alert_records
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("alerts", help="print stored alerts as JSON lines")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    for alert in alert_records(open_configured_store(config, create=False)):
        print(json.dumps(alert, sort_keys=True))
    return 0
