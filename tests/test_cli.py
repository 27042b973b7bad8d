"""The `vigil` console script end to end, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.media.decode import decode_frames
from pipeline.search.index import ClipIndex
from pipeline.storage.store import LocalStore

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
