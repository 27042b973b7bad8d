"""Benchmark of the segmented clip index: `python -m bench.search`.

Runs by hand (never from the test suite). The vectors are synthetic and no model runs: clustered unit
vectors with the real dimensions (SigLIP2 768, DINOv2 384), as ClipEmbedding rows of CAMERAS cameras with
wall-clock recording times (each camera sees a few scenes, a scene is a cluster centre in both towers),
through the real `ClipIndex` on a `LocalStore` in a temporary folder. For each index size, in a fresh process:

- **base**: bulk-built, never through saves of 100: upserts of up to 100k rows, saved (with
  `background=False`, so each save seals at once) every `--base-chunk` rows at most, in equal chunks; the
  index picks each sealed segment's kind itself (`kind=auto`: a 333k-row chunk of 1M is IVF, 100k HNSW, 10k
  flat). Its wall time and the segments that result are reported, not a target;
- **saves**: "making 100 new clips durable and searchable", `upsert(100 clips); save(store)` on top of the
  base with the default background maintenance (sealing runs in the writer's thread meanwhile), p50/p95/max;
  then a few more saves under cProfile (where a save's time goes);
- **search** (background maintenance finished first; query encoding excluded: there is no model): a SigLIP2
  vector query, k=10, unfiltered (also with faiss on one OpenMP thread, for reference); with a
  `ClipFilter` of one camera's source id and a wall-clock `TimeRange` (a quarter of its history); with a
  wall-clock range alone (a tenth of the history, every camera). Recall@10 against exact brute force over
  the same live rows and the same filter; cProfile of the unfiltered and camera+time queries;
- **checkpoint**: what a monitor checkpoint costs end to end, `Sink.checkpoint` (upsert the clips of 10
  cameras x 5 windows, `index.save`, put the checkpoint JSON) with `Sink(store, index, publish=None)`; the
  clips go through `Sink.write` first, untimed. Also run on a 1k-clip index, for the ratio;
- **compaction**: a compaction merging the flat segments and the smallest large one (forced by lowering
  `pipeline.search.index.MAX_SEALED` in this process), run by the index's own background thread while the
  main thread searches back to back; search latency meanwhile and the compaction's duration;

then **cold open**, `ClipIndex.load(store)` in another fresh process (seconds, RSS, first searches), which then
times the unfiltered and camera + time searches again as a reader (the latency targets are judged there:
vigil searches in processes that open the index, never in the writer). The
**kinds** (flat, hnsw, ivf, ivf_sq8) are measured on a sample (`--kinds-sample`, 100k): one sealed segment
each, forced by `IndexConfig.kind`; the bytes of its FAISS indexes (both towers, `faiss.serialize_index`,
which matches what they hold in memory: vectors or codes, graph links, IVF ids, direct maps), scaled to
1M, and its search latency and recall@10. A child process that passes the per-size time budget or the RSS
limit is stopped: what it measured until then is kept, the rest is reported as not measured, with the
phase it had reached. Results go to stdout (or JSON with --json) and bench/RESULTS.md.
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
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

from bench import results
from bench.results import busy_seconds, facts_section, markdown_table, plain_table, write_section

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_CLIPS = (10_000, 100_000, 1_000_000)
DIMS = {"siglip": 768, "dinov2": 384}  # SigLIP2-base and DINOv2-small embedding sizes
BLOCK = 100  # clips per save while measuring; the synthetic data is generated in blocks of this many
CAMERAS = 100  # row r is camera r % CAMERAS's window r // CAMERAS: a block of 100 rows is every camera's next window
CLUSTERS = 1024  # scenes; a camera sees SCENES_PER_CAMERA of them
SCENES_PER_CAMERA = 8
SPREAD = 0.75  # noise norm relative to the unit centre: a clip's cosine to its scene centre is about 0.8
WINDOW = 2.0  # seconds per clip window
EPOCH = 1_793_491_200.0  # 2026-11-01T00:00:00Z: the recording time of every camera's window 0
K = 10
WARMUP_QUERIES = 10
UPSERT_ROWS = 100_000  # rows per upsert while bulk-building (bounds the synthetic data held at once)
CAMERA_SPAN = 0.25  # the camera + time filter covers this share of the camera's history
TIME_SPAN = 0.10  # the time-only filter covers this share of the history (every camera)
QUERY_SETS = ("all", "camera+time", "time")
READER_QUERY_SETS = ("all", "camera+time")  # the sets with a latency target, timed again in a reader process
CHECKPOINT_CAMERAS, CHECKPOINT_WINDOWS = 10, 5
KINDS = ("flat", "hnsw", "ivf", "ivf_sq8")
GIB = 2**30
# Targets from the issue.
SAVE_P95_MS_AT_1M = 100.0
SAVE_P95_RATIO_TO_10K = 2.0
SEARCH_P99_MS_AT_1M = 10.0
FILTERED_P99_MS_AT_1M = 20.0
RECALL_TARGET = 0.95
BIG, SMALL = 1_000_000, 10_000


# ------------------------------------------------------------------------------------------ synthetic data


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _camera_ids() -> list[str]:
    from pipeline.storage.layout import camera_source_id

    return [camera_source_id(f"cam-{c:03d}") for c in range(CAMERAS)]


class QuerySet:
    """Query vectors, each with its filter: a camera (-1: any) and a wall-clock range [lo, hi) (infinite: none)."""

    def __init__(self, name: str, vectors: np.ndarray, cameras: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        self.name, self.vectors, self.cameras, self.lo, self.hi = name, vectors, cameras, lo, hi

    def __len__(self) -> int:
        return len(self.vectors)

    def filters(self, source_ids: list[str]) -> list:
        from pipeline.search.filters import ClipFilter, TimeRange

        out = []
        for camera, lo, hi in zip(self.cameras, self.lo, self.hi):
            sources = None if camera < 0 else [source_ids[camera]]
            time_range = TimeRange(float(lo), float(hi)) if math.isfinite(lo) else None
            out.append(ClipFilter.of(sources, time_range))
        return out

    def head(self, count: int) -> QuerySet:
        return QuerySet(self.name, *(a[:count] for a in (self.vectors, self.cameras, self.lo, self.hi)))

    def tail(self, skip: int) -> QuerySet:
        return QuerySet(self.name, *(a[skip:] for a in (self.vectors, self.cameras, self.lo, self.hi)))


class Synthetic:
    """Deterministic clustered unit vectors; row r is camera r % CAMERAS's window number r // CAMERAS."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        self.centers = {tower: _unit(rng.standard_normal((CLUSTERS, dim))) for tower, dim in DIMS.items()}
        self.scenes = rng.integers(0, CLUSTERS, (CAMERAS, SCENES_PER_CAMERA))
        self.source_ids = _camera_ids()

    def vectors(self, first: int, count: int, towers=tuple(DIMS)) -> dict[str, np.ndarray]:
        """Vectors of rows [first, first + count), both multiples of BLOCK. The towers are drawn in DIMS order
        from one generator per block, so a row's vectors do not depend on `towers`."""
        parts = {tower: [] for tower in towers}
        last = max(list(DIMS).index(tower) for tower in towers)
        for block in range(first // BLOCK, (first + count) // BLOCK):
            rng = np.random.default_rng([self.seed, 1, block])
            rows = np.arange(block * BLOCK, (block + 1) * BLOCK)
            scene = self.scenes[rows % CAMERAS, rng.integers(0, SCENES_PER_CAMERA, BLOCK)]
            for tower, dim in list(DIMS.items())[: last + 1]:
                noise = rng.standard_normal((BLOCK, dim), dtype=np.float32) * (SPREAD / math.sqrt(dim))
                if tower in parts:
                    parts[tower].append(_unit(self.centers[tower][scene] + noise))
        return {tower: np.concatenate(arrays) for tower, arrays in parts.items()}

    def key(self, row: int) -> tuple[str, float]:
        return self.source_ids[row % CAMERAS], (row // CAMERAS) * WINDOW

    def clips(self, first: int, count: int, cameras: int = CAMERAS, models=None):
        """ClipEmbedding rows [first, first + count) (of the first `cameras` cameras only), made as if by `models`
        (ModelIds; by default synthetic ones)."""
        from pipeline.records import ClipEmbedding, ModelIds

        models = models or ModelIds("synthetic/siglip2-768", "synthetic/dinov2-384", untrained=True)
        vectors = self.vectors(first, count)
        clips = []
        for i in range(count):
            row = first + i
            if row % CAMERAS >= cameras:
                continue
            source_id, start = self.key(row)
            clips.append(
                ClipEmbedding(
                    source=f"cam-{row % CAMERAS:03d}",
                    source_id=source_id,
                    start=start,
                    end=start + WINDOW,
                    siglip=vectors["siglip"][i],
                    dinov2=vectors["dinov2"][i],
                    keyframe_pts=start,
                    keyframe_key=f"keyframes/{source_id}/{int(start * 1000):012d}.jpg",
                    models=models,
                    frame_count=2,
                    recorded_at=EPOCH + start,
                )
            )
        return clips

    def query_set(self, name: str, count: int, rows: int) -> QuerySet:
        """`count` SigLIP2 query vectors near scenes the cameras see (as a phrase describing one would be), with
        the filters of set `name` over an index of rows [0, rows) (every camera has rows // CAMERAS windows)."""
        rng = np.random.default_rng([self.seed, 2, QUERY_SETS.index(name)])
        cameras = rng.integers(0, CAMERAS, count)
        scene = self.scenes[cameras, rng.integers(0, SCENES_PER_CAMERA, count)]
        noise = rng.standard_normal((count, DIMS["siglip"]), dtype=np.float32) * (SPREAD / math.sqrt(DIMS["siglip"]))
        vectors = _unit(self.centers["siglip"][scene] + noise)
        windows = rows // CAMERAS
        lo, hi = np.full(count, -np.inf), np.full(count, np.inf)
        if name == "all":
            return QuerySet(name, vectors, np.full(count, -1), lo, hi)
        span = max(1, round((CAMERA_SPAN if name == "camera+time" else TIME_SPAN) * windows))
        first = rng.integers(0, windows - span + 1, count)
        lo, hi = EPOCH + first * WINDOW, EPOCH + (first + span) * WINDOW
        return QuerySet(name, vectors, cameras if name == "camera+time" else np.full(count, -1), lo, hi)

    def exact_top(self, sets: list[QuerySet], rows: int, k: int, group: int = 20_000) -> list[list[list[int]]]:
        """Brute force over rows [0, rows): for each set and query, the rows (at most `k`) its filter lets
        through with the highest SigLIP2 cosine. The filter is `ClipFilter`'s: the camera, and the clip
        [recorded, recorded + WINDOW) overlapping [lo, hi)."""
        queries = np.concatenate([s.vectors for s in sets])
        cameras = np.concatenate([s.cameras for s in sets])[:, None]
        lo = np.concatenate([s.lo for s in sets])[:, None]
        hi = np.concatenate([s.hi for s in sets])[:, None]
        best_scores = np.full((len(queries), k), -np.inf, np.float32)
        best_rows = np.full((len(queries), k), -1, np.int64)
        for first in range(0, rows, group):
            count = min(group, rows - first)
            numbers = np.arange(first, first + count)
            recorded = EPOCH + (numbers // CAMERAS) * WINDOW
            scores = queries @ self.vectors(first, count, ("siglip",))["siglip"].T
            passes = ((cameras < 0) | (cameras == numbers % CAMERAS)) & (recorded + WINDOW > lo) & (recorded < hi)
            scores[~passes] = -np.inf
            all_scores = np.concatenate([best_scores, scores], axis=1)
            all_rows = np.concatenate([best_rows, np.broadcast_to(numbers, scores.shape)], axis=1)
            top = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(all_scores, top, 1)
            best_rows = np.take_along_axis(all_rows, top, 1)
        found = [[int(r) for r, s in zip(rs, ss) if np.isfinite(s)] for rs, ss in zip(best_rows, best_scores)]
        out, start = [], 0
        for s in sets:
            out.append(found[start : start + len(s)])
            start += len(s)
        return out


# ------------------------------------------------------------------------------------------ helpers


def base_chunks(clips: int, max_chunk: int) -> list[int]:
    """Rows per sealed base segment: as few equal chunks (multiples of BLOCK) of at most `max_chunk` as cover
    `clips`."""
    count = math.ceil(clips / max_chunk)
    size = math.ceil(clips / count / BLOCK) * BLOCK
    return [min(size, clips - first) for first in range(0, clips, size)]


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _busy_seconds() -> tuple[float, float]:
    """CPU seconds busy on the whole machine, and used by this process and its ended children. Guest time is
    inside user time; steal counts as busy."""
    machine = busy_seconds(psutil.cpu_times())
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
    return float(np.percentile(np.asarray(values), q)) if len(values) else math.nan  # linear interpolation


PROFILED = {  # (file suffix, function) -> name in the report
    ("pipeline/search/index.py", "upsert"): "ClipIndex.upsert",
    ("pipeline/search/segments.py", "write"): "Segment.write (Parquet + npz)",
    ("pipeline/search/manifest.py", "try_commit"): "manifest.try_commit",
    ("pipeline/search/manifest.py", "collect"): "manifest.collect (old generations)",
    ("pipeline/search/index.py", "_start_maintenance"): "ClipIndex._start_maintenance (snapshot for the thread)",
    ("pipeline/search/index.py", "_take_up_maintenance"): "ClipIndex._take_up_maintenance",
}


def profile_shares(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative seconds of the PROFILED functions."""
    stats = pstats.Stats(profile).stats
    found = dict.fromkeys(PROFILED.values(), 0.0)
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        for (suffix, name), label in PROFILED.items():
            if function == name and filename.replace(os.sep, "/").endswith(suffix):
                found[label] += cumulative
    return found


def _function_label(filename: str, line: int, function: str) -> str:
    path = filename.replace(os.sep, "/")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if path == "~":
        return function
    return f"{path}:{function}"


def top_functions(profile: cProfile.Profile, calls: int, count: int = 6) -> list[tuple[str, float]]:
    """The functions with the most own time (ms per call of the profiled operation)."""
    stats = pstats.Stats(profile).stats
    ranked = sorted(stats.items(), key=lambda item: -item[1][2])[:count]
    return [(_function_label(*key), value[2] / calls * 1000) for key, value in ranked]


def send(out, kind: str, *payload) -> None:
    out.put((kind, *payload))


# ------------------------------------------------------------------------------------------ the measurements (children)


def _time_queries(index, queries: QuerySet, filters: list, keep: bool = True):
    latencies, found = [], []
    for vector, where in zip(queries.vectors, filters):
        started = time.perf_counter()
        hits = index.search(siglip=vector, k=K, where=where)
        latencies.append((time.perf_counter() - started) * 1000)
        if keep:
            found.append({(hit.source_id, hit.start) for hit in hits})
    return latencies, found


def measure_size(clips: int, folder: str, config: dict, options: dict, phases: tuple[str, ...], out) -> None:
    """In a fresh process: the phases of one size (base always first); each part goes to `out` when measured."""
    import faiss

    from pipeline.config import IndexConfig
    from pipeline.search.index import ClipIndex, freeze_long_lived
    from pipeline.search.manifest import read_newest
    from pipeline.storage.store import LocalStore

    def progress(message: str) -> None:
        send(out, "progress", message)

    def part(name: str, value: dict) -> None:
        value["rss"], value["peak_rss"] = _rss(), _peak_rss()
        send(out, "part", name, value)

    synthetic = Synthetic(options["seed"])
    store = LocalStore(folder)
    index = ClipIndex(settings=IndexConfig(**config, background=False))
    gc.collect()
    rss_start = _rss()

    # ---- base: bulk upserts, a save (sealing at once) per chunk
    chunks = base_chunks(clips, options["base_chunk"])
    started = time.perf_counter()
    first = 0
    for chunk in chunks:
        for sub in range(first, first + chunk, UPSERT_ROWS):
            batch = synthetic.clips(sub, min(UPSERT_ROWS, first + chunk - sub))
            index.upsert(batch)
            del batch
        index.save(store)
        first += chunk
        progress(f"base {first:,} of {clips:,} clips ({time.perf_counter() - started:.0f} s)")
    base_seconds = time.perf_counter() - started
    gc.collect()
    part(
        "base",
        {
            "seconds": base_seconds,
            "chunks": chunks,
            "layout": layout_of(read_newest(store)),
            "rss_start": rss_start,
            "rss_base": _rss(),
        },
    )
    index.settings = index.settings.model_copy(update={"background": True})  # the default from here on
    rows = clips  # rows [0, rows) are in the index, every camera's windows alike
    live = clips

    # ---- saves of 100 clips
    if "saves" in phases:
        adopted = []  # merges the writer committed with its saves (seals and compactions built meanwhile)
        adopt_merge = index._adopt_merge
        index._adopt_merge = lambda merge: adopted.append(merge) or adopt_merge(merge)
        times = []
        for number in range(options["saves"]):
            batch = synthetic.clips(rows, BLOCK)
            started = time.perf_counter()
            index.upsert(batch)
            index.save(store)
            times.append((time.perf_counter() - started) * 1000)
            rows += BLOCK
            if (number + 1) % 20 == 0:
                progress(f"saves {number + 1} of {options['saves']} (last {times[-1]:.0f} ms)")
        index.wait_for_maintenance()
        merges = len(adopted)
        layout = layout_of(read_newest(store))
        profile, profiled = cProfile.Profile(), []
        for _ in range(options["profiled_saves"]):
            batch = synthetic.clips(rows, BLOCK)
            started = time.perf_counter()
            profile.enable()
            index.upsert(batch)
            index.save(store)
            profile.disable()
            profiled.append((time.perf_counter() - started) * 1000)
            rows += BLOCK
        index.wait_for_maintenance()
        live = rows
        part(
            "saves",
            {
                "save_ms": times,
                "merges": merges,
                "layout": layout,
                "profiled_ms": profiled,
                "profile_ms": {label: s * 1000 for label, s in profile_shares(profile).items()},
                "profile_top": top_functions(profile, max(1, len(profiled))),
            },
        )

    # ---- search: unfiltered, camera + time, time only; recall against brute force
    if "search" in phases:
        index.wait_for_maintenance()
        freeze_long_lived()  # as `ClipIndex.load` does: this process built its index instead of loading it
        progress("search")
        count = WARMUP_QUERIES + options["queries"]
        sets = [synthetic.query_set(name, count, rows) for name in QUERY_SETS]
        filters = {s.name: s.filters(synthetic.source_ids) for s in sets}
        for s in sets:  # warm-up (and the filters' per-segment columns, built once)
            _time_queries(index, s.head(WARMUP_QUERIES), filters[s.name][:WARMUP_QUERIES], keep=False)
        timed = [s.tail(WARMUP_QUERIES) for s in sets]
        measured = {}
        for s in timed:
            measured[s.name] = _time_queries(index, s, filters[s.name][WARMUP_QUERIES:])
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        one_thread, _ = _time_queries(index, timed[0], filters["all"][WARMUP_QUERIES:], keep=False)
        faiss.omp_set_num_threads(threads)
        profiles = {}
        for s in timed[:2]:
            profile = cProfile.Profile()
            profile.enable()
            _time_queries(index, s, filters[s.name][WARMUP_QUERIES:], keep=False)
            profile.disable()
            profiles[s.name] = top_functions(profile, len(s))
        progress("search timed; brute force for recall")
        truth = synthetic.exact_top(timed, rows, K)
        search = {"live_rows": len(index), "expected_rows": live, "one_thread_ms": one_thread, "profiles": profiles}
        for s, exact in zip(timed, truth):
            latencies, found = measured[s.name]
            recalls, passing = [], []
            for hits, rows_found in zip(found, exact):
                keys = {synthetic.key(r) for r in rows_found}
                passing.append(len(keys))
                if keys:
                    recalls.append(len(hits & keys) / len(keys))
            search[s.name] = {
                "latency_ms": latencies,
                "recall": float(np.mean(recalls)) if recalls else math.nan,
                "recall_min": float(np.min(recalls)) if recalls else math.nan,
                "truth_rows_min": int(min(passing)),
            }
        windows = rows // CAMERAS
        search["filter_rows"] = {
            "camera+time": max(1, round(CAMERA_SPAN * windows)),
            "time": max(1, round(TIME_SPAN * windows)) * CAMERAS,
        }
        part("search", search)

    # ---- monitor checkpoints (10 cameras x 5 windows each)
    if "checkpoint" in phases:
        from pipeline.live.analyzer import StreamOutput
        from pipeline.live.sink import Sink
        from pipeline.records import Keyframe

        index.wait_for_maintenance()
        sink = Sink(store, index, publish=None)
        picture = np.zeros((8, 8, 3), np.uint8)
        times, writes = [], []
        generation = index.manifest.generation
        for number in range(options["checkpoints"]):
            batch = synthetic.clips(rows, CHECKPOINT_WINDOWS * BLOCK, cameras=CHECKPOINT_CAMERAS)
            rows += CHECKPOINT_WINDOWS * BLOCK
            live += len(batch)
            started = time.perf_counter()
            sink.write(
                StreamOutput(clips=[(clip, Keyframe(clip.source, clip.keyframe_pts, picture)) for clip in batch])
            )
            writes.append((time.perf_counter() - started) * 1000)
            state = {"offsets": {f"vigil.frames/{p}": rows + p for p in range(4)}, "number": number}
            started = time.perf_counter()
            sink.checkpoint("bench-monitor", state)
            times.append((time.perf_counter() - started) * 1000)
        index.wait_for_maintenance()
        merges = read_newest(store).generation - generation - options["checkpoints"]
        part(
            "checkpoint",
            {"clips_each": CHECKPOINT_CAMERAS * CHECKPOINT_WINDOWS, "ms": times, "write_ms": writes, "merges": merges},
        )

    # ---- a compaction in the background, searching meanwhile
    if "compaction" in phases:
        from pipeline.search import index as index_module

        index.wait_for_maintenance()
        sealed = sorted((e for e in index.manifest.segments if e.kind != "growing"), key=lambda e: e.rows)
        if len(sealed) < 2:
            part("compaction", {"skipped": f"{len(sealed)} sealed segment(s): nothing to compact"})
        else:
            small = sum(1 for e in sealed if e.rows <= config["exact_max"])
            take = max(2, min(len(sealed), small + 1))  # the flat segments and the smallest large one
            chosen = sealed[:take]
            progress(f"compaction of {take} segments ({sum(e.rows for e in chosen):,} rows), searching meanwhile")
            queries = synthetic.query_set("all", options["queries"], rows)
            default = index_module.MAX_SEALED
            index_module.MAX_SEALED = len(sealed) - take + 1
            try:
                before = {e.id for e in index.manifest.segments}
                started = time.perf_counter()
                index.save(store)  # nothing new to commit: starts the background maintenance, now due
                threads = [t for t in threading.enumerate() if t.name == "index-maintenance" and t.is_alive()]
                latencies, number = [], 0
                while any(t.is_alive() for t in threads):
                    vector = queries.vectors[number % len(queries)]
                    begun = time.perf_counter()
                    index.search(siglip=vector, k=K)
                    latencies.append((time.perf_counter() - begun) * 1000)
                    number += 1
                seconds = time.perf_counter() - started
            finally:
                index_module.MAX_SEALED = default
            index.wait_for_maintenance()
            merged = [e for e in index.manifest.segments if e.id not in before]
            part(
                "compaction",
                {
                    "inputs": [{"kind": e.kind, "rows": e.rows} for e in chosen],
                    "merged": [{"kind": e.kind, "rows": e.rows} for e in merged],
                    "seconds": seconds,
                    "thread_seen": bool(threads),
                    "latency_ms": latencies,
                    "layout": layout_of(read_newest(store)),
                },
            )
    if len(index) != live:
        raise RuntimeError(f"{len(index)} live rows, {live} expected")
    send(out, "done", {"live_rows": len(index)})


def open_index(folder: str, config: dict, seed: int, query_count: int, out) -> None:
    """In a fresh process: `ClipIndex.load(store)`, its time and RSS, the first searches, then timed searches
    as a reader serves them (`vigil search` and the index shard actors open the index from the store; the
    writer never searches)."""
    from pipeline.config import IndexConfig
    from pipeline.search.index import ClipIndex
    from pipeline.storage.store import LocalStore

    store = LocalStore(folder)
    synthetic = Synthetic(seed)
    gc.collect()
    before = _rss()
    started = time.perf_counter()
    index = ClipIndex.load(store, settings=IndexConfig(**config))
    seconds = time.perf_counter() - started
    gc.collect()
    after = _rss()
    rows = len(index)
    firsts = {}
    for name in ("all", "camera+time"):
        queries = synthetic.query_set(name, 1, (rows // CAMERAS) * CAMERAS)
        where = queries.filters(synthetic.source_ids)[0]
        started = time.perf_counter()
        index.search(siglip=queries.vectors[0], k=K, where=where)
        firsts[name] = (time.perf_counter() - started) * 1000
    latencies = {}
    for name in READER_QUERY_SETS:
        timed = synthetic.query_set(name, WARMUP_QUERIES + query_count, (rows // CAMERAS) * CAMERAS)
        filters = timed.filters(synthetic.source_ids)
        _time_queries(index, timed.head(WARMUP_QUERIES), filters[:WARMUP_QUERIES], keep=False)
        latencies[name], _ = _time_queries(index, timed.tail(WARMUP_QUERIES), filters[WARMUP_QUERIES:], keep=False)
    send(
        out,
        "part",
        "open",
        {
            "seconds": seconds,
            "rss_before": before,
            "rss_growth": after - before,
            "peak_rss": _peak_rss(),
            "rows": rows,
            "first_search_ms": firsts,
            "search_ms": latencies,
            "layout": layout_of(index.manifest),
        },
    )
    send(out, "done", {})


def measure_kinds(sample: int, folder: str, config: dict, options: dict, out) -> None:
    """In a fresh process: one sealed segment of each kind over the same `sample` rows; FAISS bytes, build
    time, search latency and recall@10 (unfiltered)."""
    import faiss

    from pipeline.config import IndexConfig
    from pipeline.search.index import ClipIndex
    from pipeline.storage.store import LocalStore

    synthetic = Synthetic(options["seed"])
    clips = synthetic.clips(0, sample)
    count = WARMUP_QUERIES + options["queries"]
    queries = synthetic.query_set("all", count, sample)
    filters = queries.filters(synthetic.source_ids)
    timed = queries.tail(WARMUP_QUERIES)
    send(out, "progress", f"kinds: brute force over {sample:,} rows")
    truth = synthetic.exact_top([timed], sample, K)[0]
    for kind in KINDS:
        send(out, "progress", f"kinds: {kind}")
        store_folder = tempfile.mkdtemp(prefix=f"kind-{kind}-", dir=folder)
        store = LocalStore(store_folder)
        settings = IndexConfig(
            **{**config, "kind": kind, "seal_rows": min(config["seal_rows"], sample)}, background=False
        )
        index = ClipIndex(settings=settings)
        for first in range(0, sample, UPSERT_ROWS):
            index.upsert(clips[first : first + UPSERT_ROWS])
        started = time.perf_counter()
        index.save(store)  # commits the growing segments, then seals them into one segment of `kind`
        build = time.perf_counter() - started
        sealed = [index.segments[e.id] for e in index.manifest.segments if e.kind != "growing"]
        nbytes = {
            tower: sum(int(faiss.serialize_index(s.faiss_indexes[tower]).nbytes) for s in sealed) for tower in DIMS
        }
        _time_queries(index, queries.head(WARMUP_QUERIES), filters[:WARMUP_QUERIES], keep=False)
        latencies, found = _time_queries(index, timed, filters[WARMUP_QUERIES:])
        recalls = [
            len(hits & {synthetic.key(r) for r in exact}) / len(exact) for hits, exact in zip(found, truth) if exact
        ]
        send(
            out,
            "part",
            kind,
            {
                "rows": sample,
                "segments": [(s.kind, len(s)) for s in sealed],
                "build_seconds": build,
                "bytes": nbytes,
                "latency_ms": latencies,
                "recall": float(np.mean(recalls)),
                "recall_min": float(np.min(recalls)),
            },
        )
        del index, sealed
        gc.collect()
        shutil.rmtree(store_folder, ignore_errors=True)
    send(out, "done", {})


class Stopped(Exception):
    pass


def in_child(target, args: tuple, deadline: float, max_rss: float, log) -> dict:
    """Run `target(*args, queue)` in a fresh spawned process until it is done; what it sent is returned as
    {"parts": {...}, "error": None or why it stopped, "rss_max_seen": bytes}. The child is stopped (by its own
    handle) when `deadline` (time.monotonic) passes or its RSS goes over `max_rss` bytes."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=target, args=(*args, out), daemon=True)
    child.start()
    parts, last, seen, error = {}, "starting", 0, None
    try:
        watched = psutil.Process(child.pid)
        while True:
            try:
                seen = max(seen, watched.memory_info().rss)
            except psutil.Error:
                pass
            if seen > max_rss:
                error = f"stopped: its RSS reached {seen / GIB:.1f} GiB (limit {max_rss / GIB:.0f} GiB) at: {last}"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = f"stopped at the time budget; it had reached: {last}"
                break
            try:
                message = out.get(timeout=min(remaining, 1.0))
            except queue_module.Empty:
                if not child.is_alive():
                    error = f"the process ended with code {child.exitcode} after: {last}"
                    break
                continue
            kind = message[0]
            if kind == "done":
                child.join(timeout=120)
                break
            if kind == "part":
                parts[message[1]] = message[2]
                last = f"{message[1]} measured"
                log(f"  {message[1]} measured")
            else:
                last = message[1]
                log(f"  {message[1]}")
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
    if error:
        log(f"  {error}")
    return {"parts": parts, "error": error, "rss_max_seen": seen}


# ------------------------------------------------------------------------------------------ report


def machine_facts() -> dict[str, str]:
    import faiss

    return results.machine_facts(
        **{
            "faiss": f"{faiss.__version__} (compiled with: {faiss.get_compile_options().strip()}; "
            f"{faiss.omp_get_max_threads()} OpenMP threads, the default, used by every measurement unless said)",
            "numpy": np.__version__,
            "store": "LocalStore in a temporary folder on the local disk (page cache warm, not dropped)",
        }
    )


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _ms(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _part(size: dict, name: str) -> dict | None:
    return size.get("parts", {}).get(name)


def _missing(size: dict, name: str) -> str:
    return "not measured" + (f" ({size['error']})" if size.get("error") else "")


BUILD_HEADER = [
    "clips (base)",
    "base build s",
    "base segments",
    "save p50 ms",
    "save p95 ms",
    "save max ms",
    "merges during the saves",
    "writer RSS GiB / M clips",
    "peak RSS GiB",
]
SEARCH_HEADER = [
    "clips",
    "search p50 ms",
    "search p99 ms",
    "p99 faiss 1 thread",
    "recall@10 (min)",
    "camera+time p50 ms",
    "camera+time p99 ms",
    "camera+time recall@10 (min)",
    "time only p50 ms",
    "time only p99 ms",
    "time only recall@10 (min)",
]
OPEN_HEADER = [
    "clips",
    "cold open s",
    "open RSS growth GiB",
    "open peak RSS GiB",
    "first search ms",
    "first camera+time search ms",
    "segments",
    "search p50 ms",
    "search p99 ms",
    "camera+time p50 ms",
    "camera+time p99 ms",
]
CHECKPOINT_HEADER = [
    "clips stored",
    "checkpoints",
    "checkpoint p50 ms",
    "checkpoint p95 ms",
    "checkpoint max ms",
    "p50 vs 1k",
    "p95 vs 1k",
    "Sink.write p50 ms (untimed part)",
]
COMPACTION_HEADER = [
    "clips",
    "merged",
    "result",
    "compaction s",
    "searches meanwhile",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p99 ms without compaction",
]
KIND_HEADER = [
    "kind",
    "sample rows",
    "build s (both towers)",
    "FAISS MiB (siglip + dinov2)",
    "MiB per 1M clips",
    "search p50 ms",
    "search p99 ms",
    "recall@10 (min)",
]


def build_rows(run: dict) -> list[list[str]]:
    rows = []
    for size in run["sizes"]:
        base, saves = _part(size, "base"), _part(size, "saves")
        if base is None:
            rows.append([f"{size['clips']:,}", _missing(size, "base")] + [""] * (len(BUILD_HEADER) - 2))
            continue
        save = saves["save_ms"] if saves else []
        peak = max(p.get("peak_rss", 0) for p in size["parts"].values())
        rows.append(
            [
                f"{size['clips']:,}",
                f"{base['seconds']:.1f}",
                describe_layout(base["layout"]),
                _ms(percentile(save, 50)) if saves else _missing(size, "saves"),
                _ms(percentile(save, 95)) if saves else "",
                _ms(max(save)) if saves else "",
                f"{saves['merges']} in {len(save)} saves" if saves else "",
                f"{(base['rss_base'] - base['rss_start']) / size['clips'] * 1e6 / GIB:.2f}",
                _gib(peak),
            ]
        )
    return rows


def _search_cells(search: dict, name: str) -> list[str]:
    s = search[name]
    return [
        _ms(percentile(s["latency_ms"], 50)),
        _ms(percentile(s["latency_ms"], 99)),
        f"{s['recall']:.3f} ({s['recall_min']:.2f})",
    ]


def search_rows(run: dict) -> list[list[str]]:
    rows = []
    for size in run["sizes"]:
        search = _part(size, "search")
        if search is None:
            rows.append([f"{size['clips']:,}", _missing(size, "search")] + [""] * (len(SEARCH_HEADER) - 2))
            continue
        everything = _search_cells(search, "all")
        rows.append(
            [
                f"{search['live_rows']:,}",
                *everything[:2],
                _ms(percentile(search["one_thread_ms"], 99)),
                everything[2],
                *_search_cells(search, "camera+time"),
                *_search_cells(search, "time"),
            ]
        )
    return rows


def open_rows(run: dict) -> list[list[str]]:
    rows = []
    for size in run["sizes"]:
        opened = size.get("open", {}).get("parts", {}).get("open")
        if opened is None:
            error = size.get("open", {}).get("error") or size.get("error") or "base not built"
            rows.append([f"{size['clips']:,}", f"not measured ({error})"] + [""] * (len(OPEN_HEADER) - 2))
            continue
        rows.append(
            [
                f"{opened['rows']:,}",
                f"{opened['seconds']:.2f}",
                _gib(opened["rss_growth"]),
                _gib(opened["peak_rss"]),
                _ms(opened["first_search_ms"]["all"]),
                _ms(opened["first_search_ms"]["camera+time"]),
                describe_layout(opened["layout"]),
                *(_ms(percentile(opened["search_ms"][name], q)) for name in READER_QUERY_SETS for q in (50, 99)),
            ]
        )
    return rows


def _checkpoint_summary(entry: dict) -> dict | None:
    part = (entry or {}).get("parts", {}).get("checkpoint")
    if part is None:
        return None
    return {
        "p50": percentile(part["ms"], 50),
        "p95": percentile(part["ms"], 95),
        "max": max(part["ms"]),
        "write": percentile(part["write_ms"], 50),
        "count": len(part["ms"]),
    }


def checkpoint_rows(run: dict) -> list[list[str]]:
    reference = _checkpoint_summary(run.get("checkpoint_reference"))
    entries = [run.get("checkpoint_reference")] + run["sizes"]
    rows = []
    for entry in entries:
        if entry is None:
            continue
        s = _checkpoint_summary(entry)
        if s is None:
            rows.append([f"{entry['clips']:,}", _missing(entry, "checkpoint")] + [""] * (len(CHECKPOINT_HEADER) - 2))
            continue
        ratio = [f"{s[q] / reference[q]:.2f}x" if reference else "" for q in ("p50", "p95")]
        rows.append(
            [
                f"{entry['clips']:,}",
                str(s["count"]),
                _ms(s["p50"]),
                _ms(s["p95"]),
                _ms(s["max"]),
                *ratio,
                _ms(s["write"]),
            ]
        )
    return rows


def compaction_rows(run: dict) -> list[list[str]]:
    rows = []
    for size in run["sizes"]:
        part, search = _part(size, "compaction"), _part(size, "search")
        if part is None or "skipped" in part:
            why = part["skipped"] if part else _missing(size, "compaction")
            rows.append([f"{size['clips']:,}", why] + [""] * (len(COMPACTION_HEADER) - 2))
            continue
        inputs = Counter(e["kind"] for e in part["inputs"])
        merged = " + ".join(f"{n} {kind}" for kind, n in sorted(inputs.items()))
        merged += f" ({sum(e['rows'] for e in part['inputs']):,} rows)"
        result = ", ".join(f"{e['kind']} ({e['rows']:,} rows)" for e in part["merged"]) or "none"
        lat = part["latency_ms"]
        rows.append(
            [
                f"{size['clips']:,}",
                merged,
                result,
                f"{part['seconds']:.1f}",
                str(len(lat)),
                _ms(percentile(lat, 50)),
                _ms(percentile(lat, 99)),
                _ms(max(lat)) if lat else "",
                _ms(percentile(search["all"]["latency_ms"], 99)) if search else "",
            ]
        )
    return rows


def kind_rows(run: dict) -> list[list[str]]:
    kinds = run.get("kinds")
    rows = []
    if not kinds:
        return rows
    for kind in KINDS:
        part = kinds["parts"].get(kind)
        if part is None:
            rows.append([kind, _missing(kinds, kind)] + [""] * (len(KIND_HEADER) - 2))
            continue
        total = sum(part["bytes"].values())
        rows.append(
            [
                kind,
                f"{part['rows']:,}",
                f"{part['build_seconds']:.1f}",
                f"{part['bytes']['siglip'] / 2**20:,.0f} + {part['bytes']['dinov2'] / 2**20:,.0f}",
                f"{total / part['rows'] * 1e6 / 2**20:,.0f}",
                _ms(percentile(part["latency_ms"], 50)),
                _ms(percentile(part["latency_ms"], 99)),
                f"{part['recall']:.3f} ({part['recall_min']:.2f})",
            ]
        )
    return rows


def layout_lines(run: dict) -> list[str]:
    lines = []
    for size in run["sizes"]:
        base, saves, compaction = _part(size, "base"), _part(size, "saves"), _part(size, "compaction")
        if base is None:
            continue
        text = (
            f"- {size['clips']:,}: base (chunks of {', '.join(f'{c:,}' for c in base['chunks'])} rows, upserts of "
            f"up to {UPSERT_ROWS:,}) {describe_layout(base['layout'])}"
        )
        if saves:
            text += f"; after the timed saves {describe_layout(saves['layout'])}"
        if compaction and "layout" in compaction:
            text += f"; after the compaction {describe_layout(compaction['layout'])}"
        lines.append(text)
    return lines


def _summaries(run: dict) -> dict[int, dict]:
    out = {}
    for size in run["sizes"]:
        s = {}
        if saves := _part(size, "saves"):
            s["save_p95"] = percentile(saves["save_ms"], 95)
        if search := _part(size, "search"):
            for name in QUERY_SETS:
                s[f"{name}_p99"] = percentile(search[name]["latency_ms"], 99)
                s[f"{name}_recall"] = search[name]["recall"]
        if reader := size.get("open", {}).get("parts", {}).get("open", {}).get("search_ms"):
            for name, latencies in reader.items():
                s[f"reader_{name}_p99"] = percentile(latencies, 99)
        out[size["clips"]] = s
    return out


def target_lines(run: dict) -> list[str]:
    summary = _summaries(run)
    sizes = {size["clips"]: size for size in run["sizes"]}
    big, small = summary.get(BIG, {}), summary.get(SMALL, {})

    def absent(clips: int) -> str:
        if clips not in sizes:
            return "not measured (size not requested)"
        return "not measured" + (f" ({sizes[clips]['error']})" if sizes[clips].get("error") else "")

    lines = []
    if "save_p95" in big:
        p95 = big["save_p95"]
        lines.append(
            f"- save of 100 clips, p95 <= {SAVE_P95_MS_AT_1M:g} ms at 1M: {p95:.1f} ms, "
            f"{_met(p95 <= SAVE_P95_MS_AT_1M)}"
        )
    else:
        lines.append(f"- save of 100 clips, p95 <= {SAVE_P95_MS_AT_1M:g} ms at 1M: {absent(BIG)}")
    if "save_p95" in big and "save_p95" in small:
        ratio = big["save_p95"] / small["save_p95"]
        lines.append(
            f"- save p95 at 1M <= {SAVE_P95_RATIO_TO_10K:g}x its value at 10k: {ratio:.2f}x "
            f"({big['save_p95']:.1f} ms vs {small['save_p95']:.1f} ms), "
            f"{_met(ratio <= SAVE_P95_RATIO_TO_10K)}"
        )
    else:
        lines.append(
            f"- save p95 at 1M <= {SAVE_P95_RATIO_TO_10K:g}x its value at 10k: "
            f"{absent(BIG) if 'save_p95' not in big else absent(SMALL)}"
        )
    checks = [
        (
            "reader_all_p99",
            f"search p99 <= {SEARCH_P99_MS_AT_1M:g} ms at 1M (unfiltered, encoding excluded), in a reader",
            lambda v: (
                f"{v:.2f} ms (the writer's own process: {_ms(big.get('all_p99', math.nan))} ms)",
                v <= SEARCH_P99_MS_AT_1M,
            ),
        ),
        (
            "all_recall",
            f"recall@10 >= {RECALL_TARGET} at 1M against exact search",
            lambda v: (f"{v:.3f}", v >= RECALL_TARGET),
        ),
        (
            "reader_camera+time_p99",
            f"search p99 <= {FILTERED_P99_MS_AT_1M:g} ms at 1M with a camera + wall-clock range filter, in a reader",
            lambda v: (
                f"{v:.2f} ms (the writer's own process: {_ms(big.get('camera+time_p99', math.nan))} ms)",
                v <= FILTERED_P99_MS_AT_1M,
            ),
        ),
        (
            "camera+time_recall",
            f"recall@10 >= {RECALL_TARGET} at 1M with that filter (filtered truth)",
            lambda v: (f"{v:.3f}", v >= RECALL_TARGET),
        ),
    ]
    for key, text, judge in checks:
        if key in big:
            value, ok = judge(big[key])
            lines.append(f"- {text}: {value}, {_met(ok)}")
        else:
            lines.append(f"- {text}: {absent(BIG)}")
    for clips, s in sorted(summary.items()):
        if clips != BIG and "all_recall" in s:
            lines.append(
                f"- for reference at {clips:,}: recall@10 {s['all_recall']:.3f} unfiltered, "
                f"{s['camera+time_recall']:.3f} camera + time (no target below 1M)"
            )
    return lines


def reported_lines(run: dict) -> list[str]:
    """The figures the issue asks to report (no target)."""
    lines = []
    sizes = {size["clips"]: size for size in run["sizes"]}
    big = sizes.get(BIG)
    compaction = _part(big, "compaction") if big else None
    if compaction and "latency_ms" in compaction and compaction["latency_ms"]:
        lat = compaction["latency_ms"]
        lines.append(
            f"- search p99 at 1M while a compaction runs: {percentile(lat, 99):.1f} ms over {len(lat)} "
            f"searches ({compaction['seconds']:.0f} s compaction; see Compaction)"
        )
    else:
        lines.append(
            "- search p99 at 1M while a compaction runs: "
            + (_missing(big, "compaction") if big else "not measured (size not requested)")
        )
    kinds = run.get("kinds")
    if kinds and kinds["parts"]:
        memory = ", ".join(
            f"{kind} {sum(p['bytes'].values()) / p['rows'] * 1e6 / GIB:.2f} GiB"
            for kind, p in ((k, kinds["parts"].get(k)) for k in KINDS)
            if p
        )
        sample = next(iter(kinds["parts"].values()))["rows"]
        lines.append(f"- FAISS memory per 1M clips (both towers, measured on {sample:,} and scaled): {memory}")
        if sq8 := kinds["parts"].get("ivf_sq8"):
            lines.append(
                f"- recall@10 of the compressed kind (ivf_sq8, {sample:,} rows): {sq8['recall']:.3f} "
                f"(min {sq8['recall_min']:.2f})"
            )
    else:
        lines.append("- memory per kind: " + (_missing(kinds, "kinds") if kinds else "not measured (not requested)"))
    opened = (big or {}).get("open", {}).get("parts", {}).get("open")
    if opened:
        lines.append(
            f"- cold open of the 1M index (fresh process): {opened['seconds']:.1f} s, RSS growth "
            f"{_gib(opened['rss_growth'])} GiB (peak RSS {_gib(opened['peak_rss'])} GiB)"
        )
    else:
        lines.append("- cold open of the 1M index: not measured")
    reference = _checkpoint_summary(run.get("checkpoint_reference"))
    at_big = _checkpoint_summary(big) if big else None
    if reference and at_big:
        lines.append(
            f"- monitor checkpoint ({CHECKPOINT_CAMERAS * CHECKPOINT_WINDOWS} clips) with 1M clips stored vs "
            f"{run['checkpoint_reference']['clips']:,}: p50 {at_big['p50']:.1f} vs {reference['p50']:.1f} ms "
            f"({at_big['p50'] / reference['p50']:.2f}x), p95 {at_big['p95']:.1f} vs {reference['p95']:.1f} ms "
            f"({at_big['p95'] / reference['p95']:.2f}x)"
        )
    else:
        lines.append("- monitor checkpoint ratio 1M vs 1k: not measured")
    return lines


def time_lines(run: dict) -> list[str]:
    """Where a save's and a search's time goes, from the profiles of each size."""
    lines = []
    for size in run["sizes"]:
        if saves := _part(size, "saves"):
            profiled = saves["profiled_ms"]
            total = sum(profiled)
            parts = ", ".join(
                f"{label} {ms / len(profiled):.1f} ms ({ms / total:.0%})"
                for label, ms in saves["profile_ms"].items()
                if ms
            )
            lines.append(
                f"- {size['clips']:,}, saves: {len(profiled)} more saves under cProfile, "
                f"{total / len(profiled):.1f} ms each on average (max {max(profiled):.0f}); per save: {parts}"
            )
        if search := _part(size, "search"):
            for name, top in search["profiles"].items():
                text = ", ".join(f"`{label}` {ms:.2f}" for label, ms in top)
                lines.append(f"- {size['clips']:,}, {name} search, own time per query (ms, cProfile): {text}")
    return lines


def not_measured_lines(run: dict) -> list[str]:
    lines = []
    for entry in [run.get("checkpoint_reference"), *run["sizes"], run.get("kinds")]:
        if entry and entry.get("error"):
            lines.append(
                f"- {entry['label']}: {entry['error']}; measured before that: {', '.join(entry['parts']) or 'nothing'}"
            )
        if entry and (opened := entry.get("open")) and opened.get("error"):
            lines.append(f"- {entry['label']}, cold open: {opened['error']}")
    return lines


def render_markdown(run: dict) -> str:
    missing = not_measured_lines(run)
    kinds = run.get("kinds")
    parts = [
        "## Clip index (`python -m bench.search`)",
        "",
        f"`python -m bench.search {' '.join(run['argv'])}`".replace(" `", "`") + f" on {run['date']}, "
        f"{run['wall_seconds'] / 60:.1f} min wall time in all. **The vectors are synthetic and no model runs**: "
        "clustered unit vectors with the real dimensions (SigLIP2 768, DINOv2 384), through the real "
        "`ClipIndex` on a `LocalStore`; search latency therefore excludes query encoding. Each size runs in a "
        "fresh process (cold open in another); all ratios come from this one run.",
        "",
        *facts_section("Machine", run["machine"]),
        *facts_section("Settings", run["settings"]),
        "### Targets",
        "",
        *target_lines(run),
        "",
        "Reported (no target):",
        "",
        *reported_lines(run),
        "",
    ]
    if missing:
        parts += ["### Not measured", "", *missing, ""]
    parts += [
        "### Bulk build and saves",
        "",
        "*save* = `upsert(100 clips); save(store)` on top of the base, background maintenance on (the clips "
        "made durable and searchable); *merges during the saves* = seals and compactions built by the "
        "background thread meanwhile and committed with the saves; *writer RSS* = RSS growth of the writing "
        "process over the base build, per "
        "million clips; *peak RSS* = the size's process at its highest (bulk build, compaction).",
        "",
        markdown_table(BUILD_HEADER, build_rows(run)),
        "",
        *layout_lines(run),
        "",
        "### Search",
        "",
        f"`ClipIndex.search(siglip=vector, k={K}, where=...)`, one query at a time, after {WARMUP_QUERIES} "
        "untimed; *recall@10* = mean (and worst) overlap with exact brute force over the same live rows and "
        f"filter. *camera+time* = `ClipFilter.of([one camera's source id], TimeRange(lo, hi))` on the wall clock, "
        f"a random {CAMERA_SPAN:.0%} of that camera's history; *time only* = a random {TIME_SPAN:.0%} of the "
        "history, every camera (answered through the ANN indexes with a row selector where it leaves many rows).",
        "",
        markdown_table(SEARCH_HEADER, search_rows(run)),
        "",
        "### Cold open, and searches in a reader",
        "",
        "`ClipIndex.load(store)` in a fresh process (after the size's other phases, compaction included); then "
        "the first search of each kind (the first filtered one builds the per-segment filter columns); then "
        f"{WARMUP_QUERIES} untimed and the same number of timed queries per set as above, one at a time. This is "
        "where vigil searches: `vigil search` and the index shard actors open the index from the store, the "
        "writer (monitor, `vigil index`) never searches, so the latency targets are judged here; the writer's "
        "own process, whose heap holds the bulk build's history, is in the table above. Recall is measured in "
        "the writer (the same segment code and settings; the exact truth needs the writer's row numbering).",
        "",
        markdown_table(OPEN_HEADER, open_rows(run)),
        "",
        "### Monitor checkpoint",
        "",
        f"`Sink.checkpoint` with `Sink(store, index, publish=None)`: upsert the {CHECKPOINT_CAMERAS} cameras x "
        f"{CHECKPOINT_WINDOWS} windows written since the last checkpoint, `index.save`, put the checkpoint JSON; "
        "the clips (keyframes, clip records) were written by `Sink.write` before, untimed. The first row is the "
        "reference index of 1k clips.",
        "",
        markdown_table(CHECKPOINT_HEADER, checkpoint_rows(run)),
        "",
        "### Compaction",
        "",
        "The flat segments and the smallest large one, merged by the index's background maintenance (forced "
        "by lowering `MAX_SEALED` in the benchmark's process; the merge is the index's own), while the main "
        "thread of the same process searches back to back (unfiltered, as above).",
        "",
        markdown_table(COMPACTION_HEADER, compaction_rows(run)),
        "",
        "### Index kinds",
        "",
        (
            f"One sealed segment of each kind over the same {kinds['sample']:,} rows (`IndexConfig.kind` forced), "
            "both towers; FAISS bytes = `faiss.serialize_index`, what the indexes hold in memory (flat and HNSW "
            "the float32 vectors, HNSW its links too, IVF its 8-bit codes and ids plus the float32 vectors it "
            "re-ranks with, IVF-SQ8 the 8-bit codes, ids and direct map); scaled linearly to 1M (the IVF centroids "
            "grow with the square root: negligible). Searched through `ClipIndex.search` (SQ8 hits re-scored "
            "with its decoded vectors)."
            if kinds
            else "not measured"
        ),
        "",
        markdown_table(KIND_HEADER, kind_rows(run)),
        "",
        "### Where the time goes",
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
        nargs="+",
        action="extend",
        help="index sizes (clips in the base; multiples of 100); a list, or repeated (default 10000 100000 1000000)",
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
    parser.add_argument("--profiled-saves", type=int, default=10, help="more saves under cProfile (default 10)")
    parser.add_argument("--queries", type=int, default=500, help="timed queries per query set and size (default 500)")
    parser.add_argument("--checkpoints", type=int, default=30, help="timed monitor checkpoints per size (default 30)")
    parser.add_argument(
        "--checkpoint-reference", type=int, default=1000, help="clips of the checkpoint reference index (default 1000)"
    )
    parser.add_argument(
        "--kinds-sample", type=int, default=100_000, help="rows of the per-kind measurement (default 100000; 0: skip)"
    )
    parser.add_argument(
        "--base-chunk",
        type=int,
        default=400_000,
        help="at most this many rows per sealed base segment (default 400000: 1M is built as 3 IVF segments)",
    )
    parser.add_argument("--no-compaction", action="store_true", help="skip the compaction measurement")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=40.0,
        help="wall time allowed per size (cold open included) and for the kinds (default 40)",
    )
    parser.add_argument("--max-rss-gib", type=float, default=18.0, help="stop a child above this RSS (default 18)")
    parser.add_argument("--seal-rows", type=int, default=defaults.seal_rows, help="IndexConfig.seal_rows")
    parser.add_argument("--exact-max", type=int, default=defaults.exact_max, help="IndexConfig.exact_max")
    parser.add_argument("--hnsw-max", type=int, default=defaults.hnsw_max, help="IndexConfig.hnsw_max")
    parser.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help="IndexConfig.hnsw_m")
    parser.add_argument("--ivf-nprobe", type=int, default=defaults.ivf_nprobe, help="IndexConfig.ivf_nprobe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.clips = sorted(set(args.clips or DEFAULT_CLIPS))
    if any(n < BLOCK or n % BLOCK for n in args.clips + [args.checkpoint_reference]):
        parser.error(f"--clips and --checkpoint-reference must be positive multiples of {BLOCK}")
    if args.kinds_sample and (args.kinds_sample < BLOCK or args.kinds_sample % BLOCK):
        parser.error(f"--kinds-sample must be 0 or a positive multiple of {BLOCK}")
    if args.saves < 1 or args.queries < 1 or args.checkpoints < 1:
        parser.error("--saves, --queries and --checkpoints must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    from pipeline.search.index import MAX_GROWING, MAX_SEALED, PARALLEL_SEARCH_ROWS
    from pipeline.search.manifest import KEEP_GENERATIONS
    from pipeline.search.segments import EXACT_FILTERED_MAX, REFINE_FACTOR

    args = parse_args(argv)
    args.out = args.out.expanduser().resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    stream = sys.stderr if args.json else sys.stdout
    run_started = time.monotonic()

    def log(message: str) -> None:
        print(message, file=stream, flush=True)

    config = {
        "kind": "auto",
        "seal_rows": args.seal_rows,
        "exact_max": args.exact_max,
        "hnsw_max": args.hnsw_max,
        "hnsw_m": args.hnsw_m,
        "ivf_nprobe": args.ivf_nprobe,
        "device": "cpu",
    }
    options = {
        "seed": args.seed,
        "saves": args.saves,
        "profiled_saves": args.profiled_saves,
        "queries": args.queries,
        "checkpoints": args.checkpoints,
        "base_chunk": args.base_chunk,
    }
    budget = args.budget_minutes * 60
    max_rss = args.max_rss_gib * GIB
    load_at_start = f"{os.getloadavg()[0]:.2f}"

    def timed_child(label: str, target, child_args: tuple) -> dict:
        started, (machine_before, ours_before) = time.monotonic(), _busy_seconds()
        outcome = in_child(target, child_args, time.monotonic() + budget, max_rss, log)
        outcome["label"] = label
        outcome["wall_seconds"] = time.monotonic() - started
        machine_after, ours_after = _busy_seconds()
        others = (machine_after - machine_before) - (ours_after - ours_before)
        outcome["other_cores"] = max(0.0, others) / outcome["wall_seconds"]
        return outcome

    def folder_for(name: str) -> str:
        return tempfile.mkdtemp(prefix=f"vigil-bench-search-{name}-", dir=args.out)

    log(f"checkpoint reference, {args.checkpoint_reference:,} clips ...")
    folder = folder_for(str(args.checkpoint_reference))
    try:
        reference = timed_child(
            f"checkpoint reference ({args.checkpoint_reference:,} clips)",
            measure_size,
            (args.checkpoint_reference, folder, config, options, ("base", "checkpoint")),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reference["clips"] = args.checkpoint_reference

    sizes, kinds = [], None
    phases = ("base", "saves", "search", "checkpoint") + (() if args.no_compaction else ("compaction",))
    order = [clips for clips in args.clips if clips < BIG] + ["kinds"] + [clips for clips in args.clips if clips >= BIG]
    for item in order:
        if item == "kinds":
            if not args.kinds_sample:
                continue
            log(f"index kinds on {args.kinds_sample:,} rows ...")
            folder = folder_for("kinds")
            try:
                kinds = timed_child(
                    f"index kinds ({args.kinds_sample:,} rows)",
                    measure_kinds,
                    (args.kinds_sample, folder, config, options),
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            kinds["sample"] = args.kinds_sample
            continue
        clips = item
        log(f"{clips:,} clips ...")
        folder = folder_for(str(clips))
        started = time.monotonic()
        try:
            size = timed_child(f"{clips:,} clips", measure_size, (clips, folder, config, options, phases))
            size["clips"] = clips
            if "base" in size["parts"] and (size["error"] is None or "time budget" not in size["error"]):
                log("  cold open")
                remaining = max(60.0, budget - (time.monotonic() - started))
                reader_args = (folder, config, args.seed, options["queries"])
                size["open"] = in_child(open_index, reader_args, time.monotonic() + remaining, max_rss, log)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        size["wall_seconds_with_open"] = time.monotonic() - started
        s = _summaries({"sizes": [size]}).get(clips, {})
        log(
            f"  save p95 {s.get('save_p95', math.nan):.1f} ms, search p99 {s.get('all_p99', math.nan):.2f} ms "
            f"(recall {s.get('all_recall', math.nan):.3f}), camera+time p99 {s.get('camera+time_p99', math.nan):.2f} "
            f"ms ({size['wall_seconds_with_open']:.0f} s in all)"
        )
        sizes.append(size)

    run = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_facts(),
        "settings": {
            "IndexConfig": ", ".join(f"{k}={v}" for k, v in config.items())
            + " (HNSW efConstruction 80, efSearch 128; IVF lists 2 sqrt(rows): fixed in pipeline.search.segments)",
            "index constants": f"MAX_SEALED={MAX_SEALED}, MAX_GROWING={MAX_GROWING}, "
            f"KEEP_GENERATIONS={KEEP_GENERATIONS}, EXACT_FILTERED_MAX={EXACT_FILTERED_MAX}, "
            f"REFINE_FACTOR={REFINE_FACTOR}, PARALLEL_SEARCH_ROWS={PARALLEL_SEARCH_ROWS}",
            "vectors": f"synthetic, seed {args.seed}: {CLUSTERS} scene centres per tower, {CAMERAS} cameras seeing "
            f"{SCENES_PER_CAMERA} scenes each; a clip = its scene centre + Gaussian noise of norm ~{SPREAD}, "
            f"normalised (cosine ~0.8 to the centre); {WINDOW:g} s windows, recorded from 2026-11-01T00:00Z on, "
            "every camera one window per 100 rows; queries are drawn the same way (SigLIP2 only)",
            "base": f"bulk-built: upserts of up to {UPSERT_ROWS:,} rows, a save with background=False (sealing at "
            f"once, kind=auto) every chunk of at most {args.base_chunk:,} rows; its time is reported, not a target",
            "saves": f"{args.saves} timed, {BLOCK} clips each (every camera's next window), background=True; then "
            f"{args.profiled_saves} more under cProfile",
            "queries": f"{args.queries} timed per set after {WARMUP_QUERIES} untimed, k={K}, one at a time",
            "checkpoints": f"{args.checkpoints} per size, {CHECKPOINT_CAMERAS * CHECKPOINT_WINDOWS} clips each; "
            f"reference index {args.checkpoint_reference:,} clips",
            "kinds": f"{args.kinds_sample:,} rows" if args.kinds_sample else "skipped",
            "percentiles": "numpy linear interpolation",
            "limits": f"{args.budget_minutes:g} min per size (cold open included) and for the kinds; a child above "
            f"{args.max_rss_gib:g} GiB RSS is stopped",
        },
        "checkpoint_reference": reference,
        "sizes": sizes,
        "kinds": kinds,
    }
    run["machine"]["load average (1 min) at start"] = load_at_start
    run["machine"]["load average (1 min) at end"] = f"{os.getloadavg()[0]:.2f}"
    run["machine"]["other processes' CPU (cores busy, mean over each child)"] = ", ".join(
        f"{entry['label']} {entry['other_cores']:.2f}" for entry in [reference, *sizes, kinds] if entry
    )
    run["wall_seconds"] = time.monotonic() - run_started
    if args.json:
        print(json.dumps(run, indent=1))
    else:
        print()
        print("SYNTHETIC vectors, no model runs: index and store cost only.\n")
        for header, rows in (
            (BUILD_HEADER, build_rows(run)),
            (SEARCH_HEADER, search_rows(run)),
            (OPEN_HEADER, open_rows(run)),
            (CHECKPOINT_HEADER, checkpoint_rows(run)),
            (COMPACTION_HEADER, compaction_rows(run)),
            (KIND_HEADER, kind_rows(run)),
        ):
            print(plain_table(header, rows))
            print()
        lines = [*layout_lines(run), *not_measured_lines(run), *target_lines(run), *reported_lines(run)]
        print("\n".join(line.replace("**", "") for line in lines))
    write_section(args.results, "bench.search", render_markdown(run))
    log(f"\nwrote {args.results} ({run['wall_seconds'] / 60:.1f} min)")
    return run


if __name__ == "__main__":
    main()
