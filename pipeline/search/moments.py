"""Moments: the hits of an index search merged into events, and a phrase or an example image searched for them.

Scores are cosines (`pipeline.search.index`); time-adjacent hits of one source that score alike become one
event (`merge_hits`), ranked by its best hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from pipeline.records import Event, SearchHit
from pipeline.search.filters import ClipFilter

if TYPE_CHECKING:
    from pipeline.search.index import ClipIndex


def merge_hits(hits: Iterable[SearchHit], *, merge_drop: float = 0.15, untrained: bool = False) -> list[Event]:
    """Merge time-adjacent hits of one source into events, best first.

    Scores are rescaled to [0, 1] over the candidates; starting from the best unassigned hit, a neighbour
    window (touching in time) joins while its rescaled score is within `merge_drop` of the event's peak.
    """
    hits = list(hits)
    if not hits:
        return []
    low, high = min(h.score for h in hits), max(h.score for h in hits)
    span = high - low or 1.0
    level = {h: (h.score - low) / span for h in hits}
    by_source: dict[str, list[SearchHit]] = {}
    for hit in sorted(hits, key=lambda h: h.start):
        by_source.setdefault(hit.source_id, []).append(hit)
    assigned: set[SearchHit] = set()
    events = []
    for seed in sorted(hits, key=lambda h: (-h.score, h.source_id, h.start)):
        if seed in assigned:
            continue
        timeline = by_source[seed.source_id]
        lo = hi = timeline.index(seed)
        floor = level[seed] - merge_drop

        def joins(i: int, neighbour_of: int) -> bool:
            if not 0 <= i < len(timeline) or timeline[i] in assigned or level[timeline[i]] < floor:
                return False
            a, b = sorted((timeline[i], timeline[neighbour_of]), key=lambda h: h.start)
            return b.start <= a.end + 1e-6

        while joins(lo - 1, lo):
            lo -= 1
        while joins(hi + 1, hi):
            hi += 1
        members = tuple(timeline[lo : hi + 1])
        assigned.update(members)
        events.append(
            Event(
                source=seed.source,
                source_id=seed.source_id,
                start=members[0].start,
                end=members[-1].end,
                score=seed.score,
                peak_time=(seed.start + seed.end) / 2,
                keyframe_key=seed.keyframe_key,
                untrained=untrained,
                hits=members,
            )
        )
    return events


def find_moments(
    index: ClipIndex,
    encoders,
    *,
    text: str | None = None,
    image: np.ndarray | None = None,
    top_k: int = 10,
    merge_drop: float = 0.15,
    where: ClipFilter | None = None,
) -> list[Event]:
    """Moments matching a phrase (SigLIP2 text tower) or an example image (SigLIP2 and DINOv2), best first;
    of the rows `where` lets through (None: all)."""
    if (text is None) == (image is None):
        raise ValueError("search needs exactly one of a text query or an example image")
    index.check_models(encoders.ids)
    if text is not None:
        if not text.strip():
            raise ValueError("the text query is empty")
        siglip, dinov2 = encoders.siglip.embed_texts([text])[0], None
    else:
        siglips, dinov2s = encoders.embed_images(image[None])
        siglip, dinov2 = siglips[0], dinov2s[0]
    return moments_of(
        index, siglip, dinov2, top_k=top_k, merge_drop=merge_drop, where=where, untrained=encoders.ids.untrained
    )


def moments_of(
    index: ClipIndex,
    siglip: np.ndarray,
    dinov2: np.ndarray | None = None,
    *,
    top_k: int = 10,
    merge_drop: float = 0.15,
    where: ClipFilter | None = None,
    untrained: bool = False,
) -> list[Event]:
    """Moments matching a query's unit vectors (a phrase's SigLIP2 text vector, or an image's SigLIP2 and DINOv2
    vectors), best first; the index's models must be those that made them (`index.check_models`)."""
    hits = index.search(siglip=siglip, dinov2=dinov2, k=max(top_k * 8, 64), where=where)
    return merge_hits(hits, merge_drop=merge_drop, untrained=untrained)[:top_k]
