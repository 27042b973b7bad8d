"""Benchmark of the archive indexing path: `python -m bench.archive`.

Runs by hand (never from the test suite) and measures, in one run on this machine, for a high-motion
and a static-camera 720p30 input sampled at 1 fps:

- the naive baseline (`bench.naive`: OpenCV reads every frame, HF processors, fp32 batch 1);
- vigil's decoding alone (`decode_frames` + `mark_still_frames`, the pipeline's settings);
- vigil's models alone (the encoders on the decoded non-still frames, held in memory, in the pipeline's batches);
- vigil end to end (`jobs.archive.index_paths` into a fresh LocalStore), precision "auto" and "int8";

then the peak memory of end-to-end runs on a short and a 4x longer static input, each in a fresh process.
The checkpoints have the real sizes of SigLIP2-base and DINOv2-small but random weights: this measures
speed only, never accuracy. Model loading is excluded from every timing; each model is warmed up once.
Results go to stdout and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import results
from bench.results import facts_section, markdown_table, plain_table, write_section
from bench.results import mib as _mib
from jobs.archive import index_paths
from pipeline.config import VigilConfig, load_config
from pipeline.media.decode import output_size
from pipeline.media.sampling import decode_file, mark_still
from pipeline.media.synthetic import scene_image, write_high_motion_video, write_static_camera_video
from pipeline.models import Encoders, ModelSource, build_random_checkpoints, load_encoders
from pipeline.records import Frame
from pipeline.search.embed import extract_features, model_batches
from pipeline.storage.store import LocalStore

BENCH_DIR = Path(__file__).resolve().parent
RESOLUTION = (1280, 720)
VIDEO_FPS = 30
INPUTS = {"high-motion": write_high_motion_video, "static": write_static_camera_video}
PRECISIONS = ("auto", "int8")
# Targets from the project brief.
SPEEDUP_TARGETS = {"high-motion": 3.0, "static": 10.0}
MAX_OVERHEAD = 1.15  # end to end / (decode alone + models alone)
MAX_MEMORY_GROWTH = 0.10  # peak RSS while indexing, 4x longer video vs the short one
# Other processes using more than this many cores during a measurement make it suspect.
INTERFERENCE_CORES = 0.2


def bench_configs() -> dict[str, VigilConfig]:
    """The packaged defaults with the sampling rate pinned to 1 fps, one per precision measured. Read once
    at the start, so every variant runs with the same settings even if the config files change meanwhile."""
    return {p: load_config(overrides={"decode.fps": 1.0, "precision": p}) for p in PRECISIONS}


# ------------------------------------------------------------------------------------------ inputs


def prepare_models(out: Path) -> ModelSource:
    """Random-weight checkpoints with the real sizes; built once, then reused from `out`."""
    return build_random_checkpoints(out / "models", size="base")


def prepare_video(out: Path, kind: str, seconds: float) -> Path:
    """A cached 720p30 synthetic input; written under a temporary name so an interrupted run
    never leaves a truncated file that later runs would trust."""
    path = out / "inputs" / f"{kind}-{seconds:g}s-{RESOLUTION[1]}p{VIDEO_FPS}.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
        INPUTS[kind](partial, seconds, size=RESOLUTION, fps=VIDEO_FPS)
        os.replace(partial, path)
    return path


# ------------------------------------------------------------------------------------------ timing


@dataclass
class Measured:
    """Wall seconds of one measurement and how many cores other processes kept busy meanwhile."""

    seconds: float
    other_cores: float


def _busy_seconds(times) -> float:
    # Not sum(times): Linux counts guest time inside user time. Steal (another VM on our vCPUs) counts:
    # it slows us just like a neighbouring process does.
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def measure(fn: Callable[[], Any]) -> tuple[Any, Measured]:
    """Run `fn` once; besides the wall time, record the CPU time other processes used meanwhile
    (system busy time minus ours), because a busy neighbour slows 2-thread torch a lot."""
    gc.collect()
    me = psutil.Process()
    system_before, mine_before = psutil.cpu_times(), me.cpu_times()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    system_after, mine_after = psutil.cpu_times(), me.cpu_times()
    ours = (mine_after.user + mine_after.system) - (mine_before.user + mine_before.system)
    others = max(0.0, _busy_seconds(system_after) - _busy_seconds(system_before) - ours)
    return result, Measured(seconds, others / seconds)


# ------------------------------------------------------------------------------------------ variants


def warm_up_encoders(encoders: Encoders, config: VigilConfig) -> None:
    """One untimed call with a frame of the decoded size, so first-call allocations are not billed."""
    encoders.embed_images(scene_image(0, output_size(*RESOLUTION, config.decode.short_side or None))[None])


def decode_alone(video: Path, config: VigilConfig) -> tuple[list[Frame], bool]:
    """All sampled frames (still-marked) with the settings `pipeline.search.embed.sampled_batches` uses,
    plus whether the keyframe-only path was taken."""
    stream = decode_file(video, config.decode, source=str(video))
    frames = list(mark_still(stream, config.decode))
    return frames, bool(stream.keyframes_only)


def models_alone(frames: list[Frame], encoders: Encoders, config: VigilConfig) -> None:
    """Extraction over the same batches the pipeline forms (still frames skip the models), so the
    end-to-end run differs from decode + models only by what the pipeline adds around them."""
    for batch in model_batches(frames, config.batch_size):
        extract_features(batch, encoders)


def end_to_end(video: Path, config: VigilConfig, encoders: Encoders):
    with tempfile.TemporaryDirectory(prefix="vigil-bench-store-") as folder:
        report = index_paths([video], config, LocalStore(folder), encoders=encoders, progress=False)
    if report.failed or not report.indexed:
        raise RuntimeError(f"indexing {video} failed: {report.failed}")
    return report


@dataclass
class InputResult:
    kind: str
    video_seconds: float
    keyframes_only: bool = False
    frames_sampled: int = 0
    frames_still: int = 0
    naive_frames: int = 0
    naive_stages: dict[str, float] = field(default_factory=dict)
    timings: dict[str, Measured] = field(default_factory=dict)  # variant name -> measurement

    def speedup(self, variant: str) -> float | None:
        naive = self.timings.get("naive")
        return naive.seconds / self.timings[variant].seconds if naive else None

    def overhead(self, precision: str) -> float:
        """End to end / (decode alone + models alone), at one precision."""
        parts = self.timings["decode alone"].seconds + self.timings[f"models alone ({precision})"].seconds
        return self.timings[f"end to end ({precision})"].seconds / parts


def bench_input(
    kind: str, video: Path, seconds: float, configs: dict[str, VigilConfig], encoders: dict[str, Encoders], naive_models
) -> InputResult:
    from bench.naive import run_naive

    config = configs["auto"]
    result = InputResult(kind, seconds)

    def timed(variant: str, fn: Callable[[], Any]) -> Any:
        value, result.timings[variant] = measure(fn)
        print(f"  {variant}: {result.timings[variant].seconds:.2f} s", flush=True)  # progress of a long run
        return value

    if naive_models is not None:
        run = timed("naive", lambda: run_naive(video, naive_models, config.decode.fps))
        result.naive_frames, result.naive_stages = run.frames, dict(run.stage_seconds)
    frames, result.keyframes_only = timed("decode alone", lambda: decode_alone(video, config))
    result.frames_sampled = len(frames)
    result.frames_still = sum(frame.still for frame in frames)
    for precision, models in encoders.items():
        timed(f"models alone ({precision})", lambda: models_alone(frames, models, config))
        timed(f"end to end ({precision})", lambda: end_to_end(video, configs[precision], models))
    return result


# ------------------------------------------------------------------------------------------ memory


class PeakRss:
    """Samples this process's RSS every few milliseconds in a thread; `peak` is the largest seen."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, me.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _ru_maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def index_peak_memory(video: str, models: ModelSource, config: VigilConfig) -> dict[str, float]:
    """In a fresh process: load and warm the encoders, then index `video` end to end. Returns the RSS
    before indexing, the peak while indexing (sampled) and the process's lifetime peak (ru_maxrss,
    which includes model loading)."""
    encoders = load_encoders(models, device=config.device, precision=config.precision, batch_size=config.batch_size)
    warm_up_encoders(encoders, config)
    gc.collect()
    before = psutil.Process().memory_info().rss
    with PeakRss() as sampler:
        report = end_to_end(Path(video), config, encoders)
    return {
        "video_seconds": report.video_seconds,
        "clips": report.clips,
        "rss_before": before,
        "index_peak": max(sampler.peak, before),
        "process_peak": _ru_maxrss_bytes(),
    }


