"""Shared results file for the benchmarks: each bench owns one marked section of a markdown file.

    <!-- bench.stream -->
    ...the section, rewritten by its benchmark...
    <!-- /bench.stream -->

`write_section` replaces only the text between a section's markers (the markers stay), so benchmarks
sharing one file leave each other's numbers alone; a section not yet in the file is appended. The rest
are the pieces every benchmark's report shares: the machine's facts, tables, sizes.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import psutil

__all__ = [
    "markers",
    "write_section",
    "cpu_capabilities",
    "machine_facts",
    "facts_section",
    "markdown_table",
    "plain_table",
    "mib",
]


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
        text = text[: match.start()] + block + text[match.end() :]
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


def cpu_capabilities() -> str:
    """The instruction sets model speed depends on (bf16 runs several times slower than fp32 without native
    support), from /proc/cpuinfo's flags."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    flags = set(line.split(":", 1)[1].split())
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    amx = sorted(f for f in flags if f.startswith("amx"))
    bf16 = sorted(f for f in flags if "bf16" in f)
    return (
        f"AVX2 {'yes' if 'avx2' in flags else 'no'}; "
        f"AVX-512 {('yes (' + ', '.join(avx512) + ')') if avx512 else 'no'}; "
        f"AMX {('yes (' + ', '.join(amx) + ')') if amx else 'no'}; "
        f"bf16 {('yes (' + ', '.join(bf16) + ')') if bf16 else 'no'}"
    )


def machine_facts(**extra: str) -> dict[str, str]:
    """What the numbers were measured on (CPU model, cores, memory, versions), then `extra` facts."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads by default)",
        "CPU flags": cpu_capabilities(),
        **extra,
    }


def facts_section(title: str, facts: dict[str, str]) -> list[str]:
    """A `### title` heading and its facts as a bullet list (lines of a markdown report)."""
    return [f"### {title}", "", *[f"- {key}: {value}" for key, value in facts.items()], ""]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows])


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def busy_seconds(times) -> float:
    """CPU seconds the whole machine was busy, from `psutil.cpu_times()`. Not sum(times): Linux counts guest time
    inside user time. Steal (another VM on our vCPUs) counts: it slows us just like a neighbouring process does."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
