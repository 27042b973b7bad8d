"""Benchmark of the segmented clip index: `python -m bench.search`.

Runs by hand (never from the test suite). The vectors are synthetic and no model runs: clustered unit
vectors with the real dimensions (SigLIP2 768, DINOv2 384), as ClipEmbedding rows of many cameras (each
camera sees a few scenes, a scene is a cluster centre in both towers), through the real `ClipIndex` on a
`LocalStore` in a temporary folder. For each index size, in a fresh process:

- **base**: bulk-loaded with large upserts, each saved (sealed at once by the index into one segment, no
  more segments than the index keeps sealed, so nothing is compacted while loading); its wall time is
  reported, not a target;
- **saves**: "making 100 new clips durable and searchable", `upsert(100 clips); save(store)` repeated on
  top of the base (long enough to include the index's own sealing and compaction), p50/p95/max;
- **search**: a SigLIP2 vector query, k=10, over the live rows (encoding excluded: there is no model),
  p50/p99 (again with faiss on one OpenMP thread, for reference), and recall@10 against exact brute force
  over the same live rows;
- **memory**: RSS growth of the writer process per million clips (psutil);
- **layout**: the segment count and kinds of the newest manifest;

then **cold open**, `ClipIndex.load(store)` in another fresh process (its RSS growth too). A size whose
base needs more HNSW building than the time budget allows (estimated from a small build on this machine)
or more memory than is available is not run; one that overruns the budget is stopped; either is reported
as not measured, with the reason. Results go to stdout (or JSON with --json) and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import json
import math
import multiprocessing
import os
import pstats
import queue as queue_module
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

from bench import results
from bench.results import facts_section, markdown_table, plain_table, write_section

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_CLIPS = (10_000, 100_000, 1_000_000)
DIMS = {"siglip": 768, "dinov2": 384}  # SigLIP2-base and DINOv2-small embedding sizes
BLOCK = 100  # clips per save while measuring; the synthetic data is generated in blocks of this many
CAMERAS = 500
CLUSTERS = 1024  # scenes; a camera sees SCENES_PER_CAMERA of them
SCENES_PER_CAMERA = 8
SPREAD = 0.75  # noise norm relative to the unit centre: a clip's cosine to its scene centre is about 0.8
WINDOW = 2.0  # seconds per clip window
K = 10
WARMUP_QUERIES = 10
HNSW_PROBE_ROWS = 20_000
MEMORY_MARGIN = 1.25  # a size runs only when this times its estimated RSS is available
# Targets from the project brief.
SAVE_P95_MS_AT_1M = 100.0
SAVE_P95_RATIO_TO_10K = 2.0
SEARCH_P99_MS_AT_1M = 10.0
RECALL_TARGET = 0.95


# ------------------------------------------------------------------------------------------ synthetic data


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Deterministic clustered unit vectors. Row r is camera r % CAMERAS's window number r // CAMERAS, so a
    block of 100 consecutive rows is the next window of 100 cameras (as a live save would bring)."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        self.centers = {tower: _unit(rng.standard_normal((CLUSTERS, dim))) for tower, dim in DIMS.items()}
        self.scenes = rng.integers(0, CLUSTERS, (CAMERAS, SCENES_PER_CAMERA))

    def vectors(self, first: int, count: int, towers=tuple(DIMS)) -> dict[str, np.ndarray]:
        """Vectors of rows [first, first + count), both multiples of BLOCK."""
        parts = {tower: [] for tower in towers}
        for block in range(first // BLOCK, (first + count) // BLOCK):
            rng = np.random.default_rng([self.seed, 1, block])
            rows = np.arange(block * BLOCK, (block + 1) * BLOCK)
            scene = self.scenes[rows % CAMERAS, rng.integers(0, SCENES_PER_CAMERA, BLOCK)]
            for tower, dim in DIMS.items():  # both drawn always, so a row's vectors do not depend on `towers`
                noise = rng.standard_normal((BLOCK, dim), dtype=np.float32) * (SPREAD / math.sqrt(dim))
                if tower in parts:
                    parts[tower].append(_unit(self.centers[tower][scene] + noise))
        return {tower: np.concatenate(arrays) for tower, arrays in parts.items()}

    @staticmethod
    def key(row: int) -> tuple[str, float]:
        return f"cam-{row % CAMERAS:04d}", (row // CAMERAS) * WINDOW

    def clips(self, first: int, count: int):
        from pipeline.records import ClipEmbedding, ModelIds

        models = ModelIds("synthetic/siglip2-768", "synthetic/dinov2-384", untrained=True)
        vectors = self.vectors(first, count)
        clips = []
        for i in range(count):
            source_id, start = self.key(first + i)
            clips.append(
                ClipEmbedding(
                    source=f"rtsp://cameras.example/{source_id}",
                    source_id=source_id,
                    start=start,
                    end=start + WINDOW,
                    siglip=vectors["siglip"][i],
                    dinov2=vectors["dinov2"][i],
                    keyframe_pts=start,
                    keyframe_key=f"keyframes/{source_id}/{start:012.1f}.jpg",
                    models=models,
                    frame_count=2,
                )
            )
        return clips

    def queries(self, count: int) -> np.ndarray:
        """SigLIP2 query vectors near the scenes the cameras see (as a phrase describing one would be)."""
        rng = np.random.default_rng([self.seed, 2])
        scene = self.scenes[rng.integers(0, CAMERAS, count), rng.integers(0, SCENES_PER_CAMERA, count)]
        noise = rng.standard_normal((count, DIMS["siglip"]), dtype=np.float32) * (SPREAD / math.sqrt(DIMS["siglip"]))
        return _unit(self.centers["siglip"][scene] + noise)

    def exact_top(self, queries: np.ndarray, rows: int, k: int, group: int = 20_000) -> np.ndarray:
        """Brute force: the `k` rows of [0, rows) with the highest SigLIP2 cosine to each query."""
        best_scores = np.full((len(queries), k), -np.inf, np.float32)
        best_rows = np.zeros((len(queries), k), np.int64)
        for first in range(0, rows, group):
            count = min(group, rows - first)
            scores = queries @ self.vectors(first, count, ("siglip",))["siglip"].T
            all_scores = np.concatenate([best_scores, scores], axis=1)
            all_rows = np.concatenate([best_rows, np.broadcast_to(np.arange(first, first + count), scores.shape)], 1)
            top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(all_scores, top, 1)
            best_rows = np.take_along_axis(all_rows, top, 1)
        return best_rows


# ------------------------------------------------------------------------------------------ helpers


def base_chunk(clips: int, seal_rows: int, max_sealed: int) -> int:
    """Rows per bulk upsert: at least `seal_rows` (each save seals its rows into one segment) and few enough
    chunks that the index never has more than `max_sealed` sealed segments (nothing compacted)."""
    chunk = max(seal_rows, math.ceil(clips / max_sealed))
    return math.ceil(chunk / BLOCK) * BLOCK


def base_hnsw_rows(clips: int, settings: dict, max_sealed: int) -> int:
    """Rows of the base that the index seals into HNSW segments (chunks above exact_max)."""
    chunk = base_chunk(clips, settings["seal_rows"], max_sealed)
    sizes = [min(chunk, clips - first) for first in range(0, clips, chunk)]
    if settings["kind"] == "flat":
        return 0
    return sum(
        s for s in sizes if s >= settings["seal_rows"] and (settings["kind"] == "hnsw" or s > settings["exact_max"])
    )


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _busy_seconds() -> tuple[float, float]:
    """CPU seconds busy on the whole machine, and used by this process and its ended children (the sizes'
    processes). As bench.archive counts it: guest time is inside user time; steal counts as busy."""
    times = psutil.cpu_times()
    machine = sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
    ours = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime for who in _RUSAGE)
    return machine, ours


_RUSAGE = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


def layout_of(manifest) -> dict:
    """Segment count, and count and rows per kind, of a manifest."""
    kinds: Counter = Counter()
    rows: Counter = Counter()
    for entry in manifest.segments if manifest else []:
        kinds[entry.kind] += 1
        rows[entry.kind] += entry.rows
    return {
        "generation": manifest.generation if manifest else 0,
        "segments": sum(kinds.values()),
        "kinds": {kind: {"segments": kinds[kind], "rows": rows[kind]} for kind in sorted(kinds)},
    }


def describe_layout(layout: dict) -> str:
    parts = [f"{v['segments']} {kind} ({v['rows']:,} rows)" for kind, v in layout["kinds"].items()]
    return f"{layout['segments']} segments: " + " + ".join(parts) if parts else "empty"


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))  # numpy's linear interpolation


PROFILED = {  # (file suffix, function) -> name in the report
    ("pipeline/search/index.py", "_reindex"): "ClipIndex._reindex (which rows are alive, from scratch)",
    ("pipeline/search/index.py", "_merge"): "ClipIndex._merge (sealing, compaction)",
    ("pipeline/search/segments.py", "write"): "Segment.write (Parquet + npz)",
    ("pipeline/search/manifest.py", "try_commit"): "manifest.try_commit",
    ("pipeline/search/manifest.py", "collect"): "manifest.collect (old generations)",
}


def profile_shares(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of the PROFILED functions in one profiled save."""
    stats = pstats.Stats(profile).stats
    found = dict.fromkeys(PROFILED.values(), 0.0)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        for (suffix, name), label in PROFILED.items():
            if function == name and filename.replace(os.sep, "/").endswith(suffix):
                found[label] += cumulative
    return found


