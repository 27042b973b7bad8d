"""The archive job: video files to clip embeddings, keyframes and the search index, in one process or on Ray.

Both paths run the same pipeline functions in the same order (decode -> still marking -> batches ->
extraction -> clip windows -> sink); Ray only decides where decoding and extraction run.

A file's clips are dated from its recording start: the container's creation time, or the one the caller
gives instead. The start is part of the source's record, so a different one re-indexes the file.
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from actors.stages import StageLost, ray_get, stage_failure
from pipeline.config import VigilConfig
from pipeline.media.decode import VideoDecodeError, probe
from pipeline.models import Encoders, load_encoders
from pipeline.records import ClipEmbedding, FrameBatch, ModelIds
from pipeline.search.embed import Batches, clip_embeddings, extract_features, sampled_batches
from pipeline.search.index import ClipIndex
from pipeline.storage.clips import read_clip, write_clip, write_keyframe
from pipeline.storage.layout import SOURCES, clip_key, clips_prefix, file_source_id, keyframes_prefix, source_key
from pipeline.storage.store import ObjectStore

# A file whose stage was lost with its node (Ray restarts the actors elsewhere) is indexed again from the start,
# up to this many attempts in all: its partial writes were removed, so a retry is a clean first run.
FILE_ATTEMPTS = 3

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}

Extracted = Iterator[FrameBatch]  # one file's batches, features extracted


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    video_seconds: float = 0.0
    elapsed: float = 0.0
    untrained: bool = False


def find_videos(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named directly, plus video files found under folders; missing paths are reported."""
    found, missing = [], []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            missing.append((str(path), f"no such file or folder: {path}"))
    return list(dict.fromkeys(p.resolve() for p in found)), missing


def decode_settings(config: VigilConfig) -> dict:
    """Everything that changes which frames are decoded; part of a source's record."""
    return {**config.decode.sampling(), "window": config.embed.window}


def agreed_precisions(reported: list[dict[str, str]]) -> dict[str, str | list[str]]:
    """Each encoder's precision over the extractors (a file's batches go to all of them): the one they all use,
    else the sorted list of those used (each extractor resolves "auto" for its own node's CPU)."""
    used = {name: sorted({precisions[name] for precisions in reported}) for name in reported[0]}
    return {name: names[0] if len(names) == 1 else names for name, names in used.items()}


def _source_record(
    path: Path,
    config: VigilConfig,
    models: ModelIds,
    precisions: dict[str, str | list[str]],
    duration: float,
    recording_start: float | None,
    clips: list[ClipEmbedding],
    recording_start_given: bool = False,
) -> dict:
    stat = path.stat()
    return {
        "source": str(path),
        "source_id": file_source_id(path),
        "kind": "file",
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "duration": duration,
        "settings": decode_settings(config),
        "models": asdict(models),
        # Informative only: not in `models` (indexes compare those) nor read by is_unchanged, so a precision
        # change neither re-indexes a file nor refuses an index.
        "precision": precisions,
        "recording_start": recording_start,
        "recording_start_given": recording_start_given,  # by --recorded-at: kept by later runs without it
        "clips": [c.start for c in clips],
    }


def is_unchanged(
    store: ObjectStore,
    index: ClipIndex,
    path: Path,
    config: VigilConfig,
    models: ModelIds,
    recording_start: float | None,
) -> bool:
    """True when this file, with these settings, models and recording start, is already in the store and the
    index."""
    sid = file_source_id(path)
    if sid not in index.sources or not store.exists(source_key(sid)):
        return False
    record = store.get_json(source_key(sid))
    stat = path.stat()
    # An imported source's record has none of these: indexing the file itself replaces its clips.
    # A record from before recording starts were kept has none: right for a file without a creation time.
    held = ("size", "mtime_ns", "settings", "models", "recording_start")
    return tuple(record.get(name) for name in held) == (
        stat.st_size,
        stat.st_mtime_ns,
        decode_settings(config),
        asdict(models),
        recording_start,
    )


def given_start(store: ObjectStore, path: Path) -> float | None:
    """The recording start `--recorded-at` gave this file in an earlier run (None: none given)."""
    key = source_key(file_source_id(path))
    record = store.get_json(key) if store.exists(key) else {}
    return record.get("recording_start") if record.get("recording_start_given") else None


