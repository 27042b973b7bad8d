"""Sealed segments searched on the GPU (faiss-gpu) answer as on the CPU."""

import numpy as np
import pytest

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, ModelIds
from pipeline.search.filters import ClipFilter, TimeRange
from pipeline.search.index import ClipIndex
from pipeline.search.manifest import read_newest
from pipeline.search.segments import gpu_available
from pipeline.storage.store import LocalStore

MODELS = ModelIds("siglip-x", "dino-x")


def _unit(rows):
    rows = np.atleast_2d(rows).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clips(source_id, vectors):
    siglip, dinov2 = _unit(vectors), _unit(vectors[:, ::2])
    return [
        ClipEmbedding(
            f"/v/{source_id}.mp4",
            source_id,
            2.0 * i,
            2.0 * i + 2.0,
            siglip[i],
            dinov2[i],
            2.0 * i,
            f"keyframes/{source_id}/{i}.jpg",
            MODELS,
        )
        for i in range(len(vectors))
    ]


@pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU (faiss-cpu)")
def test_sealed_flat_and_ivf_segments_search_on_the_gpu_as_on_the_cpu(tmp_path):
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((6, 32))

    def around_centres(count):
        return centres[rng.integers(6, size=count)] + 0.4 * rng.standard_normal((count, 32))

    store = LocalStore(tmp_path)
    for kind, source_id, count in (("flat", "cam-a", 300), ("ivf", "cam-b", 3000)):
        writer = ClipIndex.load(store, IndexConfig(kind=kind, seal_rows=count, background=False, device="cuda"))
        writer.upsert(_clips(source_id, around_centres(count)))
        writer.save(store)
    assert sorted(entry.kind for entry in read_newest(store).segments) == ["flat", "ivf"]
    on_gpu = ClipIndex.load(store, IndexConfig(device="cuda"))
    assert all(segment.gpu_indexes for segment in on_gpu.segments.values())
    on_cpu = ClipIndex.load(store, IndexConfig(device="cpu"))
    # The last writer holds the IVF segment it sealed (taken up from memory) and the flat one it read.
    for index in (writer, on_gpu):
        for number, query in enumerate(_unit(around_centres(20))):
            image = _unit(query[::2])[0] if number % 2 else None
            for where in (None, ClipFilter.of(time=TimeRange(100.0, 4000.0, "media"))):  # the GPU; then the CPU
                search = {"siglip": query, "dinov2": image, "k": 10, "where": where}
                assert index.search(**search) == on_cpu.search(**search)
