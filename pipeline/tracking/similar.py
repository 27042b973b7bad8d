"""The same object across cameras and time: the stored tracks of every source in a store (their `tracks.json`,
written by `vigil track`, and the live tracker's ended tracks of each camera) as one exact cosine index over
their appearance vectors.

A live camera's ended tracks come a sink write at a time (`write_ended_tracks`), each write's as one object
named by its content under `tracks/{source_id}/live/index/`: a replay writes the same object again, and two
writers never touch one object. They read as one source per camera, its id the camera's source id followed by
"/live" (`live_source_id`): `vigil track --camera` of the same camera is another source, numbering its tracks
afresh. A camera's track ids start again when the monitor reads its streams from their start: an id ended twice
names the later track.

Vectors of different appearance models are never compared: a model's vectors mean nothing to another's, even at
equal dimensions. The index holds the sources of one model and names the sources it left out. It is built
whole in memory: a track is one vector, so even many sources' tracks are a small matrix, and an exact search
(one matrix product) is as fast as an approximate one would be at this size.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.storage.clips import write_keyframe
from pipeline.storage.layout import (
    camera_source_id,
    live_track_thumb_key,
    live_tracks_key,
    live_tracks_prefix,
    tracks_key,
)
from pipeline.storage.store import ObjectStore
from pipeline.tracking.video import EndedTrack, decode_appearance

TRACKS_ROOT = "tracks/"
_LIVE_TRACKS = re.compile(r"^tracks/([^/]+)/live/index/\d{12}-[0-9a-f]{12}\.json$")


def live_source_id(sid: str) -> str:
    """The id of a camera's live tracks as a source of the index, beside its `vigil track` results' `sid`."""
    return f"{sid}/live"


class TrackSearchError(ValueError):
    """A query the stored tracks cannot answer: an unknown source or track, or vectors that do not compare."""


@dataclass(frozen=True)
class StoredTrack:
    """One track as `tracks.json` describes it, with the source it belongs to."""

    source: str  # a file path or a camera id
    source_id: str
    track_id: int
    class_name: str
    first_pts: float
    last_pts: float
    thumbnail: str  # store key of its best crop
    untrained: bool  # made with random weights

    @classmethod
    def from_entry(cls, document: dict, entry: dict, source_id: str) -> StoredTrack:
        """One of the tracks a source's tracks.json `document` lists (`entry`)."""
        return cls(
            source=document["source"],
            source_id=source_id,
            track_id=int(entry["id"]),
            class_name=entry["class_name"],
            first_pts=float(entry["first_pts"]),
            last_pts=float(entry["last_pts"]),
            thumbnail=entry["thumbnail"],
            untrained=bool(entry["untrained"]),
        )

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrackHit:
    """A stored track found by a search, with its cosine similarity to the query."""

    track: StoredTrack
    score: float

    def to_json(self) -> dict:
        return self.track.to_json() | {"score": self.score}


@dataclass(frozen=True)
class StoredSource:
    """One source's stored tracks: their descriptions, and their unit appearance vectors as rows."""

    source: str
    source_id: str
    appearance_model: str
    tracks: list[StoredTrack]
    vectors: np.ndarray  # (len(tracks), dim) float32

    def vector_of(self, track_id: int) -> np.ndarray:
        """The appearance vector of the track `track_id` (the latest of a live camera's tracks of that id); an
        unknown id is a TrackSearchError naming the known."""
        for row in reversed(range(len(self.tracks))):
            if self.tracks[row].track_id == track_id:
                return self.vectors[row]
        known = ", ".join(str(track.track_id) for track in self.tracks) or "none"
        raise TrackSearchError(f"{self.source} has no track {track_id} (its tracks: {known})")


def read_source(store: ObjectStore, source_id: str) -> StoredSource | None:
    """The stored tracks of one source; None when it has not been tracked."""
    key = tracks_key(source_id)
    if not store.exists(key):
        return None
    document = store.get_json(key)
    entries = [(document, entry) for entry in document["tracks"]]
    return _source(key, document["source"], source_id, document["appearance_model"], entries)