def index_file(
    path: Path,
    extracted: Extracted,
    *,
    store: ObjectStore,
    config: VigilConfig,
    models: ModelIds,
    duration: float,
    recording_start: float | None = None,
    on_progress: Callable[[float], None] = lambda seconds: None,
) -> list[ClipEmbedding]:
    """Pool one file's extracted frames into clips (dated from `recording_start`, Unix seconds, when known) and
    write them beside the version the index and the source record name (`switch_source` makes the new one
    current). A key both versions use is rewritten in place (with the same bytes when the settings are the
    same: indexing is deterministic), so every object the old version's index rows name stays readable. On
    failure, or an interruption, the keys only this run wrote are removed and the old version stays complete."""
    sid = file_source_id(path)
    before = _source_objects(store, sid)
    written: set[str] = set()
    clips: list[ClipEmbedding] = []
    try:
        windows = clip_embeddings(
            extracted, window=config.embed.window, source_id=sid, models=models, recording_start=recording_start
        )
        for clip, keyframe in windows:
            # Each key is noted before its write: an interruption mid-write still removes what it left.
            written.add(clip.keyframe_key)
            write_keyframe(store, clip.keyframe_key, keyframe.image)
            written.add(clip_key(sid, clip.start))
            write_clip(store, clip)
            clips.append(clip)
            on_progress(min(clip.end, duration))
        if not clips:
            raise VideoDecodeError(str(path), 0.0, "no frames could be decoded")
    except BaseException:
        for key in written - before:
            store.delete(key)
        raise
    return clips


def _source_objects(store: ObjectStore, sid: str) -> set[str]:
    return set(store.list(clips_prefix(sid))) | set(store.list(keyframes_prefix(sid)))


def switch_source(store: ObjectStore, index: ClipIndex, path: Path, clips: list[ClipEmbedding], record: dict) -> None:
    """Make a file's new clips current: the index first (one commit), then its record, then drop the windows
    of the old version the new one does not have. An interruption between any two steps leaves a version that
    is searchable and complete; a record older than the index makes the next run index the file again."""
    sid = file_source_id(path)
    index.replace_source(sid, clips)
    index.save(store)
    store.put_json(source_key(sid), record)
    current = {clip_key(sid, c.start) for c in clips} | {c.keyframe_key for c in clips}
    for stale in _source_objects(store, sid) - current:
        store.delete(stale)


def _extract_locally(batches: Batches, encoders: Encoders) -> Extracted:
    for batch in batches:
        yield extract_features(batch, encoders)


def sync_index(store: ObjectStore, index: ClipIndex) -> int:
    """Add sources whose clips are in the store but not in the index (an earlier run stopped before saving)."""
    added = 0
    for key in store.list(SOURCES):
        record = store.get_json(key)
        if record["source_id"] in index.sources:
            continue
        clips = [read_clip(store, k) for k in store.list(clips_prefix(record["source_id"]))]
        index.replace_source(record["source_id"], clips)
        added += 1
    return added


