"""Shared results file for the benchmarks: each bench owns one marked section of a markdown file.

    <!-- bench.stream -->
    ...the section, rewritten by its benchmark...
    <!-- /bench.stream -->

`write_section` replaces only the text between a section's markers (the markers stay), so benchmarks
sharing one file leave each other's numbers alone; a section not yet in the file is appended.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["markers", "write_section"]


def markers(name: str) -> tuple[str, str]:
    """The opening and closing marker lines of section `name`."""
    if not name or "--" in name or ">" in name or "\n" in name:
        raise ValueError(f"section name {name!r} cannot go inside an HTML comment")
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def write_section(path: str | Path, name: str, markdown: str) -> Path:
    """Put `markdown` between the markers of section `name` in `path`; the rest of the file is kept byte
    for byte. The file is created if missing; the write is atomic (a temporary file, then a rename)."""
    path = Path(path)
    start, end = markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    found = list(pattern.finditer(text))
    if len(found) > 1:
        raise ValueError(f"{path}: section {name!r} appears {len(found)} times; fix the file by hand")
    if found:
        match = found[0]
        text = text[: match.start()] + block + text[match.end():]
    elif start in text or end in text:
        raise ValueError(f"{path}: section {name!r} has only one of its markers; fix the file by hand")
    else:
        # one blank line between the existing text and the new section
        separator = "" if not text or text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
        text = f"{text}{separator}{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)
    return path
