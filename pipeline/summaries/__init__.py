"""Summaries of archived footage: an hour of video in, one page out that says what happened when.

Stages, all on features (never on held frames), one module each:

1. **Features along time** (`features`: `FeatureTrack`): one SigLIP2 and one DINOv2 unit vector per row, a
   row being a sampled frame (`kind="frames"`, decoded once and kept as `summaries/{source_id}/frames.npz`)
   or a stored clip window (`kind="clips"`).
2. **Shots** (`shots`: `detect_shots`): cuts where the DINOv2 change between consecutive rows is a local
   maximum above an adaptive threshold.
3. **Keyframes** (`keyframes`: `choose_keyframes`): rows clustered on their joint SigLIP2+DINOv2 embedding,
   as many as the content shows under a budget that grows with the square root of the duration, and their
   pictures (from the store, or seeked in the file).
4. **Tags** (`tags`: `tag_rows`): each shot's mean SigLIP2 image embedding scored zero-shot against the text
   embeddings of a concept vocabulary (`concepts`: built-in, user-extendable, any language), cached in the
   store per text model and vocabulary.
5. **Timeline** (`events`): events (alerts, track events: `TimelineEvent`) and optional query scores over time;
   a source's tracking result, when stored (`tracks`: `read_tracking`), adds its zone and line events
   (`TrackAction`) and a section of its tracks.
6. **Text** (`assembly` and `render`): consecutive shots of one scene merged into segments, one line each
   ("00:00-01:12 parking lot: car, person; 3 alerts 'person at the gate'").

`assembly` runs them for a file, a stored source or a track; `rolling` does so per period of live cameras.
Outputs under `summaries/{source_id}/` (a time range under `summaries/{source_id}/range-{from_ms}-{to_ms}/`):
`summary.json` (schema: `pipeline/summaries/summary_schema.json`), `contact_sheet.png`, `timeline.png`,
`report.html` (self-contained: every image inlined as a data URI), made by `render`.
"""

from __future__ import annotations

from pipeline.records import TrackAction
from pipeline.summaries.assembly import (
    SCHEMA_VERSION,
    SummaryResult,
    expected_model_ids,
    export_summary,
    summarize_file,
    summarize_stored,
    summarize_track,
    summary_schema,
    validate_summary,
)
from pipeline.summaries.concepts import Concept, VocabularyError, builtin_concepts, load_vocabulary, parse_vocabulary
from pipeline.summaries.errors import NotEnoughFootage, SummarizeError
from pipeline.summaries.events import TimelineEvent, alert_events, read_events
from pipeline.summaries.features import FeatureTrack, read_clip_track, read_frame_track, stored_track
from pipeline.summaries.keyframes import choose_keyframes, joint_embedding, keyframe_budget
from pipeline.summaries.options import SummaryOptions
from pipeline.summaries.rolling import RollingSummaries
from pipeline.summaries.shots import Shot, detect_shots
from pipeline.summaries.tags import ConceptBank, Tag, concept_bank, tag_rows
from pipeline.summaries.tracks import StoredTracking, read_tracking

__all__ = [
    "SCHEMA_VERSION",
    "Concept",
    "ConceptBank",
    "FeatureTrack",
    "NotEnoughFootage",
    "RollingSummaries",
    "Shot",
    "StoredTracking",
    "SummarizeError",
    "SummaryOptions",
    "SummaryResult",
    "Tag",
    "TimelineEvent",
    "TrackAction",
    "VocabularyError",
    "alert_events",
    "builtin_concepts",
    "choose_keyframes",
    "concept_bank",
    "detect_shots",
    "expected_model_ids",
    "export_summary",
    "joint_embedding",
    "keyframe_budget",
    "load_vocabulary",
    "parse_vocabulary",
    "read_clip_track",
    "read_events",
    "read_frame_track",
    "read_tracking",
    "stored_track",
    "summarize_file",
    "summarize_stored",
    "summarize_track",
    "summary_schema",
    "tag_rows",
    "validate_summary",
]
