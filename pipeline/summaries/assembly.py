"""A summary put together: shots, keyframes, tags, segments, events and query scores of a time range, written
to the store as summary.json (schema: `summary_schema.json`), contact_sheet.png, timeline.png and report.html
under `summaries/{source_id}/` (a time range: `summaries/{source_id}/range-{from_ms}-{to_ms}/`)."""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.storage.codecs import decode_image
from pipeline.storage.layout import camera_source_id, file_source_id, summary_file_keys
from pipeline.storage.store import ObjectStore, StoreError
from pipeline.summaries import render
from pipeline.summaries.concepts import TEMPLATE, Concept, load_vocabulary
from pipeline.summaries.errors import NotEnoughFootage, SummarizeError
from pipeline.summaries.events import TimelineEvent, alert_events
from pipeline.summaries.features import (
    MIN_ROWS,
    FeatureTrack,
    extract_and_store_frame_track,
    stored_track,
    unit_rows,
)
from pipeline.summaries.keyframes import (
    choose_keyframes,
    fetch_keyframe_images,
    joint_embedding,
    keyframe_budget,
    stored_pictures,
)
from pipeline.summaries.options import SummaryOptions
from pipeline.summaries.shots import detect_shots, shot_means
from pipeline.summaries.tags import Tag, concept_bank, tag_rows
from pipeline.summaries.tracks import StoredTracking, live_track_events, read_tracking

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("summary_schema.json")


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ShotSummary:
    """A shot as summary.json holds it (times rounded to the millisecond)."""

    index: int
    start: float
    end: float
    scene: int  # the keyframe most of its rows are most like
    change: float | None  # DINOv2 distance across the opening cut
    tags: list[Tag]

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "scene": self.scene,
            "change": self.change,
            "tags": [t.label for t in self.tags],
            "tag_scores": [t.to_json() for t in self.tags],
        }


@dataclass
class Segment:
    """Consecutive shots (`first`..`last`, inclusive) of one scene: one line of the text summary."""

    start: float
    end: float
    first: int
    last: int
    scene: int
    embedding_sum: np.ndarray  # its shots' mean SigLIP2 embeddings weighted by their durations


@dataclass(frozen=True)
class SegmentSummary:
    """A segment as summary.json holds it: a place heading, other tags, and the events starting in it."""

    start: float
    end: float
    first: int
    last: int
    heading: str | None
    tags: list[str]
    event_counts: dict[tuple[str, str], int]  # (kind, label) -> count

    def to_json(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "shots": [self.first, self.last],
            "heading": self.heading,
            "tags": self.tags,
            "events": [{"kind": k, "label": lab, "count": c} for (k, lab), c in self.event_counts.items()],
        }


@dataclass(frozen=True)
class KeyframeSummary:
    t: float
    image: str | None  # the store key of its picture, if one was to be had
    shot: int
    scene: int
    caption: str | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QueryScores:
    """A query's SigLIP2 score over the time range."""

    text: str
    times: list[float]
    scores: list[float]

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SummaryResult:
    summary: dict
    keys: dict[str, str]  # summary / contact_sheet / timeline / report -> store key
    reused: bool  # the features came from the store: nothing was decoded for them
    feature_kind: str
    video_seconds: float
    elapsed: float
    images: dict[str, str] = field(default_factory=dict)  # keyframe image keys fetched or written


# ----------------------------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def summary_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_summary(summary: dict) -> None:
    """Raise jsonschema.ValidationError when `summary` does not follow `summary_schema.json`."""
    import jsonschema

    jsonschema.Draft202012Validator(summary_schema()).validate(summary)


# ----------------------------------------------------------------------------------------------- assembly


