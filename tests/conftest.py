"""Shared session fixtures: offline Hugging Face, tiny untrained checkpoints, generated videos, one Ray instance."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray 2.60 registers a Linux node under the machine's address even when asked for 127.0.0.1; with this
# switch off it resolves the node to loopback, so test traffic stays on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from tests.cluster import ray_cluster  # noqa: E402,F401  (a multi-node Ray cluster on loopback: session fixture)
from tests.servers import kafka_broker, s3_server  # noqa: E402,F401  (real servers on loopback: session fixtures)


def pytest_addoption(parser):
    parser.addoption(
        "--cluster",
        action="store_true",
        help="run the tests marked `cluster` (a multi-node Ray cluster on this machine: make test-cluster)",
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `cluster` are skipped, visibly, unless --cluster is given (`make test-cluster` gives it)."""
    if config.getoption("--cluster"):
        return
    skip = pytest.mark.skip(reason="multi-node Ray cluster test: run by `make test-cluster` (pytest --cluster)")
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vigil_cache(tmp_path_factory):
    """Tiny checkpoints are built once per session into a private cache."""
    cache = tmp_path_factory.mktemp("vigil-cache")
    previous = os.environ.get("VIGIL_CACHE")
    os.environ["VIGIL_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("VIGIL_CACHE", None)
    else:
        os.environ["VIGIL_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_encoders(vigil_cache):
    from pipeline.models import load_encoders

    return load_encoders("tiny", device="cpu", precision="fp32", batch_size=8)


@pytest.fixture(scope="session", params=["owlv2", "owlvit"])
def tiny_owl(request, vigil_cache) -> str:
    """The folder of a tiny random OWLv2, then OWL-ViT, detector checkpoint (untrained), each built once per
    session: a test taking it runs on both."""
    from pipeline.models import tiny_owl_checkpoint

    return tiny_owl_checkpoint(kind=request.param)


@pytest.fixture(scope="session")
def scene_video(tmp_path_factory):
    """A 320x240, 25 fps video of five visually distinct 4-second scenes, a keyframe every second."""
    from pipeline.media.synthetic import Scene, write_scene_video

    path = tmp_path_factory.mktemp("media") / "scenes.mp4"
    scenes = [Scene(name, 4.0) for name in ("gate", "yard", "road", "lobby", "dock")]
    bounds = write_scene_video(path, scenes, fps=25, size=(320, 240), gop=25)
    return path, bounds


@pytest.fixture(scope="session")
def ray_local(vigil_cache):
    """One local Ray instance for the session, on loopback only."""
    import ray

    ray.init(
        address="local",  # a new instance, even where `ray start` left its address for ray.init() to find
        num_cpus=3,  # logical slots: a monitor with two extractors places them and its decoder at once
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "VIGIL_CACHE": str(vigil_cache)}},
    )
    assert all(node["NodeManagerAddress"] == "127.0.0.1" for node in ray.nodes())
    yield ray
    ray.shutdown()
