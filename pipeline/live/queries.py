"""Standing queries: their definition (`StandingQuery`, validated and JSON), their vectors (`EncodedQuery`,
made by `encode_query`), and their place in the store (`queries/{id}.json`, example images as
`queries/{id}.jpg`), so they can be added and removed while monitors run: monitors re-read that folder
periodically. How they score frames and raise alerts: `pipeline.live.match`.

A query watches frames (a phrase or an example image) or tracked objects (`track`: an object of some classes
entering, leaving, staying in a zone or crossing a line); the latter alert once per track
(`pipeline.live.track_alerts`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.records import CROSSING_DIRECTIONS, TRACK_EVENT_KINDS, ModelIds
from pipeline.storage.codecs import decode_image, encode_jpeg
from pipeline.storage.layout import QUERIES, query_image_key, query_key
from pipeline.storage.store import ObjectStore

Calibration = Literal["calibrated", "prompts", "camera", "raw"]
Z_MODES = ("calibrated", "camera")
DEFAULT_Z_THRESHOLD = 4.0
DEFAULT_Z_HYSTERESIS = 1.5
DEFAULT_COSINE_HYSTERESIS = 0.01

_QUERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ---------------------------------------------------------------------------------------------- queries


class TrackCondition(BaseModel):
    """Which track events a query alerts on: `event` in the zone or at the line named `where` (the `events`
    config section's names), by an object of one of `classes` (the detector's class names; None: any), a
    crossing in `direction` only (None: either). A "dwell" is a visit of `events.dwell_seconds`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Literal[TRACK_EVENT_KINDS]  # type: ignore[valid-type]
    where: str = Field(min_length=1, max_length=200)
    classes: tuple[str, ...] | None = None
    direction: Literal[CROSSING_DIRECTIONS] | None = None  # type: ignore[valid-type]

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) or not all(isinstance(c, str) and c.strip() for c in value) or not value:
            raise ValueError("must be a list of class names, or null for any class")
        return tuple(c.strip() for c in value)

    @model_validator(mode="after")
    def _direction_for_crossings(self) -> "TrackCondition":
        if self.direction is not None and self.event != "cross":
            raise ValueError(f"a direction applies to 'cross' events only, not {self.event!r}")
        return self

    def accepts(self, kind: str, name: str, direction: str | None, class_name: str) -> bool:
        return (
            kind == self.event
            and name == self.where
            and self.direction in (None, direction)
            and (self.classes is None or class_name in self.classes)
        )


