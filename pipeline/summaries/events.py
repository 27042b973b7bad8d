"""Timeline events: what happened over a time span (alerts, track events), from records, files or the store."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.records import TrackAction
from pipeline.storage.layout import alerts_prefix
from pipeline.storage.store import ObjectStore, StoreError
from pipeline.summaries.errors import SummarizeError


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened over [t_start, t_end] (media seconds): an alert, a track event, ...

    `from_mapping` also takes the Alert record of the live monitor as JSON (start, end, query text or id,
    peak score, id), so alerts plug in without another format."""

    t_start: float
    t_end: float
    label: str
    kind: str = "alert"
    score: float | None = None
    id: str | None = None
    track: TrackAction | None = None  # of a track event (kind "track")

    @classmethod
    def from_mapping(cls, item: Mapping | Any) -> "TimelineEvent":
        if not isinstance(item, Mapping):  # a record object (dataclass / pydantic): read its attributes
            item = {name: getattr(item, name) for name in dir(item) if not name.startswith("_")}

        def first(*names, default=None):
            for name in names:
                if item.get(name) is not None:
                    return item[name]
            return default

        try:
            start = float(first("t_start", "start"))
            end = float(first("t_end", "end", default=start))
        except (TypeError, ValueError):
            raise SummarizeError(f"an event needs numeric t_start and t_end (seconds): {dict(item)!r}") from None
        action = item.get("track")  # a track query's alert says what the object did
        if isinstance(action, Mapping):
            action = TrackAction.from_json(action)
        label = first("label", "query", "query_text", "query_image", "name")
        if label is None:
            label = action.sentence() if isinstance(action, TrackAction) else first("query_id")
        if label is None or not str(label).strip():
            raise SummarizeError(f"an event needs a label: {dict(item)!r}")
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
            raise SummarizeError(f"an event needs 0 <= t_start <= t_end, got {start} .. {end}")
        score = first("score", "peak_score")
        ident = first("id", "alert_id")
        return cls(
            start,
            end,
            str(label).strip(),
            str(first("kind", default="alert")),
            None if score is None else float(score),
            None if ident is None else str(ident),
        )

    def to_json(self) -> dict:
        event = {
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "label": self.label,
            "kind": self.kind,
            "score": None if self.score is None else round(self.score, 4),
            "id": self.id,
        }
        return event if self.track is None else {**event, "track": self.track.to_json()}


def alert_events(store: ObjectStore, sid: str) -> list[TimelineEvent]:
    """The live monitor's alerts for a camera (`alerts/{camera_source_id(camera)}/{alert_id}.json`, Alert.to_json)
    as timeline events; an unreadable one is skipped rather than failing the summary."""
    events = []
    for key in store.list(alerts_prefix(sid)):
        if key.endswith(".json"):
            try:
                events.append(TimelineEvent.from_mapping(store.get_json(key)))
            except (SummarizeError, ValueError, StoreError):
                continue
    return events


def read_events(path: str | Path) -> list[TimelineEvent]:
    """Events from a JSON file: a list, {"events": [...]}, or JSON lines; each {t_start, t_end, label}."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SummarizeError(f"events file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SummarizeError(f"cannot read events file {path}: {exc}") from None
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SummarizeError(f"events file {path} is neither JSON nor JSON lines: {exc}") from None
    if isinstance(data, dict):
        data = data.get("events", [data] if "label" in data else [])
    if not isinstance(data, list):
        raise SummarizeError(f"events file {path}: expected a list of events")
    return [TimelineEvent.from_mapping(item) for item in data]
