"""Standing queries kept in the store (`queries/{id}.json`, example images as `queries/{id}.jpg`), so
they can be added and removed while monitors run: monitors re-read this folder periodically."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.live.match import StandingQuery
from pipeline.storage.store import ObjectStore


def query_key(query_id: str) -> str:
    return f"queries/{query_id}.json"


def image_key(query_id: str) -> str:
    return f"queries/{query_id}.jpg"


def save_query(store: ObjectStore, query: StandingQuery, image: np.ndarray | None = None) -> None:
    if (query.image is not None) != (image is not None):
        raise ValueError(f"query {query.id!r}: an example-image query needs its image, a text query none")
    if image is not None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        store.put(image_key(query.id), buffer.getvalue())
    store.put_json(query_key(query.id), query.to_json())


def delete_query(store: ObjectStore, query_id: str) -> bool:
    existed = store.exists(query_key(query_id))
    store.delete(query_key(query_id))
    store.delete(image_key(query_id))
    return existed


def load_queries(store: ObjectStore) -> list[tuple[StandingQuery, np.ndarray | None]]:
    queries = []
    for key in store.list("queries/"):
        if not key.endswith(".json"):
            continue
        query = StandingQuery.from_json(store.get(key))
        image = None
        if query.image is not None:
            image = np.asarray(Image.open(io.BytesIO(store.get(image_key(query.id)))).convert("RGB"))
        queries.append((query, image))
    return queries
