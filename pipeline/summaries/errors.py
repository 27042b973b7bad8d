"""Why a summary cannot be made."""

from __future__ import annotations


class SummarizeError(ValueError):
    """The input cannot be summarized (empty, too short, unreadable, nothing stored); the message says why."""


class NotEnoughFootage(SummarizeError):
    """The time range holds too few feature rows for a summary (outside the footage, or too short)."""