def measure_memory(
    out: Path, models: ModelSource, config: VigilConfig, lengths: tuple[float, float]
) -> list[dict[str, float]]:
    """One fresh spawned process per length, so every peak belongs to exactly one run."""
    results = []
    for seconds in lengths:
        video = prepare_video(out, "static", seconds)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(index_peak_memory, str(video), models, config).result())
    return results


# ------------------------------------------------------------------------------------------ report


def machine_facts() -> dict[str, str]:
    import av
    import faiss
    import transformers

    return results.machine_facts(
        **{
            "transformers": transformers.__version__,
            "av (PyAV)": av.__version__,
            "faiss": faiss.__version__,
            "opencv": __import__("cv2").__version__,
            "torch threads": "the default, unchanged, for every variant",
        }
    )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def table_rows(result: InputResult) -> list[list[str]]:
    rows = []
    for variant, m in result.timings.items():
        frames = {
            "naive": f"{result.naive_frames} sampled",
            "decode alone": f"{result.frames_sampled} sampled",
        }.get(variant, f"{result.frames_sampled - result.frames_still} embedded")
        speedup = result.speedup(variant) if variant.startswith("end to end") else None
        rows.append(
            [
                result.kind,
                variant,
                f"{m.seconds:.2f}",
                f"{result.video_seconds / m.seconds:.1f}x",
                frames,
                _fmt(speedup, ".1f", "x"),
                f"{m.other_cores:.2f}",
            ]
        )
    return rows