# ------------------------------------------------------------------------------------------ the measurements (children)


def measure_size(clips: int, folder: str, settings: dict, saves: int, queries: int, seed: int, out) -> None:
    """In a fresh process: base, saves, search and recall, writer memory, layout; the result goes to `out`."""
    from pipeline.config import IndexConfig
    from pipeline.search.index import MAX_SEALED, ClipIndex
    from pipeline.search.manifest import read_newest
    from pipeline.storage.store import LocalStore

    def progress(message: str) -> None:
        out.put(("progress", message))

    synthetic = Synthetic(seed)
    store = LocalStore(folder)
    index = ClipIndex(settings=IndexConfig(**settings))
    gc.collect()
    rss_start = _rss()

    chunk = base_chunk(clips, settings["seal_rows"], MAX_SEALED)
    load_seconds = 0.0
    for first in range(0, clips, chunk):
        batch = synthetic.clips(first, min(chunk, clips - first))
        started = time.perf_counter()
        index.upsert(batch)
        index.save(store)
        load_seconds += time.perf_counter() - started
        del batch
        progress(f"base {first + min(chunk, clips - first):,} of {clips:,} clips ({load_seconds:.1f} s)")
    gc.collect()
    rss_base = _rss()
    base_layout = layout_of(read_newest(store))

    rows = clips
    times, maintenance = [], []
    for number in range(saves):
        batch = synthetic.clips(rows, BLOCK)
        generation = index.manifest.generation
        started = time.perf_counter()
        index.upsert(batch)
        index.save(store)
        seconds = time.perf_counter() - started
        rows += BLOCK
        times.append(seconds)
        if index.manifest.generation - generation > 1:  # the save also sealed and/or compacted
            maintenance.append(seconds)
        if (number + 1) % 10 == 0:
            progress(f"saves {number + 1} of {saves} (last {seconds * 1000:.0f} ms)")
    # One more save under cProfile, not timed: where a save's time goes.
    profile = cProfile.Profile()
    batch = synthetic.clips(rows, BLOCK)
    generation = index.manifest.generation
    started = time.perf_counter()
    profile.enable()
    index.upsert(batch)
    index.save(store)
    profile.disable()
    profiled_seconds = time.perf_counter() - started
    profiled_maintenance = index.manifest.generation - generation > 1
    rows += BLOCK
    layout = layout_of(read_newest(store))

    query_vectors = synthetic.queries(WARMUP_QUERIES + queries)
    for vector in query_vectors[:WARMUP_QUERIES]:
        index.search(siglip=vector, k=K)
    latencies, found = [], []
    for vector in query_vectors[WARMUP_QUERIES:]:
        started = time.perf_counter()
        hits = index.search(siglip=vector, k=K)
        latencies.append(time.perf_counter() - started)
        found.append({(hit.source_id, hit.start) for hit in hits})
    # The same queries with faiss on one OpenMP thread (the index's default is all cores): on a shared machine
    # a 2-thread OpenMP team waits for a core another process holds. Reported beside the default, no target.
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    latencies_one = []
    for vector in query_vectors[WARMUP_QUERIES:]:
        started = time.perf_counter()
        index.search(siglip=vector, k=K)
        latencies_one.append(time.perf_counter() - started)
    faiss.omp_set_num_threads(threads)
    progress("search timed; brute force for recall")
    truth = synthetic.exact_top(query_vectors[WARMUP_QUERIES:], rows, K)
    recalls = [len(hits & {Synthetic.key(int(r)) for r in exact}) / K for hits, exact in zip(found, truth)]
    out.put(
        (
            "result",
            {
                "clips": clips,
                "live_rows": len(index),
                "expected_rows": rows,
                "base_chunk": min(chunk, clips),
                "base_seconds": load_seconds,
                "base_layout": base_layout,
                "rss_start": rss_start,
                "rss_base": rss_base,
                "save_ms": [t * 1000 for t in times],
                "maintenance_ms": [t * 1000 for t in maintenance],
                "profiled_save_ms": profiled_seconds * 1000,
                "profiled_save_maintenance": profiled_maintenance,
                "profile_ms": {label: s * 1000 for label, s in profile_shares(profile).items()},
                "layout": layout,
                "search_ms": [t * 1000 for t in latencies],
                "search_one_thread_ms": [t * 1000 for t in latencies_one],
                "recall": float(np.mean(recalls)),
                "recall_min": float(np.min(recalls)),
            },
        )
    )