def build_segments(shots: Sequence[ShotSummary], shot_embeddings: np.ndarray, max_lines: int) -> list[Segment]:
    """Consecutive shots of one scene merged; then the shortest segment joins its more similar neighbour
    until at most `max_lines` remain."""
    segments: list[Segment] = []
    for i, shot in enumerate(shots):
        if segments and segments[-1].scene == shot.scene:
            seg = segments[-1]
            seg.end, seg.last = shot.end, i
            seg.embedding_sum = seg.embedding_sum + shot_embeddings[i] * (shot.end - shot.start)
        else:
            segments.append(
                Segment(shot.start, shot.end, i, i, shot.scene, shot_embeddings[i] * max(shot.end - shot.start, 1e-3))
            )
    while len(segments) > max_lines:
        lengths = np.array([s.end - s.start for s in segments])
        i = int(np.argmin(lengths))
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(segments)]

        def closeness(j: int) -> float:
            a, b = segments[i].embedding_sum, segments[j].embedding_sum
            return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

        j = max(neighbours, key=closeness)
        a, b = sorted((i, j))
        segments[a] = Segment(
            segments[a].start,
            segments[b].end,
            segments[a].first,
            segments[b].last,
            segments[a].scene,
            segments[a].embedding_sum + segments[b].embedding_sum,
        )
        del segments[b]
    return segments


class _Stages:
    """A tqdm bar over the summary's stages (disabled unless `progress`)."""

    NAMES = ("shots", "keyframes", "tags", "images", "render", "write")

    def __init__(self, progress: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.NAMES), desc="summarize", unit="step", disable=not progress, leave=False)

    def step(self, name: str) -> None:
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _downsample(times: np.ndarray, values: np.ndarray, points: int = 1000) -> tuple[list[float], list[float]]:
    """At most `points` samples: the maximum of each bucket, at the bucket's first time."""
    if len(times) > points:
        edges = np.linspace(0, len(times), points + 1).astype(int)
        times = times[edges[:-1]]
        values = np.maximum.reduceat(values, edges[:-1])
    return [round(float(t), 3) for t in times], [round(float(v), 4) for v in values]


def _track_pictures(store: ObjectStore, tracking: StoredTracking | None) -> dict[int, np.ndarray]:
    """Each track's thumbnail by track id; one gone from the store (a newer tracking run) is left out."""
    pictures = {}
    for stored in tracking.tracks if tracking is not None else ():
        try:
            pictures[stored.track_id] = decode_image(store.get(stored.thumbnail))
        except StoreError:
            continue
    return pictures