class StandingQuery(BaseModel):
    """What to watch for: a definition, JSON-serialisable and validated. Times are media seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    text: str | None = None  # a phrase in any language ...
    image: str | None = None  # ... or where the example image is (store key, path or URL); informational
    cameras: tuple[str, ...] | None = None  # None: every camera
    calibration: Calibration = "calibrated"
    threshold: float | None = None  # None: the mode's default (z modes only)
    hysteresis: float | None = Field(default=None, ge=0)  # an open event stays open down to threshold - hysteresis
    min_duration: float = Field(default=2.0, ge=0, le=3600)  # score >= threshold this long before an event opens
    release: float = Field(default=2.0, ge=0, le=3600)  # below the low threshold this long before it closes
    cooldown: float = Field(default=60.0, ge=0, le=86400)  # after an event ends, before the next may start
    max_gap: float = Field(default=10.0, gt=0, le=86400)  # a longer silence of the camera closes the event
    track: TrackCondition | None = None  # instead of text or image: events of tracked objects

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _QUERY_ID.match(value):
            raise ValueError("must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("text", "image")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (leave it out instead)")
        return value

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("all", "*")):
            return None
        if isinstance(value, str):
            raise ValueError("must be a list of camera ids, or 'all'")
        cameras = [str(c).strip() if isinstance(c, str) else c for c in value]
        if not cameras:
            raise ValueError("must name at least one camera (or be 'all' / null for every camera)")
        if any(not isinstance(c, str) or not c for c in cameras):
            raise ValueError("camera ids must be non-empty strings")
        if len(set(cameras)) != len(cameras):
            raise ValueError("lists a camera twice")
        return tuple(cameras)

    @model_validator(mode="after")
    def _complete(self) -> "StandingQuery":
        if sum(x is not None for x in (self.text, self.image, self.track)) != 1:
            raise ValueError("a standing query needs exactly one of 'text', 'image' or 'track'")
        if self.image is not None and self.calibration == "prompts":
            raise ValueError("calibration 'prompts' (neutral text prompts) applies to text queries only")
        z_mode = self.calibration in Z_MODES
        if self.threshold is None:
            if not z_mode:
                raise ValueError(f"calibration {self.calibration!r} scores cosines: give an explicit threshold")
            object.__setattr__(self, "threshold", DEFAULT_Z_THRESHOLD)
        if not math.isfinite(self.threshold):
            raise ValueError("threshold must be a finite number")
        if not z_mode and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"calibration {self.calibration!r} scores cosines: threshold must be within [-1, 1]")
        if self.hysteresis is None:
            object.__setattr__(self, "hysteresis", DEFAULT_Z_HYSTERESIS if z_mode else DEFAULT_COSINE_HYSTERESIS)
        return self

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "image" if self.image is not None else "track"

    @property
    def low(self) -> float:
        return float(self.threshold) - float(self.hysteresis)

    def watches(self, camera: str) -> bool:
        return self.cameras is None or camera in self.cameras

    def to_json(self) -> dict:
        data = self.model_dump(mode="json")
        data["cameras"] = list(self.cameras) if self.cameras is not None else None
        return data

    @classmethod
    def from_json(cls, data: "dict | str | bytes") -> "StandingQuery":
        """Validate a definition; a wrong key or value raises ValueError naming it."""
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"]) or "query"
                if error["type"] == "extra_forbidden":
                    problems.append(f"unknown key '{where}'")
                else:
                    problems.append(f"'{where}': {error['msg']}")
            raise ValueError("invalid standing query: " + "; ".join(problems)) from None


def _vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a non-empty finite vector, got shape {array.shape}")
    norm = float(np.linalg.norm(array))
    if not 0.98 <= norm <= 1.02:
        raise ValueError(f"{name} must be a unit vector (norm {norm:.4f})")
    return array


@dataclass(frozen=True)
class EncodedQuery:
    """A definition plus its vectors: SigLIP2 (text or image tower) and, for image queries, DINOv2."""

    query: StandingQuery
    siglip: np.ndarray
    dinov2: np.ndarray | None
    models: ModelIds

    def __post_init__(self) -> None:
        object.__setattr__(self, "siglip", _vector(self.siglip, "siglip"))
        if self.query.kind == "image":
            if self.dinov2 is None:
                raise ValueError(f"image query {self.query.id!r} needs a DINOv2 vector")
            object.__setattr__(self, "dinov2", _vector(self.dinov2, "dinov2"))
        elif self.dinov2 is not None:
            raise ValueError(f"text query {self.query.id!r} has no DINOv2 vector")

    @property
    def id(self) -> str:
        return self.query.id

    def to_json(self) -> dict:
        return {
            "query": self.query.to_json(),
            "siglip": [float(x) for x in self.siglip],  # float32 -> float64 and back is exact
            "dinov2": None if self.dinov2 is None else [float(x) for x in self.dinov2],
            "models": {"siglip": self.models.siglip, "dinov2": self.models.dinov2, "untrained": self.models.untrained},
        }

    @classmethod
    def from_json(cls, data: "dict | str | bytes") -> "EncodedQuery":
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
        return cls(
            query=StandingQuery.from_json(data["query"]),
            siglip=data["siglip"],
            dinov2=data.get("dinov2"),
            models=ModelIds(**data["models"]),
        )


def encode_query(query: StandingQuery, encoders: Any, *, image: np.ndarray | None = None) -> EncodedQuery:
    """Encode a definition with `pipeline.models.Encoders` (text tower for phrases; both image towers for an
    example image, whose pixels must be given: the definition only names where the image is)."""
    if query.kind == "text":
        if image is not None:
            raise ValueError(f"text query {query.id!r} takes no example image")
        return EncodedQuery(query, encoders.siglip.embed_texts([query.text])[0], None, encoders.ids)
    if image is None:
        raise ValueError(f"image query {query.id!r}: pass the example image's pixels (uint8 RGB) to encode it")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the example image must be RGB (H, W, 3), got shape {image.shape}")
    siglip, dinov2 = encoders.embed_images(image[None])
    return EncodedQuery(query, siglip[0], dinov2[0], encoders.ids)


def save_query(store: ObjectStore, query: StandingQuery, image: np.ndarray | None = None) -> None:
    if (query.image is not None) != (image is not None):
        raise ValueError(f"query {query.id!r}: an example-image query needs its image, a text query none")
    if image is not None:
        store.put(query_image_key(query.id), encode_jpeg(image, quality=95))
    store.put_json(query_key(query.id), query.to_json())


def delete_query(store: ObjectStore, query_id: str) -> bool:
    existed = store.exists(query_key(query_id))
    store.delete(query_key(query_id))
    store.delete(query_image_key(query_id))
    return existed


def load_queries(store: ObjectStore) -> list[tuple[StandingQuery, np.ndarray | None]]:
    queries = []
    for key in store.list(QUERIES):
        if not key.endswith(".json"):
            continue
        query = StandingQuery.from_json(store.get(key))
        image = None
        if query.image is not None:
            image = decode_image(store.get(query_image_key(query.id)))
        queries.append((query, image))
    return queries