def open_index(folder: str, settings: dict, out) -> None:
    """In a fresh process: `ClipIndex.load(store)`, its time and RSS growth."""
    from pipeline.config import IndexConfig
    from pipeline.search.index import ClipIndex
    from pipeline.storage.store import LocalStore

    store = LocalStore(folder)
    config = IndexConfig(**settings)
    gc.collect()
    before = _rss()
    started = time.perf_counter()
    index = ClipIndex.load(store, settings=config)
    seconds = time.perf_counter() - started
    gc.collect()
    out.put(("result", {"open_seconds": seconds, "rss_growth": _rss() - before, "rows": len(index)}))


def hnsw_probe(settings: dict, seed: int) -> float:
    """Seconds per row of a sealed HNSW segment (both towers) built by the index's own code, on this
    machine, from HNSW_PROBE_ROWS synthetic rows. Building slows as a segment grows, so this is optimistic."""
    from pipeline.search.segments import IndexRow, Segment

    vectors = Synthetic(seed).vectors(0, HNSW_PROBE_ROWS)
    rows = [IndexRow("s", "s", float(i), float(i) + WINDOW, "k") for i in range(HNSW_PROBE_ROWS)]
    started = time.perf_counter()
    Segment.sealed_from(rows, vectors, "hnsw", settings["hnsw_m"])
    return (time.perf_counter() - started) / HNSW_PROBE_ROWS


