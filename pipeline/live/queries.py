"""Standing queries kept in the store (`queries/{id}.json`, example images as `queries/{id}.jpg`), so
they can be added and removed while monitors run: monitors re-read this folder periodically."""

from __future__ import annotations

import numpy as np

from pipeline.live.match import StandingQuery
from pipeline.storage.codecs import decode_image, encode_jpeg
from pipeline.storage.layout import QUERIES, query_image_key, query_key
from pipeline.storage.store import ObjectStore


def save_query(store: ObjectStore, query: StandingQuery, image: np.ndarray | None = None) -> None:
    if (query.image is not None) != (image is not None):
        raise ValueError(f"query {query.id!r}: an example-image query needs its image, a text query none")
    if image is not None:
        store.put(query_image_key(query.id), encode_jpeg(image, quality=95))
    store.put_json(query_key(query.id), query.to_json())


def delete_query(store: ObjectStore, query_id: str) -> bool:
    existed = store.exists(query_key(query_id))
    store.delete(query_key(query_id))
    store.delete(query_image_key(query_id))
    return existed


def load_queries(store: ObjectStore) -> list[tuple[StandingQuery, np.ndarray | None]]:
    queries = []
    for key in store.list(QUERIES):
        if not key.endswith(".json"):
            continue
        query = StandingQuery.from_json(store.get(key))
        image = None
        if query.image is not None:
            image = decode_image(store.get(query_image_key(query.id)))
        queries.append((query, image))
    return queries
