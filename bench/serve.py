"""Benchmark of `vigil serve`: `python -m bench.serve`.

Runs by hand (never from the test suite). Builds a store of `--clips` synthetic clip rows (100k by default; the
clustered vectors of bench.search, stamped with the served models' ids) and random-weight checkpoints of the
real sizes (SigLIP2-base, DINOv2-small: bench.archive's), serves it with Ray Serve on loopback, and drives
`POST /v1/search` with text queries from a loopback load generator (`--concurrency` requests in flight, for
`--seconds` each):

- with 1 and 2 replicas of the encoder and search deployments, the encoder batching phrases (`serve.batch_max`);
- with 1 replica and batching off (`serve.batch_max` 1): the batching gain is requests/s batched over unbatched.

Latency is measured by the client, whole ("including text encoding"), and less the encoding time the server
reports in its `Server-Timing` header ("excluding text encoding"). Results go to stdout and the `bench.serve`
section of bench/RESULTS.md. The checkpoints are untrained: this measures speed, never accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench import results
from bench.results import busy_seconds, facts_section, markdown_table, plain_table, write_section

BENCH_DIR = Path(__file__).resolve().parent
PHRASES = [
    "a person climbing the fence", "a red car leaving the car park", "ein Lieferwagen vor dem Tor",
    "une personne avec un parapluie", "two people talking at the door", "a dog crossing the road",
    "un camion de basura", "a cyclist at night", "someone carrying a ladder", "a crowd at the entrance",
]  # fmt: skip
UPSERT_ROWS = 20_000
BATCH_MAX = 16  # serve.batch_max's default


def build_store(out: Path, clips: int, seed: int, models) -> Path:
    """A store of `clips` synthetic rows made as if by `models` (their ids), rebuilt when the count changed."""
    from bench.search import Synthetic
    from pipeline.records import ModelIds
    from pipeline.search.index import ClipIndex
    from pipeline.storage.store import LocalStore

    store_dir = out / f"serve-store-{clips}"
    marker = store_dir / ".complete"
    if marker.is_file():
        return store_dir
    shutil.rmtree(store_dir, ignore_errors=True)
    store = LocalStore(store_dir)
    index = ClipIndex.load(store)
    synthetic = Synthetic(seed)
    ids = ModelIds(models.siglip, models.dinov2, untrained=True)
    for first in range(0, clips, UPSERT_ROWS):
        batch = synthetic.clips(first, min(UPSERT_ROWS, clips - first), models=ids)
        index.upsert(batch)
        index.save(store)
    index.wait_for_maintenance()
    index.save(store)
    marker.write_text(str(clips))
    return store_dir


async def load(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """`concurrency` clients posting text searches back to back for `seconds`: requests/s and latencies."""
    whole: list[float] = []
    without_encoding: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            sent = number
            while time.perf_counter() < deadline:
                body = {"text": PHRASES[sent % len(PHRASES)], "top_k": 10}
                sent += concurrency
                started = time.perf_counter()
                response = await http.post("/v1/search", json=body)
                took = time.perf_counter() - started
                if response.status_code != 200:
                    errors += 1
                    continue
                timings = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
                whole.append(took)
                without_encoding.append(took - float(timings["encode"]) / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "requests": len(whole),
        "errors": errors,
        "requests_per_second": len(whole) / wall,
        "p50_ms": 1000 * float(np.percentile(whole, 50)),
        "p99_ms": 1000 * float(np.percentile(whole, 99)),
        "p50_ms_without_encoding": 1000 * float(np.percentile(without_encoding, 50)),
        "p99_ms_without_encoding": 1000 * float(np.percentile(without_encoding, 99)),
    }


def run_config(store: Path, models, replicas: int, batch_max: int, args: argparse.Namespace) -> dict[str, Any]:
    from jobs.serve import start_serving, stop_serving
    from pipeline.config import load_config

    bounds = {"min_replicas": replicas, "max_replicas": replicas}
    config = load_config(
        None,
        {
            "store": str(store),
            "models": f"{models.siglip},{models.dinov2}",
            "precision": args.precision,
            "serve.port": args.port,
            "serve.encoder": bounds,
            "serve.search": bounds,
            "serve.batch_max": batch_max,
        },
    )
    url = start_serving(config)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    asyncio.run(load(url, 3.0, args.concurrency))  # warm-up: first calls of each replica
    cpu_before = psutil.cpu_times()
    measured = asyncio.run(load(url, args.seconds, args.concurrency))
    cpu_after = psutil.cpu_times()
    stop_serving()
    measured["cores_busy"] = (busy_seconds(cpu_after) - busy_seconds(cpu_before)) / args.seconds
    return {"replicas": replicas, "batch_max": batch_max, **measured}


HEADER = ["replicas", "batching", "requests/s", "p50 ms", "p99 ms", "p50 ms w/o encoding", "p99 ms w/o encoding",
          "requests", "errors", "cores busy"]  # fmt: skip


def rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [str(r["replicas"]), f"up to {r['batch_max']}" if r["batch_max"] > 1 else "off",
         f"{r['requests_per_second']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
         f"{r['p50_ms_without_encoding']:.1f}", f"{r['p99_ms_without_encoding']:.1f}", str(r["requests"]),
         str(r["errors"]), f"{r['cores_busy']:.2f}"]
        for r in runs
    ]  # fmt: skip


def render(run: dict[str, Any]) -> str:
    batched = next(r for r in run["runs"] if r["replicas"] == 1 and r["batch_max"] > 1)
    unbatched = next(r for r in run["runs"] if r["batch_max"] == 1)
    gain = batched["requests_per_second"] / unbatched["requests_per_second"]
    return "\n".join(
        [
            "## Serving (`python -m bench.serve`)",
            "",
            f"Run {run['started']}: `POST /v1/search` with text queries over {run['clips']:,} stored clips "
            f"(synthetic clustered vectors), {run['concurrency']} loopback clients back to back for "
            f"{run['seconds']:g} s per row, after a 3 s warm-up. UNTRAINED random-weight checkpoints of the real "
            f"sizes (SigLIP2-base, DINOv2-small), precision {run['precision']}: speed only, never accuracy. "
            "*w/o encoding*: the client's latency less the encoding time the server reports (`Server-Timing`). "
            "The load generator runs on the same machine, sharing its cores.",
            "",
            *facts_section("Machine", run["machine"]),
            markdown_table(HEADER, rows(run["runs"])),
            "",
            f"Batching gain (1 replica, batching up to {batched['batch_max']} against off): {gain:.2f}x requests/s.",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.archive import prepare_models

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print("UNTRAINED random-weight checkpoints (real sizes): speed only, never accuracy.", flush=True)
    models = prepare_models(args.out)
    store = build_store(args.out, args.clips, args.seed, models)
    load_average = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    run = {
        "started": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": results.machine_facts(**{"load average at start (1, 5, 15 min)": load_average}),
        "clips": args.clips,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "precision": args.precision,
        "runs": [],
    }
    for replicas, batch_max in ((1, BATCH_MAX), (2, BATCH_MAX), (1, 1)):
        measured = run_config(store, models, replicas, batch_max, args)
        print(plain_table(HEADER, rows([measured])), flush=True)
        run["runs"].append(measured)
    markdown = render(run)
    write_section(args.results, "bench.serve", markdown)
    print(markdown.rsplit("\n", 1)[-1])
    print(f"written to {args.results} (section bench.serve)")
    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="of load per configuration")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="cached checkpoints and store")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
