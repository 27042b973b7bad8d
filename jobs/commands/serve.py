"""`vigil serve`: the HTTP API and web page over the store, on Ray Serve.

vigil serve                                   # http://127.0.0.1:8000 (the page at /, OpenAPI /openapi.json)
VIGIL_SERVE_TOKEN=... vigil serve --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse

from jobs.commands.common import UsageError, add_common_options, config_from
from jobs.serve import ServeRefused, serve_until_stopped


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="the HTTP API and web page: search, alerts, queries, summaries")
    parser.add_argument("--host", help="the address to bind (serve.host; anything but loopback needs a token)")
    parser.add_argument("--port", type=int, help="serve.port")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args, {"serve.host": args.host, "serve.port": args.port})
    try:
        serve_until_stopped(config)
    except ServeRefused as exc:
        raise UsageError(str(exc)) from None
    return 0
