"""`vigil monitor`: run the standing queries over camera streams, from Kafka or from files and live URLs
given with --source (embedded mode), until stopped or idle."""

from __future__ import annotations

import argparse

from jobs.commands.common import UsageError, add_common_options, config_from
from jobs.monitor import run_monitor


def register(subparsers) -> None:
    parser = subparsers.add_parser("monitor", help="run standing queries over camera streams (Kafka, or --source)")
    parser.add_argument(
        "--source", action="append", default=[], metavar="URL", help="embedded mode: a file or live URL (repeatable)"
    )
    parser.add_argument("--camera", action="append", default=[], metavar="ID", help="camera id of each --source")
    parser.add_argument("--brokers", help="Kafka brokers host:port[,...] (env VIGIL_KAFKA_BROKERS)")
    parser.add_argument("--idle-exit", type=float, help="stop after this many seconds without frames")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if len(args.source) != len(args.camera):
        raise UsageError("give one --camera ID for each --source URL")
    overrides = {}
    if args.source:
        overrides["sources"] = [{"camera": c, "url": u} for u, c in zip(args.source, args.camera)]
    if args.brokers:
        config = config.model_copy(update={"kafka": config.kafka.model_copy(update={"brokers": args.brokers})})
    if overrides:
        config = config.model_copy(update={"monitor": config.monitor.model_copy(update=overrides)})
        config = type(config).model_validate(config.model_dump())
    report = run_monitor(config, idle_exit=args.idle_exit)
    print(
        f"monitor {config.monitor.name}: {report.frames} frames, {report.batches} batches, "
        f"{report.alerts} alert updates, {report.checkpoints} checkpoints, {report.summaries} summaries, "
        f"{report.dead_letters} dead letters; store: {config.store}"
    )
    return 0