def summarize_track(
    track: FeatureTrack,
    store: ObjectStore,
    *,
    start: float | None = None,
    end: float | None = None,
    options: SummaryOptions | None = None,
    events: Iterable[TimelineEvent | Mapping] = (),
    queries: Sequence[str] = (),
    concepts: Sequence[Concept] | None = None,
    text_encoder: Any = None,
    captioner=None,
    video: str | Path | None = None,
    short_side: int | None = 256,
    progress: bool = False,
    reused: bool = True,
) -> SummaryResult:
    """Summarize the rows of `track` inside [start, end) and write the outputs to the store.

    `text_encoder` is a SigLIP encoder or a zero-argument callable returning one; it is only called when
    the vocabulary's embeddings are not cached yet or `queries` are given. `events` are TimelineEvents or
    mappings {t_start, t_end, label, ...} (an Alert as JSON works). `video` lets missing keyframe pictures
    be decoded from the file. When the store holds a tracking result for the source (`vigil track`), its
    events in the range join `events` and its tracks there make the summary's `tracks` section."""
    began = time.perf_counter()
    options = options or SummaryOptions()
    concepts = list(concepts) if concepts is not None else load_vocabulary()
    lo = 0.0 if start is None else max(0.0, float(start))
    hi = track.duration if end is None else min(float(end), track.duration)
    if hi <= lo:
        raise NotEnoughFootage(f"empty time range {lo:.3f}-{hi:.3f} s ({track.source} lasts {track.duration:.3f} s)")
    sub = track.select(lo, hi) if (start is not None or end is not None) else track
    if len(sub) < MIN_ROWS:
        raise NotEnoughFootage(
            f"{track.source}: {len(sub)} feature row(s) between {lo:.3f} and {hi:.3f} s "
            f"(one per {track.interval:g} s); a summary needs at least {MIN_ROWS}"
        )
    encoder_cache: list[Any] = []

    def text_tower():
        if not encoder_cache:
            if text_encoder is None:
                raise SummarizeError("a text encoder is needed (vocabulary not cached, or queries given)")
            encoder_cache.append(
                text_encoder() if callable(text_encoder) and not hasattr(text_encoder, "embed_texts") else text_encoder
            )
        return encoder_cache[0]

    stages = _Stages(progress)
    try:
        shots = detect_shots(sub, lo, hi, options)
        stages.step("shots")

        x = joint_embedding(sub)
        budget = keyframe_budget(hi - lo, options.max_keyframes)
        rows, labels, _ = choose_keyframes(
            x, shots, budget=budget, exact=options.keyframes, stored=stored_pictures(store, sub)
        )
        scene_of_row = {row: j for j, row in enumerate(rows)}
        stages.step("keyframes")

        bank = concept_bank(store, concepts, sub.models.siglip, text_tower)
        shot_embeddings = shot_means(sub.siglip, shots)
        shot_tags = tag_rows(shot_embeddings, bank, options.tags_per_shot)
        shot_summaries = []
        for i, (shot, tags) in enumerate(zip(shots, shot_tags)):
            votes = np.bincount(labels[shot.first : shot.last + 1], minlength=len(rows))
            shot_summaries.append(
                ShotSummary(
                    i,
                    round(shot.start, 3),
                    round(shot.end, 3),
                    int(np.argmax(votes)),
                    None if shot.change is None else round(shot.change, 4),
                    tags,
                )
            )
        tracking = read_tracking(store, track.source_id)
        if tracking is not None:
            tracking = tracking.within(lo, hi)
            events = [*events, *tracking.timeline_events()]
        timeline_events = sorted(
            (e if isinstance(e, TimelineEvent) else TimelineEvent.from_mapping(e) for e in events),
            key=lambda e: (e.t_start, e.t_end, e.label),
        )
        timeline_events = [e for e in timeline_events if e.t_end >= lo and e.t_start <= hi]
        segments = build_segments(shot_summaries, shot_embeddings, options.max_lines)
        seg_means = unit_rows(np.stack([s.embedding_sum for s in segments]))
        headings = tag_rows(seg_means, bank, 1, only=("place",))
        seg_tags = tag_rows(seg_means, bank, 3, exclude=("place",))
        seg_starts = [seg.start for seg in segments]
        counts: list[dict[tuple[str, str], int]] = [{} for _ in segments]
        for e in timeline_events:  # an event belongs to the segment in which it starts
            at = max(0, bisect.bisect_right(seg_starts, max(e.t_start, lo)) - 1)
            counts[at][(e.kind, e.label)] = counts[at].get((e.kind, e.label), 0) + 1
        segment_summaries = [
            SegmentSummary(
                round(seg.start, 3),
                round(seg.end, 3),
                seg.first,
                seg.last,
                head[0].label if head else None,
                [t.label for t in tags],
                count,
            )
            for seg, head, tags, count in zip(segments, headings, seg_tags, counts)
        ]
        query_scores = []
        if queries:
            vectors = unit_rows(text_tower().embed_texts(list(queries)))
            for text, vector in zip(queries, vectors):
                query_scores.append(QueryScores(text, *_downsample(sub.times, sub.siglip @ vector)))
        stages.step("tags")

        video_path = Path(video) if video is not None else None
        pictures = fetch_keyframe_images(store, sub, rows, video=video_path, short_side=short_side)
        captions: dict[int, str] = {}
        if captioner is not None and pictures:
            ordered = [row for row in rows if row in pictures]
            captions = dict(zip(ordered, captioner.caption([pictures[row][1] for row in ordered])))
        shot_index = np.searchsorted([s.first for s in shots], rows, side="right") - 1
        keyframe_summaries = [
            KeyframeSummary(
                round(float(sub.image_times[row]), 3),
                pictures[row][0] if row in pictures else None,
                int(shot_index[j]),
                scene_of_row[row],
                captions.get(row),
            )
            for j, row in enumerate(rows)
        ]
        stages.step("images")

        keys = summary_file_keys(track.source_id, start, end)
        summary = {
            "schema_version": SCHEMA_VERSION,
            "source": {"source": track.source, "source_id": track.source_id, "kind": track.source_kind},
            "range": {"start": round(lo, 3), "end": round(hi, 3), "duration": round(track.duration, 3)},
            "models": asdict(track.models),
            "untrained": bool(track.models.untrained),
            "captioner": getattr(captioner, "model_id", None) if captioner is not None else None,
            "features": {"kind": sub.kind, "interval": round(sub.interval, 6), "count": len(sub)},
            "settings": {
                "sensitivity": options.sensitivity,
                "min_change": options.min_change,
                "min_shot": options.min_shot,
                "keyframes_requested": options.keyframes,
                "max_keyframes": options.max_keyframes,
                "tags_per_shot": options.tags_per_shot,
            },
            "vocabulary": {"size": len(concepts), "digest": bank.digest, "template": TEMPLATE},
            "shots": [s.to_json() for s in shot_summaries],
            "keyframes": [k.to_json() for k in keyframe_summaries],
            "segments": [s.to_json() for s in segment_summaries],
            "events": [e.to_json() for e in timeline_events],
            "queries": [q.to_json() for q in query_scores],
            "text": "",
            "files": keys,
        }
        if tracking is not None:  # only then: a summary of an untracked source keeps its former fields and bytes
            summary["tracks"] = tracking.to_json()
        summary["text"] = render.summary_text(summary)
        validate_summary(summary)

        thumbs = {j: pictures[row][1] for j, row in enumerate(rows) if row in pictures}
        sheet = render.contact_sheet_png(summary, thumbs, width=options.thumb_width)
        timeline = render.timeline_png(summary)
        report = render.report_html(summary, sheet, timeline, thumbs, _track_pictures(store, tracking))
        stages.step("render")

        store.put(keys["contact_sheet"], sheet)
        store.put(keys["timeline"], timeline)
        store.put(keys["report"], report.encode("utf-8"))
        store.put(keys["summary"], (json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
        stages.step("write")
    finally:
        stages.close()
    return SummaryResult(
        summary,
        keys,
        reused,
        sub.kind,
        hi - lo,
        time.perf_counter() - began,
        {str(r): pictures[r][0] for r in pictures},
    )


# ----------------------------------------------------------------------------------------------- entry points


def expected_model_ids(spec) -> tuple[str, str]:
    """The model ids a `--models` spec will record (folders absolute), without loading anything."""
    from pipeline.models import resolve_models

    source = resolve_models(spec)

    def norm(value: str) -> str:
        path = Path(value).expanduser()
        return str(path.absolute()) if path.is_dir() else value

    return norm(source.siglip), norm(source.dinov2)


def _load_text_encoder(model_id: str, config) -> Any:
    from pipeline.models import SiglipEncoder

    return SiglipEncoder.from_pretrained(
        model_id, device=config.device, precision=config.precision, batch_size=config.batch_size
    )


def summarize_file(
    path: str | Path,
    config,
    store: ObjectStore,
    *,
    encoders=None,
    models_explicit: bool = False,
    start: float | None = None,
    end: float | None = None,
    options: SummaryOptions | None = None,
    progress: bool = False,
    **kwargs,
) -> SummaryResult:
    """Summarize one video file: per-frame features from the store when fresh (else the archive's clips in
    `shots_from="auto"`), otherwise decoded once, streaming, and stored for next time.

    Models: `encoders` if given; else `config.models` when `models_explicit`; else the models the stored
    features were made with (like `vigil search`), falling back to `config.models` for a fresh decode."""
    began = time.perf_counter()
    options = options or SummaryOptions()
    path = Path(path)
    if not path.exists():
        raise SummarizeError(f"no such file: {path}")
    if not path.is_file():
        raise SummarizeError(f"{path} is not a file: summarize takes one video file")
    if path.stat().st_size == 0:
        raise SummarizeError(f"{path} is empty (0 bytes): nothing to summarize")
    path = path.resolve()
    sid = file_source_id(path)
    if encoders is not None:
        wanted = (encoders.ids.siglip, encoders.ids.dinov2)
    elif models_explicit:
        wanted = expected_model_ids(config.models)
    else:
        wanted = None
    track = stored_track(
        store, sid, shots_from=options.shots_from, wanted=wanted, file=path, settings=config.decode.sampling()
    )
    reused = track is not None
    if track is None:
        if options.shots_from == "clips":
            raise SummarizeError(
                f"{path} has no stored clips in {store.url} (made with these models): "
                "run `vigil index` first, or summarize with shots from frames"
            )
        if encoders is None:
            from pipeline.models import load_encoders

            encoders = load_encoders(
                config.models, device=config.device, precision=config.precision, batch_size=config.batch_size
            )
        track = extract_and_store_frame_track(path, config, store, encoders, progress)
    if encoders is not None and (
        (encoders.ids.siglip, encoders.ids.dinov2) == (track.models.siglip, track.models.dinov2)
    ):
        text_encoder: Any = encoders.siglip
    else:
        text_encoder = lambda: _load_text_encoder(track.models.siglip, config)  # noqa: E731 - lazy: often unused
    result = summarize_track(
        track,
        store,
        start=start,
        end=end,
        options=options,
        text_encoder=text_encoder,
        video=path,
        short_side=config.decode.short_side or None,
        progress=progress,
        reused=reused,
        **kwargs,
    )
    result.elapsed = time.perf_counter() - began  # decoding and model loading included
    return result


_SOURCE_ID = re.compile(r"^[a-z0-9-]*-[0-9a-f]{12}$")


def summarize_stored(
    store: ObjectStore,
    source: str,
    *,
    start: float | None = None,
    end: float | None = None,
    config=None,
    shots_from: str = "auto",
    **kwargs,
) -> SummaryResult:
    """Summarize a time range of a source (a file path, a camera id or a source_id) from what the store
    holds: its per-frame features, or its clip windows. Never decodes features. The live monitor's stored
    alerts for the source join the given `events`. This is what the rolling summarizer actor of the live
    monitor calls for each camera and period."""
    candidates = [source] if _SOURCE_ID.match(source) else []
    candidates.append(camera_source_id(source))
    if Path(source).expanduser().exists():
        candidates.append(file_source_id(source))
    track = None
    for sid in dict.fromkeys(candidates):
        track = stored_track(store, sid, shots_from=shots_from, start=start, end=end)
        if track is not None:
            break
    if track is None:
        raise SummarizeError(f"nothing stored for {source} in {store.url}: no per-frame features and no clips")
    if config is not None and "text_encoder" not in kwargs:
        kwargs["text_encoder"] = lambda: _load_text_encoder(track.models.siglip, config)
    video = Path(track.source) if track.source_kind == "file" and Path(track.source).is_file() else None
    live = []  # a camera's live track events, as its alerts, go on the timeline
    if track.source_kind == "camera":
        live = live_track_events(store, track.source_id, start or 0.0, track.duration if end is None else end)
    kwargs["events"] = [*kwargs.get("events", ()), *alert_events(store, track.source_id), *live]
    return summarize_track(
        track,
        store,
        start=start,
        end=end,
        video=video,
        options=kwargs.pop("options", None) or SummaryOptions(shots_from=shots_from),
        **kwargs,
    )


def export_summary(store: ObjectStore, result: SummaryResult, folder: str | Path) -> list[Path]:
    """Copy the summary files (and the keyframe pictures it names) to a folder a person opens."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SummarizeError(f"cannot create output folder {folder}: {exc}") from None
    written = []
    for key in result.keys.values():
        target = folder / key.rsplit("/", 1)[-1]
        target.write_bytes(store.get(key))
        written.append(target)
    for keyframe in result.summary["keyframes"]:
        if keyframe["image"]:
            target = folder / "keyframes" / keyframe["image"].rsplit("/", 1)[-1]
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(store.get(keyframe["image"]))
            written.append(target)
    return written
