"""Clips know when they were recorded (a file's creation time or `--recorded-at`, a camera's clock, the Kafka
`wallclock` header or CreateTime), and `vigil search --from/--to` keeps the clips of a time range."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import namedtuple
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.archive import index_paths
from jobs.cli import main
from pipeline.config import load_config
from pipeline.live.analyzer import StreamAnalyzer
from pipeline.live.match import Matcher
from pipeline.media.decode import probe
from pipeline.media.kafka_clients import CREATE_TIME, decode_record
from pipeline.media.kafka_messages import MalformedMessage, decode_message, frame_message, segment_message
from pipeline.media.streams import ReconnectPolicy, read_live
from pipeline.records import ClipEmbedding, Frame, FrameBatch, FrameFeatures, ModelIds
from pipeline.search.embed import ClipWindower
from pipeline.search.imports import ClipImportError, read_clip_table
from pipeline.search.index import ClipIndex
from pipeline.storage.clips import read_clip, write_clip
from pipeline.storage.codecs import encode_npz
from pipeline.storage.layout import file_source_id, source_key
from pipeline.storage.store import LocalStore

T0 = 1796025600.0  # 2026-11-30T08:00:00Z
MODELS = ModelIds("s", "d", untrained=True)
VIGIL = str(Path(sys.executable).parent / "vigil")
Record = namedtuple("Record", "topic partition offset timestamp timestamp_type key value headers")
LOG_APPEND_TIME = 1


def with_creation_time(source: Path, target: Path, creation_time: str) -> Path:
    """A copy of `source` (remuxed, not re-encoded) whose container says when it was recorded."""
    with av.open(str(source)) as reader, av.open(str(target), mode="w", format="mp4") as writer:
        writer.metadata["creation_time"] = creation_time
        stream = writer.add_stream_from_template(reader.streams.video[0])
        for packet in reader.demux(reader.streams.video[0]):
            if packet.dts is None:  # the demuxer's closing empty packet
                continue
            packet.stream = stream
            writer.mux(packet)
    return target


@pytest.fixture(scope="module")
def config(vigil_cache):
    return load_config(None, {"models": "tiny", "precision": "fp32", "device": "cpu", "batch_size": 8})


@pytest.fixture(scope="module")
def dated_video(tmp_path_factory, scene_video):
    path, _ = scene_video
    target = tmp_path_factory.mktemp("dated").resolve() / "dated.mp4"
    return with_creation_time(path, target, "2026-11-30T08:00:00Z")


def stored_clips(store, path) -> list[ClipEmbedding]:
    return [read_clip(store, key) for key in store.list(f"clips/{file_source_id(path)}/")]


def recorded_rows(store, path) -> list[float | None]:
    return [row.recorded for row in ClipIndex.load(store).rows if row.source_id == file_source_id(path)]


# --------------------------------------------------------------------------------------------- files


def test_the_container_creation_time_is_the_recording_start(scene_video, dated_video):
    path, _ = scene_video
    assert probe(dated_video).creation_time == T0
    assert probe(path).creation_time is None  # the generated video records none


def test_file_clips_are_dated_from_the_creation_time(tmp_path, dated_video, config, tiny_encoders):
    store = LocalStore(tmp_path)
    index_paths([dated_video], config, store, progress=False, encoders=tiny_encoders)
    clips = stored_clips(store, dated_video)
    assert [c.start for c in clips] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert [c.recorded_at for c in clips] == [T0 + c.start for c in clips]
    assert recorded_rows(store, dated_video) == [T0 + c.start for c in clips]
    assert store.get_json(source_key(file_source_id(dated_video)))["recording_start"] == T0


def test_recorded_at_overrides_and_a_changed_one_reindexes(tmp_path, dated_video, config, tiny_encoders):
    store = LocalStore(tmp_path)

    def index(start):
        return index_paths([dated_video], config, store, progress=False, encoders=tiny_encoders, recording_start=start)

    first = index(T0 + 3600)
    assert first.indexed == [str(dated_video)]
    assert [c.recorded_at for c in stored_clips(store, dated_video)] == [T0 + 3600 + 2 * k for k in range(10)]
    same = index(T0 + 3600)
    assert same.unchanged == [str(dated_video)] and not same.indexed
    changed = index(T0 + 7200)
    assert changed.indexed == [str(dated_video)]
    assert [c.recorded_at for c in stored_clips(store, dated_video)] == [T0 + 7200 + 2 * k for k in range(10)]
    assert recorded_rows(store, dated_video) == [T0 + 7200 + 2 * k for k in range(10)]
    # a later run without the override keeps the time given, not the container's
    assert index(None).unchanged == [str(dated_video)]
    assert recorded_rows(store, dated_video) == [T0 + 7200 + 2 * k for k in range(10)]


def test_recorded_at_on_the_command_line(tmp_path, dated_video, scene_video, capsys):
    path, _ = scene_video
    common = ["--store", str(tmp_path / "store"), "--models", "tiny", "--no-progress"]
    for paths, value, fragment in (
        ([tmp_path], "2026-11-30T09:00:00Z", "give exactly one file, not a folder or several"),
        ([dated_video, path], "2026-11-30T09:00:00Z", "give exactly one file, not a folder or several"),
        ([dated_video], "60", "is not an ISO 8601 time"),
        ([dated_video], "tomorrow", "is not an ISO 8601 time"),
    ):
        assert main(["index", *map(str, paths), "--recorded-at", value, *common]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vigil index: error: --recorded-at") and fragment in err and err.count("\n") == 1
    assert main(["index", str(dated_video), "--recorded-at", "2026-11-30T10:00:00+01:00", *common]) == 0
    assert "indexed 1 file(s)" in capsys.readouterr().out
    assert main(["index", str(dated_video), "--recorded-at", "2026-11-30T09:00:00Z", *common]) == 0
    out = capsys.readouterr().out  # the same instant in another zone
    assert "indexed 0 file(s)" in out and "1 unchanged" in out
    assert main(["index", str(dated_video), *common]) == 0  # a later run without it keeps the time given
    assert "1 unchanged" in capsys.readouterr().out
    assert stored_clips(LocalStore(tmp_path / "store"), dated_video)[0].recorded_at == T0 + 3600


# --------------------------------------------------------------------------------------------- search


@pytest.fixture(scope="module")
def two_files(tmp_path_factory, scene_video, dated_video, config, tiny_encoders):
    """A store holding the dated video and an undated copy of the same footage."""
    path, _ = scene_video
    folder = tmp_path_factory.mktemp("search").resolve()
    undated = shutil.copy(path, folder / "undated.mp4")
    store = folder / "store"
    index_paths([dated_video, undated], config, LocalStore(store), progress=False, encoders=tiny_encoders)
    return store, Path(undated)


def search(store, capsys, *args) -> list[dict]:
    assert main(["search", "a person at the gate", "--store", str(store), "--top-k", "20", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def covered(events: list[dict]) -> tuple[float, float, float]:
    """Where the events start and end, and how many seconds they cover."""
    return min(e["start"] for e in events), max(e["end"] for e in events), sum(e["end"] - e["start"] for e in events)


def test_search_by_wall_clock_keeps_the_dated_clips_that_overlap(two_files, dated_video, capsys):
    store, _ = two_files
    events = search(store, capsys, "--from", "2026-11-30T08:00:05Z", "--to", "2026-11-30T09:00:09+01:00")
    assert {e["source"] for e in events} == {str(dated_video)}  # the undated copy never matches a wall-clock range
    assert covered(events) == (4.0, 10.0, 6.0)  # the windows [4, 6), [6, 8) and [8, 10)
    for event in events:
        assert event["recorded"] == f"2026-11-30T08:00:{event['start']:02.0f}.000Z"
    assert search(store, capsys, "--from", "2026-11-30T08:00:19Z") and not search(
        store, capsys, "--from", "2026-11-30T08:00:20Z"
    )


def test_search_by_media_time_keeps_every_sources_clips_that_overlap(two_files, dated_video, capsys):
    store, undated = two_files
    events = search(store, capsys, "--from", "11", "--to", "13")
    assert {e["source"] for e in events} == {str(dated_video), str(undated)}
    for source in (dated_video, undated):
        assert covered([e for e in events if e["source"] == str(source)]) == (10.0, 14.0, 4.0)
    assert {e["recorded"] for e in events if e["source"] == str(undated)} == {None}


def test_search_prints_the_recording_time(two_files, capsys):
    store, _ = two_files
    assert main(["search", "a dock", "--store", str(store), "--from", "2026-11-30T08:00:16Z"]) == 0
    out = capsys.readouterr().out
    assert "     recorded: 2026-11-30T08:00:1" in out and "no matches" not in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--from", "2026-11-30T08:00:00Z", "--to", "60"], "must both be ISO 8601 times or both be seconds"),
        (["--from", "yesterday"], "is neither ISO 8601"),
        (["--from", "-3"], "seconds must be a finite number >= 0"),
        (["--from", "20", "--to", "10"], "before it starts"),
    ],
)
def test_a_time_range_that_makes_no_sense_is_a_one_line_error(two_files, capsys, args, fragment):
    store, _ = two_files
    assert main(["search", "gate", "--store", str(store), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("vigil search: error: ") and fragment in captured.err
    assert captured.err.count("\n") == 1 and not captured.out


def test_the_console_script_reports_a_bad_range_without_a_traceback(two_files):
    store, _ = two_files
    result = subprocess.run(
        [VIGIL, "search", "gate", "--store", str(store), "--from", "noon"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("vigil search: error: --from 'noon'")


# --------------------------------------------------------------------------------------------- live clips


def frame(pts: float, wallclock: float | None = None, camera: str = "gate", side: int = 4) -> Frame:
    image = np.full((side, side, 3), int(pts * 40) % 256, np.uint8)
    return Frame(camera, pts, int(pts * 2), image, camera=camera, wallclock=wallclock)


def features(f: Frame) -> FrameFeatures:
    unit = np.ones(4, np.float32) / 2
    return FrameFeatures(f.source, f.pts, unit, unit)


def test_a_live_source_stamps_each_frame_with_the_wall_clock(tmp_path):
    # An MPEG-TS file over HTTP is a live source read with no seeking: the live reader's path, no camera needed.
    segment = segment_message([frame(float(k), side=32) for k in range(5)], "gate", period=1.0)
    (tmp_path / "live.ts").write_bytes(segment.value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = time.time()
        url = f"http://127.0.0.1:{server.server_address[1]}/live.ts"
        stream = read_live(url, camera="gate", fps=1, policy=ReconnectPolicy(max_reconnects=0))
        frames = list(islice(stream, 3))
        stream.close()
    finally:
        server.shutdown()
        server.server_close()
    stamps = [f.wallclock for f in frames]
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time()


def test_live_clips_are_dated_by_the_first_frame_s_clock():
    windower = ClipWindower(window=2.0, source_id="gate", models=MODELS)
    frames = [frame(0.5, T0 + 0.5), frame(1.5, T0 + 1.7), frame(2.5, T0 + 2.6), frame(5.0, None), frame(5.5, T0 + 6)]
    clips = [clip for f in frames for clip, _ in windower.push(f, features(f))] + [c for c, _ in windower.flush()]
    # each window: its first frame's clock less that frame's distance from the window start; a frame
    # without a clock leaves the dating to the next one that has
    assert [c.start for c in clips] == [0.0, 2.0, 4.0]
    assert [c.recorded_at for c in clips] == pytest.approx([T0, T0 + 2.1, T0 + 4.5], abs=1e-6)


def test_windows_without_frame_clocks_take_the_recording_start():
    dated = ClipWindower(window=2.0, source_id="v", models=MODELS, recording_start=T0)
    undated = ClipWindower(window=2.0, source_id="v", models=MODELS)
    for windower in (dated, undated):
        for f in (frame(0.5), frame(2.5)):
            windower.push(f, features(f))
    assert dated.flush()[0][0].recorded_at == T0 + 2.0 and undated.flush()[0][0].recorded_at is None


def test_a_resumed_analyzer_dates_its_open_window_as_before():
    frames = [frame(0.0, T0), frame(0.5, T0 + 0.5), frame(1.0, T0 + 1.3), frame(2.0, T0 + 2.3)]
    batch = [FrameBatch([f], np.ones((1, 4), np.float32) / 2, np.ones((1, 4), np.float32) / 2) for f in frames]
    whole = StreamAnalyzer(Matcher(MODELS), window=2.0, models=MODELS)
    expected = [clip.recorded_at for b in batch for clip, _ in whole.process(b).clips]
    first = StreamAnalyzer(Matcher(MODELS), window=2.0, models=MODELS)
    for b in batch[:2]:
        first.process(b)
    resumed = StreamAnalyzer(Matcher(MODELS), window=2.0, models=MODELS)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got = [clip.recorded_at for b in batch[2:] for clip, _ in resumed.process(b).clips]
    assert got == expected == [T0]


# --------------------------------------------------------------------------------------------- Kafka


def test_the_wallclock_header_round_trips_for_frames_and_segments():
    jpeg = frame_message(frame(1.5, T0 + 0.25, side=32), "gate")
    assert jpeg.header("wallclock") == "1796025600.25"
    assert decode_message(jpeg.key, jpeg.value, jpeg.headers)[0].wallclock == T0 + 0.25
    segment = segment_message([frame(1.0 + 0.2 * i, T0 + 9 if i == 0 else None, side=32) for i in range(4)], "gate")
    decoded = decode_message(segment.key, segment.value, segment.headers)
    assert [f.wallclock for f in decoded] == pytest.approx([T0 + 9 + 0.2 * i for i in range(4)], abs=1e-5)
    undated = frame_message(frame(1.5, side=32), "gate")
    assert undated.header("wallclock") is None
    assert decode_message(undated.key, undated.value, undated.headers)[0].wallclock is None


@pytest.mark.parametrize("value", ["noon", "nan", "-5", "1e300", "", "1796025600,5"])
def test_a_malformed_wallclock_header_is_a_malformed_message(value):
    message = frame_message(frame(1.5, side=32), "gate")
    headers = message.headers + [("wallclock", value.encode())]
    with pytest.raises(MalformedMessage, match="wallclock"):
        decode_message(message.key, message.value, headers)


def test_without_the_header_a_record_is_dated_by_its_create_time():
    dated = frame_message(frame(1.5, T0 + 1, side=32), "gate")
    undated = frame_message(frame(1.5, side=32), "gate")

    def record(message, timestamp, kind=CREATE_TIME):
        return Record("vigil.frames", 0, 7, timestamp, kind, message.key, message.value, message.headers)

    assert decode_record(record(undated, 1796025600250), max_bytes=1 << 20)[0].wallclock == T0 + 0.25
    assert decode_record(record(dated, 1796025600250), max_bytes=1 << 20)[0].wallclock == T0 + 1  # the header wins
    assert decode_record(record(undated, -1), max_bytes=1 << 20)[0].wallclock is None  # no timestamp
    # a broker's LogAppendTime says when it stored the record, not when the camera took the frame
    assert decode_record(record(undated, 1796025600250, LOG_APPEND_TIME), max_bytes=1 << 20)[0].wallclock is None


# --------------------------------------------------------------------------------------------- storage, imports


def test_clip_files_keep_the_recording_time_and_old_ones_read_as_unknown(tmp_path):
    store = LocalStore(tmp_path)
    unit = np.ones(4, np.float32) / 2
    clip = ClipEmbedding("gate", "gate-1", 4.0, 6.0, unit, unit, 4.5, "", MODELS, 3, recorded_at=T0 + 4)
    assert read_clip(store, write_clip(store, clip)).recorded_at == T0 + 4
    meta = {
        "source": "gate",
        "source_id": "gate-1",
        "start": 4.0,
        "end": 6.0,
        "keyframe_pts": 4.5,
        "keyframe_key": "",
        "frame_count": 3,
        "models": {"siglip": "s", "dinov2": "d", "untrained": True},
    }
    old = encode_npz({"siglip": unit, "dinov2": unit, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    store.put("clips/gate-1/000000004000.npz", old)
    assert read_clip(store, "clips/gate-1/000000004000.npz").recorded_at is None


def _clip_table(path: Path, recorded: list | None) -> Path:
    columns = {
        "source": ["dock", "dock"],
        "kind": ["camera", "camera"],
        "start": [0.0, 2.0],
        "end": [2.0, 4.0],
        "siglip": [[1.0, 0.0], [0.0, 1.0]],
        "dinov2": [[1.0, 0.0], [0.0, 1.0]],
    }
    if recorded is not None:
        columns["recorded"] = pa.array(recorded, pa.float64())
    table = pa.table(columns).replace_schema_metadata({"vigil.siglip": "s", "vigil.dinov2": "d"})
    pq.write_table(table, path)
    return path


def test_imported_clips_carry_the_recorded_column(tmp_path):
    clips = read_clip_table(_clip_table(tmp_path / "a.parquet", [T0, None]))
    assert [c.recorded_at for c in clips] == [T0, None]
    assert [c.recorded_at for c in read_clip_table(_clip_table(tmp_path / "b.parquet", None))] == [None, None]
    with pytest.raises(ClipImportError, match="row 1: recorded must be Unix seconds"):
        read_clip_table(_clip_table(tmp_path / "c.parquet", [T0, float("nan")]))
