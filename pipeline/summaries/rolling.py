"""Rolling summaries of live cameras: one per camera and period of media time, from its stored clip windows."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from pipeline.storage.layout import camera_source_id, summary_prefix, summary_range_start_ms, summary_ranges_prefix
from pipeline.storage.store import ObjectStore
from pipeline.summaries.assembly import SummaryResult, summarize_stored
from pipeline.summaries.errors import NotEnoughFootage
from pipeline.summaries.timecode import format_time

log = logging.getLogger(__name__)


class RollingSummaries:
    """Rolling summaries of live cameras: period k of a camera is [k * every, (k + 1) * every) of its media
    time, summarized from its stored clip windows (`summarize_stored`) under the period's range key once
    every window overlapping it is in the store.

    What is done comes from the store: periods are summarized in order, so every period before a camera's
    latest stored period summary is settled (summarized, or with too little footage to summarize), and a
    restart or a replay writes no period twice. A summary's `summary.json` is its last object written, so
    a period interrupted mid-write is done again, over the same keys."""

    def __init__(self, store: ObjectStore, *, every: float, window: float, **options):
        """`window`: the clip window length (windows are [k * window, (k + 1) * window)); `options` go to
        `summarize_stored` (`config` or `text_encoder` for the vocabulary's first embedding, events, ...)."""
        if every <= 0 or window <= 0:
            raise ValueError(f"the summary period and the clip window must be positive, got {every} and {window}")
        self.store = store
        self.every = every
        self.window = window
        self.options = options
        self._next_period: dict[str, int] = {}  # camera -> its first period not settled yet

    def period_prefix(self, camera: str, period: int) -> str:
        return summary_prefix(camera_source_id(camera), period * self.every, (period + 1) * self.every)

    def _first_unsettled(self, camera: str) -> int:
        if camera not in self._next_period:
            latest = -1
            for key in self.store.list(summary_ranges_prefix(camera_source_id(camera))):
                if not key.endswith("/summary.json"):
                    continue
                prefix = key.rsplit("/", 1)[0]
                start_ms = summary_range_start_ms(prefix)
                period = round(start_ms / 1000 / self.every)
                if self.period_prefix(camera, period) == prefix:  # one of ours, not a summary of another range
                    latest = max(latest, period)
            self._next_period[camera] = latest + 1
        return self._next_period[camera]

    def advance(self, latest_pts: Mapping[str, float], *, ended: bool = False) -> list[SummaryResult]:
        """Summarize the periods that became complete, given the latest pts each camera's stored output covers.

        A camera's open clip window is not stored yet; every window before it is. With `ended` the streams
        ended and their last windows were flushed to the store, so the last, partial period is summarized
        too (under its period's key). Returns the summaries written."""
        written = []
        for camera, pts in sorted(latest_pts.items()):
            if ended:
                due = math.floor(pts / self.every + 1e-9) + 1
            else:
                stored_until = math.floor(pts / self.window + 1e-9) * self.window  # the open window's start
                due = math.floor(stored_until / self.every + 1e-9)
            for period in range(self._first_unsettled(camera), due):
                start, end = period * self.every, (period + 1) * self.every
                try:
                    written.append(
                        summarize_stored(self.store, camera, start=start, end=end, shots_from="clips", **self.options)
                    )
                except NotEnoughFootage as exc:  # the camera was off, or a short tail: nothing to show
                    log.warning("no rolling summary of %s %s-%s: %s", camera, format_time(start), format_time(end), exc)
                self._next_period[camera] = period + 1
        return written
