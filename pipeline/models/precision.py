"""Device and precision choice: which device, and on CPU which precision is fastest while faithful to fp32.

"auto" precision on CPU is chosen by measurement, once per model and CPU: fp32, bf16 and int8 each embed a
calibration batch of real photographs (and, for a text tower, multilingual texts); the fastest whose
embeddings stay within FAITHFUL_MIN_COSINE of fp32's is kept. The decision and its figures are cached in the
vigil cache (`precision/<hash>.json`), keyed by the checkpoint, the CPU, torch's version and its thread
count, so later runs on that machine only read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.models.random_weights import default_cache_dir

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8", "int8-compiled")
CPU_PRECISIONS = ("fp32", "bf16", "int8")  # "auto" on CPU measures these; fp32 first: it is the reference
# int8 by torchao, the image tower compiled (pipeline.models.compiled). "auto" also measures it for a model whose
# "int8" takes at least COMPILE_WORTH_MS per image: compiling costs about 5 s per process (35 s the first time
# on a machine), which such a model repays within a few hundred frames; a tiny one never would.
COMPILED_INT8 = "int8-compiled"
COMPILE_WORTH_MS = 20.0
FAITHFUL_MIN_COSINE = 0.99  # a lower precision is used only if it keeps every embedding this close to fp32

# scikit-image's public-domain sample photographs (a person, a cup, a cat, a rocket and launch tower), shipped
# inside its wheel: real content, so the fidelity check sees the statistics of real frames.
CALIBRATION_PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket")
# Images per model call tried at the chosen precision: where memory bandwidth is scarce a smaller call keeps
# its activations in cache and runs faster per image (seen here: 8 beat 16 by 11-22% in int8).
CALIBRATION_BATCHES = (4, 8, 16)
# Images per call when the precisions are compared: a compiled tower runs one call size, so all are timed at one,
# the size calls most often end up (int8's fastest, here), where the compiled one is compiled once for good.
CALIBRATION_CALL = 8
CALIBRATION_TEXTS = ("a photo of a cat", "一辆红色的汽车", "una persona caminando de noche", "an empty street")

# The instruction sets CPU bf16 and int8 kernels dispatch on (x86 /proc/cpuinfo "flags", Arm "Features").
_CPU_FLAGS = frozenset(
    ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16")
    + ("avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm", "sve", "sve2")
)
_CHECKPOINT_FILES = ("*.safetensors", "*.bin", "config.json")


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two (B, D) arrays."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected two (B, D) arrays of the same shape, got {a.shape} and {b.shape}")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class PrecisionTrial:
    """One precision measured on the calibration batch."""

    ms_per_image: float  # the best of a few timed calls
    min_cosine: float  # to fp32's embeddings, the minimum over the batch (and texts)


@dataclass(frozen=True)
class CpuPrecisionDecision:
    """What "auto" chose on this CPU for one model, with every precision's figures and when they were measured."""

    choice: str
    trials: dict[str, PrecisionTrial]
    # ms per image at `batch_precision(choice)` by images per model call (CALIBRATION_BATCHES)
    batch_ms: dict[int, float] = field(default_factory=dict)
    calibrated_at: str = field(default_factory=_now_utc)  # ISO 8601

    def fastest_batch(self, most: int) -> int:
        """The images per model call that ran fastest, among those up to `most` (`most` if none was tried); a
        compiled tower runs the size it was timed at (CALIBRATION_CALL), each other size a compile of its own."""
        if self.choice == COMPILED_INT8:
            return min(CALIBRATION_CALL, most)
        tried = {batch: ms for batch, ms in self.batch_ms.items() if batch <= most}
        return min(tried, key=tried.__getitem__) if tried else most

    def figures(self) -> str:
        """E.g. "fp32 41.0 ms/image, bf16 290.1 ms/image, int8 25.3 ms/image; bf16 min cosine 0.9990, ..."."""
        speeds = ", ".join(f"{p} {t.ms_per_image:.1f} ms/image" for p, t in self.trials.items())
        cosines = ", ".join(f"{p} min cosine {t.min_cosine:.4f}" for p, t in self.trials.items() if p != "fp32")
        batches = ", ".join(f"{b} per call {ms:.1f}" for b, ms in sorted(self.batch_ms.items()))
        return f"{speeds}; {cosines}; {batch_precision(self.choice)} ms/image at {batches}"


def batch_precision(choice: str) -> str:
    """The precision whose images per call are timed for `choice`: a compiled tower would compile once per call
    size tried (35 s each, the first time), so its eager counterpart's are timed (for the record)."""
    return "int8" if choice == COMPILED_INT8 else choice


def choose_cpu_precision(trials: dict[str, PrecisionTrial], threshold: float = FAITHFUL_MIN_COSINE) -> str:
    """The "auto" rule on CPU: the fastest precision whose min cosine to fp32 is at least `threshold`; fp32 is
    faithful by definition (and wins ties: it is the reference)."""
    if "fp32" not in trials:
        raise ValueError(f"the rule needs fp32's trial as the reference, got {sorted(trials)}")
    faithful = ["fp32"] + [p for p, t in trials.items() if p != "fp32" and t.min_cosine >= threshold]
    return min(faithful, key=lambda p: trials[p].ms_per_image)


