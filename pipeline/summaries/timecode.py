"""Media times as people read them ("01:12", "1:02:03")."""

from __future__ import annotations

import math


def format_time(seconds: float, hours: bool = False) -> str:
    total = int(math.floor(max(seconds, 0.0) + 1e-6))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours or h else f"{m:02d}:{s:02d}"