TABLE_HEADER = ["input", "variant", "wall s", "x realtime", "frames", "speedup vs naive", "other cores busy"]


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def target_lines(results: list[InputResult], memory: list[dict] | None) -> list[str]:
    lines = []
    for r in results:
        for precision in PRECISIONS:
            speedup = r.speedup(f"end to end ({precision})")
            if speedup is not None:
                goal = SPEEDUP_TARGETS[r.kind]
                lines.append(
                    f"- {r.kind}, {precision}: speedup over naive >= {goal:g}x: {speedup:.1f}x, {_met(speedup >= goal)}"
                )
            overhead = r.overhead(precision)
            lines.append(
                f"- {r.kind}, {precision}: end to end / (decode alone + models alone) <= {MAX_OVERHEAD}: "
                f"{overhead:.3f}, {_met(overhead <= MAX_OVERHEAD)}"
            )
    if memory:
        growth = memory_growth(memory)
        lines.append(
            f"- peak RSS while indexing grows < {MAX_MEMORY_GROWTH:.0%} from {memory[0]['video_seconds']:g} s "
            f"to {memory[1]['video_seconds']:g} s: {growth:+.1%}, {_met(growth < MAX_MEMORY_GROWTH)}"
        )
    return lines


def memory_growth(memory: list[dict]) -> float:
    return memory[1]["index_peak"] / memory[0]["index_peak"] - 1.0


def memory_table(memory: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "static input",
        "clips",
        "RSS before indexing",
        "peak RSS while indexing",
        "growth while indexing",
        "process peak (ru_maxrss, incl. model loading)",
    ]
    rows = [
        [
            f"{m['video_seconds']:g} s",
            str(m["clips"]),
            _mib(m["rss_before"]),
            _mib(m["index_peak"]),
            _mib(m["index_peak"] - m["rss_before"]),
            _mib(m["process_peak"]),
        ]
        for m in memory
    ]
    return header, rows


