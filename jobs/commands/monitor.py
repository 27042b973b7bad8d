"""`vigil monitor`: run the standing queries over camera streams, from Kafka or from files and live URLs
given with --source (embedded mode), until stopped or idle.

Exit status: 0 when stopped or idle, 2 for bad arguments, a source that cannot be read, unreachable brokers or
a stage that failed, each told in one line.
"""

from __future__ import annotations

import argparse

from actors.stages import StageFailed
from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from
from jobs.monitor import MonitorError, run_monitor


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
    if len(args.source) != len(args.camera):
        raise UsageError("give one --camera ID for each --source URL")
    checked_cameras(args.camera)
    sources = [{"camera": camera, "url": url} for url, camera in zip(args.source, args.camera)]
    config = config_from(args, {"monitor.sources": sources or None})
    try:
        report = run_monitor(config, idle_exit=args.idle_exit)
    except (MonitorError, StageFailed) as exc:
        raise UsageError(str(exc)) from None
    print(
        f"monitor {config.monitor.name}: {report.frames} frames, {report.batches} batches, "
        f"{report.alerts} alert updates, {report.checkpoints} checkpoints, {report.summaries} summaries, "
        f"{report.dead_letters} dead letters, {report.recoveries} recoveries ({report.recovery_seconds:.1f} s); "
        f"store: {config.store}"
    )
    return 0