def read_live_sources(store: ObjectStore, sid: str, keys: Sequence[str]) -> list[StoredSource]:
    """A camera's ended live tracks, its index objects `keys`: one source per appearance model they were made
    with (the one of the monitor's config when they ended), each track once, in order of their first pts."""
    per_model: dict[str, list[tuple[dict, dict]]] = {}
    seen: set[tuple[int, float]] = set()  # a track a replay wrote twice is one
    for key in keys:
        document = store.get_json(key)
        for entry in document["tracks"]:
            if (entry["id"], entry["first_pts"]) not in seen:
                seen.add((entry["id"], entry["first_pts"]))
                per_model.setdefault(document["appearance_model"], []).append((document, entry))
    sources = []
    for model, entries in sorted(per_model.items()):
        entries.sort(key=lambda pair: (pair[1]["first_pts"], pair[1]["id"]))
        camera = entries[0][0]["source"]
        sources.append(_source(live_tracks_prefix(sid), camera, live_source_id(sid), model, entries))
    return sources


def _source(
    where: str, source: str, source_id: str, appearance_model: str, entries: list[tuple[dict, dict]]
) -> StoredSource:
    """A source of tracks: each (document, entry) of `entries` a track, read from `where`."""
    tracks, vectors = [], []
    for document, entry in entries:
        vector = decode_appearance(entry["appearance"])
        if vector.shape != (entry["appearance_dim"],):
            raise TrackSearchError(
                f"{where}: track {entry['id']} has {vector.shape[0]} appearance values, not {entry['appearance_dim']}"
            )
        vectors.append(vector)
        tracks.append(StoredTrack.from_entry(document, entry, source_id))
    dim = vectors[0].shape[0] if vectors else 0
    if any(vector.shape[0] != dim for vector in vectors):
        raise TrackSearchError(f"{where}: its tracks' appearance vectors differ in dimensions")
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    return StoredSource(source, source_id, appearance_model, tracks, matrix)


def stored_sources(store: ObjectStore) -> Iterator[StoredSource]:
    """Every tracked source of the store, in source id order: each `vigil track` result, then a camera's live
    tracks."""
    live: dict[str, list[str]] = {}
    for key in store.list(TRACKS_ROOT):
        source_id = key[len(TRACKS_ROOT) :].partition("/")[0]
        if key == tracks_key(source_id):
            found = read_source(store, source_id)
            if found is not None:  # deleted between the listing and the reading
                yield found
        elif _LIVE_TRACKS.match(key):
            live.setdefault(source_id, []).append(key)
    for source_id, keys in live.items():
        yield from read_live_sources(store, source_id, keys)


def write_ended_tracks(store: ObjectStore, ended: Sequence[EndedTrack]) -> None:
    """Ended live tracks into the index: each one's best crop (its thumbnail), then per camera and appearance
    model one object listing them, named by its content."""
    groups: dict[tuple[str, str], list[EndedTrack]] = {}
    for track in ended:
        groups.setdefault((track.camera, track.appearance_model), []).append(track)
    for (camera, model), group in groups.items():
        sid = camera_source_id(camera)
        entries = []
        for track in group:
            tracked, thumbnail_key = track.tracked, ""
            if tracked.best_crop is not None:  # None: restored from a checkpoint, not seen since
                thumbnail_key = live_track_thumb_key(sid, tracked.track_id, tracked.best_pts)
                write_keyframe(store, thumbnail_key, tracked.best_crop)
            entries.append(tracked.to_json(track.class_name, thumbnail_key, track.untrained))
        document = {"source": camera, "appearance_model": model, "tracks": entries}
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:12]
        last_pts = max(track.tracked.last_pts for track in group)
        store.put_json(live_tracks_key(sid, last_pts, digest), document)


