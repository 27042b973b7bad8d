"""The same object across cameras and time: the stored tracks of every source in a store (their `tracks.json`,
written by `vigil track`) as one exact cosine index over their appearance vectors.

Vectors of different appearance models are never compared: a model's vectors mean nothing to another's, even at
equal dimensions. The index holds the sources of one model and names the sources it left out. It is built
whole in memory: a track is one vector, so even many sources' tracks are a small matrix, and an exact search
(one matrix product) is as fast as an approximate one would be at this size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.storage.layout import tracks_key
from pipeline.storage.store import ObjectStore
from pipeline.tracking.video import decode_appearance

TRACKS_ROOT = "tracks/"


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
        """The appearance vector of the track `track_id`; an unknown id is a TrackSearchError naming the known."""
        for row, track in enumerate(self.tracks):
            if track.track_id == track_id:
                return self.vectors[row]
        known = ", ".join(str(track.track_id) for track in self.tracks) or "none"
        raise TrackSearchError(f"{self.source} has no track {track_id} (its tracks: {known})")


def read_source(store: ObjectStore, source_id: str) -> StoredSource | None:
    """The stored tracks of one source; None when it has not been tracked."""
    key = tracks_key(source_id)
    if not store.exists(key):
        return None
    document = store.get_json(key)
    tracks, vectors = [], []
    for entry in document["tracks"]:
        vector = decode_appearance(entry["appearance"])
        if vector.shape != (entry["appearance_dim"],):
            raise TrackSearchError(
                f"{key}: track {entry['id']} has {vector.shape[0]} appearance values, not {entry['appearance_dim']}"
            )
        vectors.append(vector)
        tracks.append(StoredTrack.from_entry(document, entry, source_id))
    dim = vectors[0].shape[0] if vectors else 0
    if any(vector.shape[0] != dim for vector in vectors):
        raise TrackSearchError(f"{key}: its tracks' appearance vectors differ in dimensions")
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    return StoredSource(document["source"], source_id, document["appearance_model"], tracks, matrix)


def stored_sources(store: ObjectStore) -> Iterator[StoredSource]:
    """Every tracked source of the store, in source id order."""
    for key in store.list(TRACKS_ROOT):
        source_id = key[len(TRACKS_ROOT) :].partition("/")[0]
        if key == tracks_key(source_id):
            found = read_source(store, source_id)
            if found is not None:  # deleted between the listing and the reading
                yield found


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
            raise TrackSearchError(f"no tracks in {where}: run `vigil track VIDEO` first")
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
