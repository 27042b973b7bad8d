"""The `vigil` command line: the parser built from the command modules (jobs/commands/), and the dispatch."""

from __future__ import annotations

import argparse
import os
import sys

from actors.stages import StageFailed
from jobs.commands import (
    alerts,
    demo,
    import_clips,
    index,
    ingest,
    monitor,
    query,
    remove,
    search,
    serve,
    status,
    summarize,
    track,
    tracks,
)
from jobs.commands.common import UsageError
from pipeline.config import ConfigError
from pipeline.media.decode import VideoDecodeError
from pipeline.models import ModelUnavailableError
from pipeline.search.index import IndexMismatchError
from pipeline.storage.store import StoreError

COMMANDS = (
    index,
    search,
    remove,
    import_clips,
    demo,
    ingest,
    summarize,
    track,
    tracks,
    monitor,
    status,
    query,
    alerts,
    serve,
)  # the order `vigil --help` lists


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil", description="Index video and find moments by phrase or example image."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: its exit status, with a one-line message instead of a traceback for bad input, a
    store or file system that fails (2), or Ctrl-C (130, the shell's code for SIGINT)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"vigil {args.command}: interrupted", file=sys.stderr)
        return 130
    except (
        UsageError,
        ConfigError,
        StoreError,
        ModelUnavailableError,
        IndexMismatchError,
        VideoDecodeError,
        StageFailed,
        ValueError,
        OSError,  # a file named on the command line, or an output folder, that cannot be read or written
    ) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """The `vigil` program: `main`, then its exit status. After Ctrl-C it exits at once: threads still waiting
    on a stage (a Ray call that will not return now) would otherwise hold the process open."""
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
