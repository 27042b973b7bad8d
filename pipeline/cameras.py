"""The one rule for camera ids, wherever one arrives: a Kafka message key, `--camera` of `vigil monitor` and
`vigil ingest`, a CLI filter, `monitor.sources[].camera` in the config.

A camera id is 1 to `MAX_CAMERA_BYTES` bytes of UTF-8 text (Kafka keys of `vigil.frames` carry it) without
control characters or line breaks: it is printed on one line in errors, logs and summaries, and becomes part
of store keys only through `pipeline.storage.layout.camera_source_id` (a slug and a hash).
"""

from __future__ import annotations

import unicodedata

MAX_CAMERA_BYTES = 256
# Unicode categories a camera id may not hold: control characters (C0, DEL, C1), lone surrogates (an undecodable
# byte of a command-line argument), line and paragraph separators.
_FORBIDDEN = {"Cc": "a control character", "Cs": "an undecodable byte", "Zl": "a line break", "Zp": "a line break"}
_SHOWN = 40  # characters of a bad id quoted in the error


def _shown(text: str) -> str:
    """`text` quoted for a one-line message: escaped, and cut when long."""
    return repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")


def check_camera_id(text: object) -> str:
    """`text` when it is a valid camera id; else ValueError with a one-line message naming the problem."""
    if not isinstance(text, str):
        raise ValueError(f"a camera id must be text, got {type(text).__name__}")
    if not text:
        raise ValueError("a camera id must not be empty")
    for position, char in enumerate(text):
        kind = _FORBIDDEN.get(unicodedata.category(char))
        if kind:
            raise ValueError(f"camera id {_shown(text)} has {kind} ({char!r}) at position {position}")
    size = len(text.encode("utf-8"))
    if size > MAX_CAMERA_BYTES:
        raise ValueError(
            f"camera id {_shown(text)} is {size} bytes long; at most {MAX_CAMERA_BYTES} bytes (UTF-8) are allowed"
        )
    return text