class NotMeasured(Exception):
    pass


def in_child(target, args: tuple, deadline: float, log) -> dict:
    """Run `target(*args, queue)` in a fresh spawned process until it reports a result; stopped (by its own
    handle) when `deadline` (time.monotonic) passes."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=target, args=(*args, out), daemon=True)
    child.start()
    last = "starting"
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotMeasured(f"stopped at the time budget; it had reached: {last}")
            try:
                kind, payload = out.get(timeout=min(remaining, 5.0))
            except queue_module.Empty:
                if not child.is_alive():
                    raise NotMeasured(f"the process ended with code {child.exitcode} after: {last}") from None
                continue
            if kind == "result":
                child.join(timeout=60)
                return payload
            last = payload
            log(f"  {payload}")
    finally:
        if child.is_alive():
            child.terminate()
        child.join()


# ------------------------------------------------------------------------------------------ report


def cpu_flags() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    flags = set(line.split(":", 1)[1].split())
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    amx = sorted(f for f in flags if f.startswith("amx"))
    return (
        f"AVX2 {'yes' if 'avx2' in flags else 'no'}; "
        f"AVX-512 {('yes (' + ', '.join(avx512) + ')') if avx512 else 'no'}; "
        f"AMX {('yes (' + ', '.join(amx) + ')') if amx else 'no'}"
    )


def machine_facts() -> dict[str, str]:
    import faiss

    return results.machine_facts(
        **{
            "CPU flags": cpu_flags(),
            "faiss": f"{faiss.__version__} (compiled with: {faiss.get_compile_options().strip()}; "
            f"{faiss.omp_get_max_threads()} OpenMP threads, the default)",
            "numpy": np.__version__,
            "store": "LocalStore in a temporary folder on the local disk (page cache warm, not dropped)",
        }
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def summary_of(result: dict) -> dict:
    """The figures of one measured size."""
    clips = result["clips"]
    save, search = result["save_ms"], result["search_ms"]
    return {
        "save_p50": percentile(save, 50),
        "save_p95": percentile(save, 95),
        "save_max": max(save),
        "search_p50": percentile(search, 50),
        "search_p99": percentile(search, 99),
        "search_one_thread_p99": percentile(result["search_one_thread_ms"], 99),
        "writer_mib_per_million": (result["rss_base"] - result["rss_start"]) / clips * 1e6 / 2**20,
        "open_mib_per_million": result["open"]["rss_growth"] / result["expected_rows"] * 1e6 / 2**20,
    }


TABLE_HEADER = [
    "clips (base)",
    "base load s",
    "save p50 ms",
    "save p95 ms",
    "save max ms",
    "saves sealing/compacting (mean ms)",
    "search p50 ms",
    "search p99 ms",
    "search p99 ms, faiss 1 thread",
    "recall@10 (min)",
    "cold open s",
    "RSS writer MiB / M clips",
    "RSS open MiB / M clips",
    "other cores busy",
]


def table_rows(run: dict) -> list[list[str]]:
    rows = []
    for result in run["sizes"]:
        if "error" in result:
            rows.append([f"{result['clips']:,}"] + ["not measured"] + [""] * (len(TABLE_HEADER) - 2))
            continue
        s = summary_of(result)
        maintenance = result["maintenance_ms"]
        rows.append(
            [
                f"{result['clips']:,}",
                f"{result['base_seconds']:.1f}",
                f"{s['save_p50']:.1f}",
                f"{s['save_p95']:.1f}",
                f"{s['save_max']:.1f}",
                f"{len(maintenance)} of {len(result['save_ms'])}"
                + (f" ({np.mean(maintenance):.0f})" if maintenance else ""),
                f"{s['search_p50']:.2f}",
                f"{s['search_p99']:.2f}",
                f"{s['search_one_thread_p99']:.2f}",
                f"{result['recall']:.3f} ({result['recall_min']:.1f})",
                f"{result['open']['open_seconds']:.2f}",
                f"{s['writer_mib_per_million']:,.0f}",
                f"{s['open_mib_per_million']:,.0f}",
                f"{result['other_cores']:.2f}",
            ]
        )
    return rows


def layout_lines(run: dict) -> list[str]:
    lines = []
    for result in run["sizes"]:
        if "error" in result:
            continue
        lines.append(
            f"- {result['clips']:,}: base (upserts of {result['base_chunk']:,}) "
            f"{describe_layout(result['base_layout'])}; newest manifest (generation "
            f"{result['layout']['generation']}, {result['expected_rows']:,} live rows) "
            f"{describe_layout(result['layout'])}"
        )
    return lines


def target_lines(run: dict) -> list[str]:
    measured = {r["clips"]: summary_of(r) for r in run["sizes"] if "error" not in r}
    missing = {r["clips"]: r["error"] for r in run["sizes"] if "error" in r}
    lines = []
    big, small = 1_000_000, 10_000

    def absent(size: int) -> str:
        return (
            f"not measured ({size:,} did not fit: see Not measured)"
            if size in missing
            else "not measured (size not requested)"
        )

    if big in measured:
        p95 = measured[big]["save_p95"]
        lines.append(
            f"- save of 100 clips, p95 <= {SAVE_P95_MS_AT_1M:g} ms at 1M: {p95:.1f} ms, "
            f"{_met(p95 <= SAVE_P95_MS_AT_1M)}"
        )
    else:
        lines.append(f"- save of 100 clips, p95 <= {SAVE_P95_MS_AT_1M:g} ms at 1M: {absent(big)}")
    if big in measured and small in measured:
        ratio = measured[big]["save_p95"] / measured[small]["save_p95"]
        lines.append(
            f"- save p95 at 1M <= {SAVE_P95_RATIO_TO_10K:g}x its value at 10k: {ratio:.1f}x, "
            f"{_met(ratio <= SAVE_P95_RATIO_TO_10K)}"
        )
    else:
        lines.append(
            f"- save p95 at 1M <= {SAVE_P95_RATIO_TO_10K:g}x its value at 10k: "
            f"{absent(big) if big not in measured else absent(small)}"
        )
        largest = max((size for size in measured if size > small), default=None)
        if largest is not None and small in measured:
            ratio = measured[largest]["save_p95"] / measured[small]["save_p95"]
            lines.append(
                f"  - for reference, at {largest:,} (the largest measured): {ratio:.1f}x the 10k value "
                f"({measured[largest]['save_p95']:.1f} ms vs {measured[small]['save_p95']:.1f} ms)"
            )
    if big in measured:
        p99 = measured[big]["search_p99"]
        lines.append(
            f"- search p99 <= {SEARCH_P99_MS_AT_1M:g} ms at 1M: {p99:.2f} ms, {_met(p99 <= SEARCH_P99_MS_AT_1M)}"
        )
    else:
        lines.append(f"- search p99 <= {SEARCH_P99_MS_AT_1M:g} ms at 1M: {absent(big)}")
    for result in run["sizes"]:
        if "error" not in result:
            recall = result["recall"]
            lines.append(
                f"- recall@10 >= {RECALL_TARGET} at {result['clips']:,}: {recall:.3f}, {_met(recall >= RECALL_TARGET)}"
            )
    return lines


def time_lines(run: dict) -> list[str]:
    """Where a save's time goes, from the profiled save of each size."""
    lines = []
    for result in run["sizes"]:
        if "error" in result:
            continue
        total = result["profiled_save_ms"]
        parts = ", ".join(f"{label} {ms:.0f} ms ({ms / total:.0%})" for label, ms in result["profile_ms"].items() if ms)
        kind = "sealed and/or compacted" if result["profiled_save_maintenance"] else "plain (no sealing)"
        lines.append(f"- {result['clips']:,}: one more save, {kind}, under cProfile: {total:.0f} ms; {parts}.")
    return lines


