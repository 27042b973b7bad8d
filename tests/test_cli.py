"""The `vigil` console script end to end, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from pipeline.media.decode import decode_frames
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import camera_source_id, file_source_id, source_key
from pipeline.storage.store import LocalStore
from tests.test_store import claimed_png

VIGIL = str(Path(sys.executable).parent / "vigil")


def vigil(*args, env=None, check=True):
    result = subprocess.run(
        [VIGIL, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, scene_video, vigil_cache):
    path, _ = scene_video
    store = tmp_path_factory.mktemp("cli-store")
    result = vigil("index", path, "--store", store, "--models", "tiny", "--fps", 1, "--window", 2)
    assert "indexed 1 file(s), 10 clips" in result.stdout
    assert "UNTRAINED" in result.stdout
    assert "realtime" in result.stderr  # the progress bar reports speed as x realtime
    return store


def test_search_text_json_lines(cli_store):
    result = vigil("search", "a red car at night", "--store", cli_store, "--top-k", 3, "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert 1 <= len(lines) <= 3
    for line in lines:
        assert set(line) >= {"source", "start", "end", "score", "keyframe"}
        assert line["untrained"] is True and Path(line["keyframe"]).is_file()
    assert [line["score"] for line in lines] == sorted((line["score"] for line in lines), reverse=True)


def test_search_only_the_sources_asked_for(cli_store, scene_video):
    path, _ = scene_video
    mine = vigil("search", "a red car at night", "--store", cli_store, "--source", path, "--json").stdout
    assert mine and all(json.loads(line)["source"] == str(path.resolve()) for line in mine.splitlines())
    other = vigil("search", "a red car at night", "--store", cli_store, "--camera", "gate", "--json").stdout
    assert other == ""  # no clip of that camera is indexed


def test_search_by_example_image_uses_the_index_models(cli_store, scene_video, tmp_path):
    path, bounds = scene_video
    frame = next(f for f in decode_frames(path, fps=25, short_side=None, keyframes_only=False) if f.pts >= 10.5)
    example = tmp_path / "example.png"
    Image.fromarray(frame.image).save(example)
    # no --models: the search loads the models the index was built with
    result = vigil("search", "--image", example, "--store", cli_store, "--json")
    best = json.loads(result.stdout.splitlines()[0])
    assert best["start"] <= frame.pts < best["end"]
    human = vigil("search", "--image", example, "--store", cli_store)
    assert human.stdout.startswith("UNTRAINED") and " 1. " in human.stdout


def test_environment_names_the_store_and_models(cli_store):
    result = vigil("search", "gate", "--json", env={"VIGIL_STORE": str(cli_store), "VIGIL_MODELS": "tiny"})
    assert json.loads(result.stdout.splitlines()[0])["untrained"] is True


def test_bad_input_gets_a_clear_error(cli_store, tmp_path):
    missing = vigil("search", "--image", tmp_path / "nope.jpg", "--store", cli_store, check=False)
    assert missing.returncode == 2 and "example image not found" in missing.stderr and "Traceback" not in missing.stderr
    both = vigil("search", "--store", cli_store, check=False)
    assert both.returncode == 2 and "give a phrase or --image" in both.stderr
    (tmp_path / "empty").mkdir()
    empty = vigil("search", "x", "--store", tmp_path / "empty", check=False)
    assert empty.returncode == 2 and "empty" in empty.stderr
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("decode:\n  fps: fast\n")
    wrong = vigil("index", tmp_path, "--config", bad_config, check=False)
    assert wrong.returncode == 2 and "'decode.fps'" in wrong.stderr


def test_remove_then_reindex(tmp_path, scene_video, vigil_cache):
    path, _ = scene_video
    store = tmp_path / "s"
    vigil("index", path, "--store", store, "--models", "tiny", "--no-progress")
    assert "removed" in vigil("remove", path, "--store", store).stdout
    assert not list((store / "clips").glob("*/*.npz")) and not list((store / "keyframes").glob("*/*"))
    assert len(ClipIndex.load(LocalStore(store))) == 0
    again = vigil("index", path, "--store", store, "--models", "tiny", "--no-progress")
    assert "10 clips" in again.stdout


def _clip_file(path, models, rows, dims, **metadata_overrides):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "source": ["dock"] * rows,
            "kind": ["camera"] * rows,
            "start": [2.0 * i for i in range(rows)],
            "end": [2.0 * i + 2 for i in range(rows)],
            "siglip": [list(rng.standard_normal(dims[0])) for _ in range(rows)],
            "dinov2": [list(rng.standard_normal(dims[1])) for _ in range(rows)],
        }
    )
    metadata = {"vigil.siglip": models.siglip, "vigil.dinov2": models.dinov2, "vigil.untrained": "true"}
    metadata |= metadata_overrides
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def test_import_clips_joins_the_index_and_refuses_what_does_not_fit(cli_store, tmp_path):
    import shutil

    store_dir = tmp_path / "store"
    shutil.copytree(cli_store, store_dir)
    index = ClipIndex.load(LocalStore(store_dir))
    segment = next(iter(index.segments.values()))
    dims = (segment.vectors["siglip"].shape[1], segment.vectors["dinov2"].shape[1])
    before = sorted(p.relative_to(store_dir) for p in store_dir.rglob("*") if p.is_file())

    wrong_dims = vigil(
        "import-clips",
        _clip_file(tmp_path / "d.parquet", index.models, 3, (dims[0] + 1, dims[1])),
        "--store",
        store_dir,
        check=False,
    )
    assert wrong_dims.returncode == 2 and "dimensions" in wrong_dims.stderr and "Traceback" not in wrong_dims.stderr
    other = _clip_file(tmp_path / "m.parquet", index.models, 3, dims, **{"vigil.siglip": "someone/else"})
    wrong_models = vigil("import-clips", other, "--store", store_dir, check=False)
    assert wrong_models.returncode == 2 and "someone/else" in wrong_models.stderr
    assert sorted(p.relative_to(store_dir) for p in store_dir.rglob("*") if p.is_file()) == before  # nothing written

    done = vigil("import-clips", _clip_file(tmp_path / "ok.parquet", index.models, 3, dims), "--store", store_dir)
    assert "imported 3 clips of 1 source(s)" in done.stdout
    found = vigil("search", "a dock", "--store", store_dir, "--camera", "dock", "--json").stdout.splitlines()
    assert len(found) >= 1 and {json.loads(line)["source"] for line in found} == {"dock"}
    assert all(json.loads(line)["keyframe"] is None for line in found)  # imported without keyframes
    assert len(ClipIndex.load(LocalStore(store_dir))) == len(index) + 3


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_oversized_example_images_are_refused_in_one_line(cli_store, tmp_path):
    bomb = claimed_png(tmp_path / "bomb.png", 30000, 30000)  # a 109 KB PNG of these pixels is a bomb
    search = vigil("search", "--image", bomb, "--store", cli_store, check=False)
    assert search.returncode == 2
    assert one_line(search.stderr) == (
        f"vigil search: error: example image {bomb} is too large: 900000000 pixels, more than the 89478485 allowed"
    )
    big = claimed_png(tmp_path / "big.png", 10000, 9000)  # over the limit, under Pillow's own refusal: no warning
    search = vigil("search", "--image", big, "--store", cli_store, check=False)
    assert search.returncode == 2 and "10000x9000 pixels" in one_line(search.stderr)
    store = tmp_path / "new-store"
    add = vigil("query", "add", "van", "--image", bomb, "--store", store, check=False)
    assert add.returncode == 2 and f"example image {bomb} is too large" in one_line(add.stderr)
    assert not store.exists()  # refused before the store was touched


def test_commands_that_only_read_or_remove_need_a_store_there(tmp_path):
    missing = tmp_path / "no-store"
    for argv in (["search", "a gate"], ["alerts"], ["query", "list"], ["query", "remove", "q"], ["remove", "x.mp4"]):
        result = vigil(*argv, "--store", missing, check=False)
        assert result.returncode == 2, argv
        assert (
            one_line(result.stderr)
            == f"vigil {argv[0]}: error: there is no store at {missing} (check --store or VIGIL_STORE)"
        )
        assert not missing.exists(), argv
    vigil("query", "add", "fence", "a person at the fence", "--store", missing)  # a writing command makes it
    assert (missing / "queries" / "fence.json").is_file()


def test_remove_takes_what_search_shows(cli_store, tmp_path, monkeypatch, capsys):
    import shutil

    store_dir = tmp_path / "store"
    shutil.copytree(cli_store, store_dir)
    index = ClipIndex.load(LocalStore(store_dir))
    segment = next(iter(index.segments.values()))
    dims = (segment.vectors["siglip"].shape[1], segment.vectors["dinov2"].shape[1])
    vigil("import-clips", _clip_file(tmp_path / "dock.parquet", index.models, 3, dims), "--store", store_dir)
    shown = {
        json.loads(line)["source"]
        for line in vigil("search", "a dock", "--store", store_dir, "--json").stdout.splitlines()
    }
    assert "dock" in shown  # a camera, shown by its id

    store = LocalStore(store_dir)
    removed = vigil("remove", "dock", "--store", store_dir)  # the console script once; in this process below
    assert removed.stdout.strip() == "removed dock: 3 clips"
    assert camera_source_id("dock") not in ClipIndex.load(store).sources and len(ClipIndex.load(store)) == 10
    assert not list((store_dir / "clips").glob(f"{camera_source_id('dock')}*"))
    assert main(["remove", "--camera", "dock", "--store", str(store_dir)]) == 2
    assert one_line(capsys.readouterr().err).endswith(f"camera 'dock' is not in the store {store_dir}")

    # A name that is both a stored file (relative to here) and a stored camera: the user says which.
    monkeypatch.chdir(tmp_path)
    assert main(["import-clips", str(tmp_path / "dock.parquet"), "--store", str(store_dir)]) == 0
    file_sid = file_source_id("dock")
    store.put_json(source_key(file_sid), {"source": str(tmp_path / "dock"), "source_id": file_sid, "kind": "file"})
    capsys.readouterr()
    assert main(["remove", "dock", "--store", str(store_dir)]) == 2
    assert "names both a file and a camera" in one_line(capsys.readouterr().err)
    assert main(["remove", "--camera", "dock", file_sid, "--store", str(store_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed {file_sid}: 0 clips", "removed dock: 3 clips"]
    assert not store.exists(source_key(file_sid)) and not store.exists(source_key(camera_source_id("dock")))


def test_ctrl_c_interrupts_any_command_in_one_line(monkeypatch, capsys):
    from jobs.commands import alerts

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(alerts, "run", interrupted)
    try:
        code = main(["alerts"])
    except KeyboardInterrupt:
        pytest.fail("the interruption escaped main() (a traceback for the user)")
    assert code == 130
    assert capsys.readouterr().err == "vigil alerts: interrupted\n"


def test_ctrl_c_during_indexing_exits_130_and_leaves_the_store_consistent(tmp_path, scene_video, vigil_cache):
    path, _ = scene_video
    store = tmp_path / "store"
    process = subprocess.Popen(
        [VIGIL, "index", str(path), "--store", str(store), "--models", "tiny", "--fps", "25", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background commands ignoring SIGINT; a user's Ctrl-C is not ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list(store.glob("clips/*/*.npz")):  # interrupted in the middle of writing the clips
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err == "vigil index: interrupted\n", (out, err)
    # No half-applied change: nothing names the clips written before the interruption (which are deleted again).
    assert len(ClipIndex.load(LocalStore(store))) == 0 and not list(store.glob("sources/*"))
    assert not list(store.rglob(".tmp-*"))


def test_search_over_index_shards_prints_what_one_index_prints(cli_store, tmp_path, ray_local, capsys):
    """`index.shards: 2` fans the search out over Ray actors (the session's Ray): the same events."""
    from jobs.cli import main

    sharded = tmp_path / "sharded.yaml"
    sharded.write_text("index:\n  shards: 2\n")
    outputs = []
    for extra in ([], ["--config", sharded]):
        args = ["search", "a red car at night", "--store", cli_store, "--models", "tiny", "--top-k", 5, "--json"]
        assert main([*map(str, args), *map(str, extra)]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] and outputs[0] == outputs[1]


@pytest.mark.parametrize("command", [["search", "a red car"], ["remove"], ["query", "add", "q1", "a red car"]])
def test_a_camera_filter_follows_the_camera_id_rule(cli_store, command, capsys):
    from jobs.cli import main

    assert main([*command, "--camera", "gate\x1b[2J", "--store", str(cli_store), "--models", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--camera" in err and "control character" in err