def interpretation(results: list[InputResult], precision_note: str) -> list[str]:
    """Where the time goes, in sentences built from the measured numbers."""
    lines = []
    for r in results:
        t = {name: m.seconds for name, m in r.timings.items()}
        if r.naive_stages:
            total = sum(r.naive_stages.values())
            shares = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in r.naive_stages.items())
            lines.append(
                f"- {r.kind}, naive ({t['naive']:.1f} s): {shares} (decode = OpenCV reading all "
                f"{round(r.video_seconds * VIDEO_FPS)} frames at 720p; preprocess = HF PIL processors)."
            )
        path = "keyframes only" if r.keyframes_only else "all frames"
        embedded = r.frames_sampled - r.frames_still
        for precision in PRECISIONS:
            e2e = t[f"end to end ({precision})"]
            decode, models = t["decode alone"], t[f"models alone ({precision})"]
            # Absolute seconds, not shares: under noise the parts can add up to more than the whole.
            lines.append(
                f"- {r.kind}, vigil {precision}{precision_note if precision == 'auto' else ''}: end to end "
                f"{e2e:.1f} s = models {models:.1f} s ({embedded} of {r.frames_sampled} frames embedded, "
                f"{models / max(embedded, 1):.2f} s each) + decode {decode:.2f} s ({path}, {r.frames_still} still) "
                f"+ everything else {e2e - decode - models:+.2f} s (probe, windows, JPEG/npz writes, index)."
            )
    return lines


def interference_note(results: list[InputResult]) -> str:
    worst = max(m.other_cores for r in results for m in r.timings.values())
    if worst > INTERFERENCE_CORES:
        return (
            f"Other processes were busy during this run (up to {worst:.2f} of {os.cpu_count()} cores, see the "
            "last column): with 2-thread torch on 2 cores any neighbour slows the model-bound variants, so "
            "those rows are pessimistic."
        )
    return f"The machine was quiet: other processes used at most {worst:.2f} cores during any measurement."


@dataclass
class Run:
    date: str
    machine: dict[str, str]
    settings: dict[str, str]
    results: list[InputResult]
    memory: list[dict] | None
    precision_note: str


def render_markdown(run: Run) -> str:
    rows = [row for r in run.results for row in table_rows(r)]
    parts = [
        "## Archive indexing (`python -m bench.archive`)",
        "",
        f"`python -m bench.archive` on {run.date}. **The checkpoints are untrained** (random weights with the "
        "real sizes of SigLIP2-base-patch16-224 and DINOv2-small): this measures speed only, never accuracy. "
        "Model loading is excluded from every timing, each model was warmed up once before timing, and torch "
        "kept its default thread count for every variant. All ratios come from this one run.",
        "",
        *facts_section("Machine", run.machine),
        *facts_section("Settings", run.settings),
        "### Results",
        "",
        "Variants: **naive** = `bench/naive.py` (cv2 reads every frame, keeps 1/s, HF processors per frame, "
        "fp32, batch 1); **decode alone** = `decode_frames` + `mark_still_frames`; **models alone** = the "
        "encoders on the decoded non-still frames held in memory; **end to end** = `jobs.archive.index_paths` "
        "into a fresh LocalStore. *other cores busy* = CPU used by other processes during the measurement.",
        "",
        markdown_table(TABLE_HEADER, rows),
        "",
    ]
    if run.memory:
        header, memory_rows = memory_table(run.memory)
        parts += [
            "Peak memory, vigil end to end (precision auto) in a fresh process per length:",
            "",
            markdown_table(header, memory_rows),
            "",
        ]
    parts += [
        "### Targets",
        "",
        *target_lines(run.results, run.memory),
        "",
        "### Where the time goes",
        "",
        *interpretation(run.results, run.precision_note),
        "",
        interference_note(run.results),
        "",
    ]
    return "\n".join(parts)