def index_paths(
    paths: Iterable[str | Path],
    config: VigilConfig,
    store: ObjectStore,
    *,
    use_ray: bool = False,
    force: bool = False,
    progress: bool = True,
    encoders: Encoders | None = None,
    recording_start: float | None = None,
) -> IndexReport:
    """Index video files and folders into `store`; corrupt files are reported and skipped, the rest go on.
    `recording_start` (Unix seconds) dates the files' clips instead of their containers' creation times."""
    started = time.perf_counter()
    report = IndexReport()
    files, report.failed = find_videos(paths)
    index = ClipIndex.load(store, config.index)
    sync_index(store, index)

    durations: dict[Path, float] = {}
    starts: dict[Path, float | None] = {}  # each file's recording start
    given: set[Path] = set()  # the files whose recording start --recorded-at gave, now or in an earlier run
    for path in files:
        try:
            info = probe(path)
        except VideoDecodeError as exc:
            report.failed.append((str(path), str(exc)))
            continue
        durations[path] = info.duration
        starts[path] = recording_start if recording_start is not None else given_start(store, path)
        if starts[path] is not None:
            given.add(path)
        else:
            starts[path] = info.creation_time

    if use_ray:
        runner = RayArchive(config)
        models, precisions = runner.models, runner.precisions
    else:
        encoders = encoders or load_encoders(
            config.models, device=config.device, precision=config.precision, batch_size=config.batch_size
        )
        models, precisions = encoders.ids, encoders.precisions
    index.check_models(models)
    report.untrained = models.untrained

    todo = [p for p in durations if force or not is_unchanged(store, index, p, config, models, starts[p])]
    report.unchanged = [str(p) for p in durations if p not in todo]
    bar = tqdm(
        total=round(sum(durations[p] for p in todo), 1),
        unit="s",
        desc="indexing",
        disable=not progress,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} video s [{elapsed}<{remaining}{postfix}]",
    )

    def progress_of(path: Path) -> Callable[[float], None]:
        """One file's progress, however many attempts it takes."""
        done = [0.0]

        def advance(position: float) -> None:
            bar.update(max(0.0, position - done[0]))
            done[0] = max(done[0], position)
            speed = bar.n / max(time.perf_counter() - started, 1e-6)
            bar.set_postfix_str(f"{speed:.1f}x realtime", refresh=False)

        return advance

    progress = {path: progress_of(path) for path in todo}

    def run(path: Path, extracted: Extracted) -> list[ClipEmbedding]:
        return index_file(
            path,
            extracted,
            store=store,
            config=config,
            models=models,
            duration=durations[path],
            recording_start=starts[path],
            on_progress=progress[path],
        )

    def run_on_ray(path: Path) -> list[ClipEmbedding]:
        attempts = 1
        while True:
            try:
                return run(path, runner.extracted(path))
            except StageLost as lost:
                if attempts == FILE_ATTEMPTS:
                    raise
                attempts += 1
                print(f"index: {path}: {lost}; indexing it again", file=sys.stderr, flush=True)

    def settle(path: Path, outcome: Callable[[], list[ClipEmbedding]]) -> None:
        """Make one file's result current (main thread only: the index is not thread-safe); a file that
        fails keeps the version indexed before, if any."""
        try:
            clips = outcome()
        except VideoDecodeError as exc:
            report.failed.append((str(path), str(exc)))
            return
        record = _source_record(path, config, models, precisions, durations[path], starts[path], clips, path in given)
        switch_source(store, index, path, clips, record)
        report.indexed.append(str(path))
        report.clips += len(clips)
        report.video_seconds += durations[path]

    try:
        if use_ray:
            with ThreadPoolExecutor(max_workers=runner.decoders) as pool:
                futures = {pool.submit(run_on_ray, path): path for path in todo}
                for future in as_completed(futures):
                    settle(futures[future], future.result)
        else:
            for path in todo:
                settle(path, lambda: run(path, _extract_locally(sampled_batches(path, config), encoders)))
    finally:
        bar.close()
        index.save(store)
    report.elapsed = time.perf_counter() - started
    return report


class RayArchive:
    """Decoder and extractor actors on a Ray cluster (a local one unless RAY_ADDRESS names another).

    Files are spread over the decoder actors; each file's frame batches stream to the extractor pool with
    at most `in_flight` batches outstanding per file, so a slow extractor slows decoding instead of
    filling memory.
    """

    def __init__(self, config: VigilConfig, in_flight: int = 2):
        import ray

        from actors.decoder import DecoderActor
        from actors.stages import WorkerNodes, make_extractors, start_ray

        start_ray()
        self.config = config
        self.in_flight = in_flight
        self._ray = ray
        self._extractors = make_extractors(config)
        self.decoders = max(1, int(ray.cluster_resources().get("CPU", 1)) - len(self._extractors))
        # An actor runs one call at a time: a file holds a decoder until its stream ends.
        self._idle_decoders: queue.Queue = queue.Queue()
        place = WorkerNodes()
        for _ in range(self.decoders):
            self._idle_decoders.put(DecoderActor.options(**place.next()).remote(config))
        self.models: ModelIds = ray_get(self._extractors[0].model_ids.remote())
        self.precisions = agreed_precisions(ray_get([e.precisions.remote() for e in self._extractors]))

    def extracted(self, path: Path) -> Extracted:
        ray = self._ray
        decoder = self._idle_decoders.get()
        pending = []
        try:
            for number, batch_ref in enumerate(decoder.batches.remote(str(path))):
                extractor = self._extractors[number % len(self._extractors)]
                pending.append(extractor.extract.remote(batch_ref))
                if len(pending) >= self.in_flight:
                    yield ray.get(pending.pop(0))
            for extracted_ref in pending:
                yield ray.get(extracted_ref)
        except ray.exceptions.RayError as exc:
            if isinstance(getattr(exc, "cause", None), VideoDecodeError):
                raise exc.cause from None  # a corrupt file: reported and skipped like without Ray
            raise stage_failure(exc) from None
        finally:
            self._idle_decoders.put(decoder)