def measure_ms_per_image(
    run: Callable[[], np.ndarray], images: int, repeats: int = 3, budget_s: float = 1.0
) -> tuple[np.ndarray, float]:
    """`run`'s output and its time in ms per image: a warm-up call (its output is returned, for the fidelity
    check), then the best of up to `repeats` timed calls, fewer once `budget_s` is spent. The minimum is the
    call least disturbed by other work on the machine."""
    output = run()
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget_s:
            break
    return output, best * 1000.0 / images


def calibration_photographs() -> list[np.ndarray]:
    """The calibration batch: scikit-image's sample photographs, uint8 RGB (H, W, 3) of different sizes."""
    import skimage.data

    return [getattr(skimage.data, name)() for name in CALIBRATION_PHOTOGRAPHS]


def cpu_identity() -> dict:
    """The CPU as far as the fastest precision depends on it: its model name and the instruction sets of the
    bf16 and int8 kernels, from /proc/cpuinfo; where there is none, what `platform` knows."""
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            name, _, value = (part.strip() for part in line.partition(":"))
            if name.lower() == "model name":
                model = value
            elif name.lower() in ("flags", "features"):
                flags.update(value.split())
            if name == "" and flags:  # the first processor's block ends: the others are alike
                break
    model = model or platform.processor() or platform.machine()  # Arm's cpuinfo may have no model name
    return {"machine": platform.machine(), "model": model, "flags": sorted(flags & _CPU_FLAGS)}


def checkpoint_fingerprint(model_id: str) -> dict:
    """What changes when a checkpoint's weights do, without reading them (gigabytes): the name, size and mtime of
    its weight and config files, in its folder or in its hub cache snapshot (whose path names the commit)."""
    folder = Path(model_id)
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            config = try_to_load_from_cache(model_id, "config.json")
        except Exception:  # noqa: BLE001 - no hub cache: the id alone keys the decision
            config = None
        if not isinstance(config, str):
            return {"folder": None, "files": []}
        folder = Path(config).parent
    files = sorted({p for pattern in _CHECKPOINT_FILES for p in folder.glob(pattern)})
    return {"folder": str(folder), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def decision_key(model_id: str) -> dict:
    """Everything the fastest faithful precision depends on: the checkpoint, the CPU, torch's kernels (its
    version) and the threads they run on."""
    import torch

    key = {
        "calibration": 3,  # 3: in calls of CALIBRATION_CALL, int8-compiled too; earlier decisions are measured again
        "model": model_id,
        "checkpoint": checkpoint_fingerprint(model_id),
        "cpu": cpu_identity(),
        "torch": torch.__version__,
        "torchao": _version_of("torchao"),
        "threads": torch.get_num_threads(),
    }
    return json.loads(json.dumps(key))  # as it reads back from the cache file, to compare the two


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def decision_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return default_cache_dir() / "precision" / f"{digest}.json"


def read_decision(path: Path, key: dict) -> CpuPrecisionDecision | None:
    """The decision cached at `path` for `key`; None when there is none or it cannot be used (unreadable,
    corrupt, made for another key): the caller calibrates again and overwrites it."""
    try:
        record = json.loads(path.read_text())
        if record["key"] != key:
            return None
        trials = {
            p: PrecisionTrial(float(t["ms_per_image"]), float(t["min_cosine"])) for p, t in record["measured"].items()
        }
        batch_ms = {int(b): float(ms) for b, ms in record["batch_ms"].items()}
        decision = CpuPrecisionDecision(str(record["choice"]), trials, batch_ms, str(record["calibrated_at"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    complete = set(CPU_PRECISIONS) <= set(trials) <= {*CPU_PRECISIONS, COMPILED_INT8}
    complete = complete and set(batch_ms) == set(CALIBRATION_BATCHES)
    return decision if complete and decision.choice in trials else None


def write_decision(path: Path, key: dict, decision: CpuPrecisionDecision) -> None:
    """Write the decision atomically (a temporary sibling, then os.replace): a process calibrating the same model
    at the same time replaces it whole, and a reader sees one complete file or none."""
    record = {
        "choice": decision.choice,
        "measured": {
            p: {"ms_per_image": t.ms_per_image, "min_cosine": t.min_cosine} for p, t in decision.trials.items()
        },
        "batch_ms": {str(b): ms for b, ms in decision.batch_ms.items()},
        "threshold": FAITHFUL_MIN_COSINE,
        "calibrated_at": decision.calibrated_at,
        "key": key,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def announce(line: str) -> None:
    """One line on stderr: a log record where the process logs the project's INFO records (the monitor's actors:
    JSON lines), else printed (the CLI sets up no logging, which would drop an INFO record)."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(line)
    else:
        print(line, file=sys.stderr, flush=True)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)  # raises on nonsense
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return str(dev)


__all__ = [
    "PRECISIONS",
    "CPU_PRECISIONS",
    "COMPILED_INT8",
    "COMPILE_WORTH_MS",
    "FAITHFUL_MIN_COSINE",
    "CALIBRATION_PHOTOGRAPHS",
    "CALIBRATION_BATCHES",
    "CALIBRATION_CALL",
    "CALIBRATION_TEXTS",
    "PrecisionTrial",
    "CpuPrecisionDecision",
    "min_cosine",
    "choose_cpu_precision",
    "batch_precision",
    "measure_ms_per_image",
    "calibration_photographs",
    "cpu_identity",
    "checkpoint_fingerprint",
    "decision_key",
    "decision_path",
    "read_decision",
    "write_decision",
    "announce",
    "resolve_device",
]