def not_measured_lines(run: dict) -> list[str]:
    return [f"- {r['clips']:,} clips: {r['error']}" for r in run["sizes"] if "error" in r]


def render_markdown(run: dict) -> str:
    missing = not_measured_lines(run)
    parts = [
        "## Clip index (`python -m bench.search`)",
        "",
        f"`python -m bench.search` on {run['date']}. **The vectors are synthetic and no model runs**: clustered "
        "unit vectors with the real dimensions (SigLIP2 768, DINOv2 384), through the real `ClipIndex` on a "
        "`LocalStore`; search latency therefore excludes query encoding. Each size runs in a fresh process "
        "(cold open in another); all ratios come from this one run.",
        "",
        *facts_section("Machine", run["machine"]),
        *facts_section("Settings", run["settings"]),
        "### Results",
        "",
        "*save* = `upsert(100 clips); save(store)` on top of the base (the clips made durable and searchable); "
        "*saves sealing/compacting* = those of them that also sealed growing segments or compacted sealed ones; "
        "*search* = `ClipIndex.search(siglip=vector, k=10)`; *recall@10* = mean (and worst) overlap with exact "
        "brute force over the same live rows; *cold open* = `ClipIndex.load(store)` in a fresh process; *RSS "
        "writer* = RSS growth of the writing process over the base load; *RSS open* = RSS growth of the cold "
        "open; both per million clips; *other cores busy* = CPU used by other processes on this shared machine, "
        "averaged over the size's whole run (busy neighbours slow every figure).",
        "",
        markdown_table(TABLE_HEADER, table_rows(run)),
        "",
        "Segments (kind, count, rows) after the base load and in the newest manifest after the timed saves:",
        "",
        *layout_lines(run),
        "",
    ]
    if missing:
        parts += ["### Not measured", "", *missing, ""]
    parts += [
        "### Targets",
        "",
        *target_lines(run),
        "",
        "### Where a save's time goes",
        "",
        *time_lines(run),
        "",
    ]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.config import IndexConfig

    defaults = IndexConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clips",
        type=int,
        action="append",
        help="index size (clips in the base; a multiple of 100); repeatable (default 10000 100000 1000000)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress on stderr)")
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH_DIR / "RESULTS.md",
        help="markdown report whose bench.search section is rewritten (default bench/RESULTS.md)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "out",
        help="folder for the temporary stores, deleted after each size (default bench/out)",
    )
    parser.add_argument("--saves", type=int, default=100, help="timed saves of 100 clips per size (default 100)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size (default 200)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=15.0,
        help="wall time allowed per size, cold open included (default 15; 0: no limit and no feasibility checks)",
    )
    parser.add_argument("--seal-rows", type=int, default=defaults.seal_rows, help="IndexConfig.seal_rows")
    parser.add_argument("--exact-max", type=int, default=defaults.exact_max, help="IndexConfig.exact_max")
    parser.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help="IndexConfig.hnsw_m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.clips = sorted(set(args.clips or DEFAULT_CLIPS))
    if any(n < BLOCK or n % BLOCK for n in args.clips):
        parser.error(f"--clips must be positive multiples of {BLOCK}")
    if args.saves < 30 or args.queries < 200:
        parser.error("the brief asks for at least 30 saves and 200 queries")
    return args