class TrackIndex:
    """The tracks of a store's sources tracked with one appearance model, searched exactly by cosine."""

    def __init__(self, appearance_model: str, sources: list[StoredSource], skipped: list[StoredSource]):
        self.appearance_model = appearance_model
        self.skipped = skipped  # sources tracked with another appearance model, left out
        self.tracks = [track for source in sources for track in source.tracks]
        dims = {source.vectors.shape[1] for source in sources if source.tracks}
        if len(dims) > 1:
            raise TrackSearchError(
                f"tracks of {appearance_model} have appearance vectors of {sorted(dims)} dimensions: cannot compare"
            )
        self.dim = dims.pop() if dims else 0
        self.vectors = (
            np.concatenate([source.vectors for source in sources if source.tracks])
            if self.tracks
            else np.zeros((0, 0), dtype=np.float32)
        )

    @classmethod
    def from_sources(cls, sources: list[StoredSource], appearance_model: str | None, where: str) -> TrackIndex:
        """The tracks of `sources` made with `appearance_model`, or without one with the model most tracks were
        made with; no tracks (of that model) is a TrackSearchError naming `where` they were looked for."""
        if not any(source.tracks for source in sources):
            raise TrackSearchError(
                f"no tracks in {where}: run `vigil track VIDEO`, or a monitor with track.live, first"
            )
        if appearance_model is None:
            per_model: dict[str, int] = {}
            for source in sources:
                per_model[source.appearance_model] = per_model.get(source.appearance_model, 0) + len(source.tracks)
            appearance_model = max(per_model, key=per_model.__getitem__)
        kept = [source for source in sources if source.appearance_model == appearance_model]
        if not any(source.tracks for source in kept):
            models = ", ".join(sorted({source.appearance_model for source in sources}))
            raise TrackSearchError(f"no tracks of appearance model {appearance_model} in {where} (tracks of: {models})")
        skipped = [source for source in sources if source.appearance_model != appearance_model]
        return cls(appearance_model, kept, skipped)

    @classmethod
    def from_store(cls, store: ObjectStore, appearance_model: str | None = None) -> TrackIndex:
        """`from_sources` of every tracked source in `store`."""
        return cls.from_sources(list(stored_sources(store)), appearance_model, store.url)

    def __len__(self) -> int:
        return len(self.tracks)

    def search(
        self, vector: np.ndarray, appearance_model: str, top_k: int, *, exclude: tuple[str, int] | None = None
    ) -> list[TrackHit]:
        """The `top_k` tracks most similar by cosine to the unit `vector` of `appearance_model`, best first (ties
        in source id and track id order), without the track `exclude` names as (source id, track id)."""
        if appearance_model != self.appearance_model:
            raise TrackSearchError(
                f"cannot compare a vector of appearance model {appearance_model} with tracks of {self.appearance_model}"
            )
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise TrackSearchError(
                f"cannot compare a {vector.shape[-1]}-dimensional vector with {self.dim}-dimensional track "
                f"appearances of {self.appearance_model}"
            )
        scores = self.vectors @ vector
        hits = []
        for row in np.argsort(-scores, kind="stable"):
            track = self.tracks[row]
            if exclude is not None and (track.source_id, track.track_id) == exclude:
                continue
            hits.append(TrackHit(track, float(scores[row])))
            if len(hits) == top_k:
                break
        return hits


def similar_tracks(
    sources: list[StoredSource], query: StoredSource, track_id: int, top_k: int, where: str
) -> tuple[TrackIndex, list[TrackHit]]:
    """The `top_k` tracks of `sources` most like track `track_id` of `query` (one of them), itself left out, and
    the index of its appearance model they were searched in (`where`: where the sources were read, for errors)."""
    vector = query.vector_of(track_id)
    index = TrackIndex.from_sources(sources, query.appearance_model, where)
    return index, index.search(vector, query.appearance_model, top_k, exclude=(query.source_id, track_id))