def print_summary(run: Run) -> None:
    print("\nUNTRAINED random-weight checkpoints (real sizes): speed only, never accuracy.")
    print("Model loading excluded from all timings; torch threads at the default for every variant.\n")
    print(plain_table(TABLE_HEADER, [row for r in run.results for row in table_rows(r)]))
    if run.memory:
        print()
        print(plain_table(*memory_table(run.memory)))
    print()
    print("\n".join(line.replace("**", "") for line in target_lines(run.results, run.memory)))
    print(interference_note(run.results))


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each input video (default 60)")
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "out",
        help="cache folder for checkpoints and inputs (default bench/out)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=BENCH_DIR / "RESULTS.md",
        help="markdown report whose bench.archive section is rewritten (default bench/RESULTS.md)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="skip the (slow) naive baseline")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory runs")
    return parser.parse_args(argv)


def load_all_encoders(models: ModelSource, configs: dict[str, VigilConfig]) -> dict[str, Encoders]:
    encoders = {}
    for precision, config in configs.items():
        encoders[precision] = load_encoders(
            models, device=config.device, precision=precision, batch_size=config.batch_size
        )
        warm_up_encoders(encoders[precision], config)
    return encoders


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out.expanduser().resolve()
    configs = bench_configs()
    print("Preparing UNTRAINED random-weight checkpoints and synthetic inputs (cached in", out, ")", flush=True)
    models = prepare_models(out)
    videos = {kind: prepare_video(out, kind, args.seconds) for kind in INPUTS}
    memory_lengths = (args.seconds / 2, args.seconds * 2)
    if not args.skip_memory:
        for seconds in memory_lengths:
            prepare_video(out, "static", seconds)

    encoders = load_all_encoders(models, configs)
    auto = encoders["auto"].siglip
    precision_note = f" (resolved to {auto.precision})"
    naive_models = None
    if not args.skip_naive:
        from bench.naive import load_naive_models, warm_up

        naive_models = load_naive_models(models)
        warm_up(naive_models, RESOLUTION)

    results = []
    for kind, video in videos.items():
        print(f"Measuring {kind} ({args.seconds:g} s)...", flush=True)
        results.append(bench_input(kind, video, args.seconds, configs, encoders, naive_models))

    memory = None
    if not args.skip_memory:
        print(
            f"Measuring peak memory on static inputs of {memory_lengths[0]:g} s and {memory_lengths[1]:g} s...",
            flush=True,
        )
        memory = measure_memory(out, models, configs["auto"], memory_lengths)

    config = configs["auto"]
    settings = {
        "sampling": f"{config.decode.fps:g} fps",
        "clip window": f"{config.embed.window:g} s",
        "short side": f"{config.decode.short_side} px (decoder output)",
        "batch size": str(config.batch_size),
        "decode": f"{config.decode.backend}, keyframes_only={config.decode.keyframes_only}, "
        f"{config.decode.threads} threads, still_threshold={config.decode.still_threshold}",
        "precision": f"auto -> {auto.precision} ({auto.precision_reason}); "
        "int8 = dynamic quantisation of Linear layers",
        "inputs": f"{RESOLUTION[0]}x{RESOLUTION[1]} H.264, {VIDEO_FPS} fps, keyframe every second, "
        f"{args.seconds:g} s each (pipeline.media.synthetic high-motion and static-camera generators)",
        "memory runs": "skipped"
        if args.skip_memory
        else f"static input, {memory_lengths[0]:g} s and {memory_lengths[1]:g} s, precision auto",
        "naive baseline": "skipped" if args.skip_naive else "cv2 defaults, fp32, batch 1, HF PIL processors",
    }
    run = Run(
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine_facts(),
        settings=settings,
        results=results,
        memory=memory,
        precision_note=precision_note,
    )
    print_summary(run)
    write_section(args.results, "bench.archive", render_markdown(run))
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