def run_size(clips: int, args, settings: dict, log, memory_per_clip: float | None, hnsw_seconds) -> dict:
    """One size: checked for time and memory first, then measured in fresh processes."""
    from pipeline.search.index import MAX_SEALED

    budget = args.budget_minutes * 60 or math.inf
    if budget < math.inf:
        problems, notes = [], []
        hnsw_rows = base_hnsw_rows(clips, settings, MAX_SEALED)
        if hnsw_rows:
            per_row = hnsw_seconds()
            estimate = hnsw_rows * per_row
            text = (
                f"the base alone needs {hnsw_rows:,} rows sealed into HNSW (hnsw_m={settings['hnsw_m']}, both towers), "
                f"at least {estimate / 60:.0f} min at this machine's rate on a {HNSW_PROBE_ROWS:,}-row probe "
                f"({1 / per_row:,.0f} rows/s, a rate that only falls as segments grow; the compactions the timed saves "
                "trigger come on top)"
            )
            (problems if estimate > budget else notes).append(text)
        if memory_per_clip is not None:
            need = memory_per_clip * (clips + (args.saves + 1) * BLOCK) * MEMORY_MARGIN
            available = psutil.virtual_memory().available
            text = (
                f"memory about {need / 2**30:.1f} GiB (RSS per clip of the largest size measured, x{MEMORY_MARGIN}) "
                f"with {available / 2**30:.1f} GiB available"
            )
            (problems if need > available else notes).append(text)
        if problems:
            raise NotMeasured(
                f"does not fit this machine within the {args.budget_minutes:g} min budget: "
                + "; ".join(problems)
                + (" (" + "; ".join(notes) + ": would fit)" if notes else "")
            )
    deadline = time.monotonic() + budget
    args.out.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"vigil-bench-search-{clips}-", dir=args.out)
    try:
        result = in_child(measure_size, (clips, folder, settings, args.saves, args.queries, args.seed), deadline, log)
        if result["live_rows"] != result["expected_rows"]:
            raise RuntimeError(f"{result['live_rows']} live rows, {result['expected_rows']} expected")
        log("  cold open")
        result["open"] = in_child(open_index, (folder, settings), deadline, log)
        if result["open"]["rows"] != result["expected_rows"]:
            raise RuntimeError(f"cold open found {result['open']['rows']} rows, {result['expected_rows']} expected")
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    from pipeline.search.index import MAX_GROWING, MAX_SEALED
    from pipeline.search.manifest import KEEP_GENERATIONS

    args = parse_args(argv)
    args.out = args.out.expanduser().resolve()
    stream = sys.stderr if args.json else sys.stdout

    def log(message: str) -> None:
        print(message, file=stream, flush=True)

    settings = {"kind": "auto", "seal_rows": args.seal_rows, "exact_max": args.exact_max, "hnsw_m": args.hnsw_m}
    probe: list[float] = []

    def hnsw_seconds() -> float:
        if not probe:
            log(f"probing HNSW build speed ({HNSW_PROBE_ROWS:,} rows) ...")
            probe.append(hnsw_probe(settings, args.seed))
        return probe[0]

    sizes, memory_per_clip = [], None
    load_at_start = f"{os.getloadavg()[0]:.2f}"
    for clips in args.clips:
        log(f"{clips:,} clips ...")
        started, (machine_before, ours_before) = time.monotonic(), _busy_seconds()
        try:
            result = run_size(clips, args, settings, log, memory_per_clip, hnsw_seconds)
        except NotMeasured as exc:
            log(f"  not measured: {exc}")
            sizes.append({"clips": clips, "error": str(exc)})
            continue
        result["wall_seconds"] = time.monotonic() - started
        machine_after, ours_after = _busy_seconds()
        others = (machine_after - machine_before) - (ours_after - ours_before)
        result["other_cores"] = max(0.0, others) / result["wall_seconds"]
        growth = result["rss_base"] - result["rss_start"]
        # per clip at the largest size measured so far (sizes run smallest first): fixed costs weigh least there
        memory_per_clip = max(growth, result["open"]["rss_growth"]) / clips
        s = summary_of(result)
        log(
            f"  save p95 {s['save_p95']:.1f} ms, search p99 {s['search_p99']:.2f} ms, recall@10 "
            f"{result['recall']:.3f}, cold open {result['open']['open_seconds']:.2f} s "
            f"({result['wall_seconds']:.0f} s in all)"
        )
        sizes.append(result)

    run = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_facts(),
        "settings": {
            "IndexConfig": f"kind=auto, seal_rows={args.seal_rows}, exact_max={args.exact_max}, "
            f"hnsw_m={args.hnsw_m} (HNSW efConstruction 80, efSearch 128: fixed in pipeline.search.segments)",
            "index constants": f"MAX_SEALED={MAX_SEALED}, MAX_GROWING={MAX_GROWING}, "
            f"KEEP_GENERATIONS={KEEP_GENERATIONS}",
            "vectors": f"synthetic, seed {args.seed}: {CLUSTERS} scene centres per tower, {CAMERAS} cameras seeing "
            f"{SCENES_PER_CAMERA} scenes each; a clip = its scene centre + Gaussian noise of norm ~{SPREAD}, "
            "normalised (cosine ~0.8 to the centre); 2 s windows; queries are drawn the same way (SigLIP2 only)",
            "base": "bulk-loaded: upserts of max(seal_rows, clips / MAX_SEALED) rows, each saved (and sealed at "
            "once); the base load time is reported, not a target",
            "saves": f"{args.saves} timed, {BLOCK} clips each (the next window of {BLOCK} cameras), then one more "
            "under cProfile",
            "queries": f"{args.queries} timed after {WARMUP_QUERIES} untimed, k={K}, one at a time",
            "percentiles": "numpy linear interpolation",
            "time budget": f"{args.budget_minutes:g} min per size (base, saves, search, brute force, cold open)",
        },
        "sizes": sizes,
    }
    if probe:
        run["settings"]["HNSW probe"] = (
            f"{1 / probe[0]:,.0f} rows/s sealed into HNSW (both towers, {HNSW_PROBE_ROWS:,} rows, hnsw_m={args.hnsw_m})"
        )
    run["machine"]["load average (1 min) at start"] = load_at_start
    run["machine"]["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    if args.json:
        print(json.dumps(run, indent=1))
    else:
        print()
        print("SYNTHETIC vectors, no model runs: index and store cost only.\n")
        print(plain_table(TABLE_HEADER, table_rows(run)))
        print()
        print(
            "\n".join(
                line.replace("**", "") for line in [*layout_lines(run), *not_measured_lines(run), *target_lines(run)]
            )
        )
    write_section(args.results, "bench.search", render_markdown(run))
    log(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
