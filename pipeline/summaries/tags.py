"""Zero-shot tags: mean SigLIP2 image embeddings scored against the text embeddings of a concept vocabulary
(`pipeline.summaries.concepts`: built-in, user-extendable, any language), cached in the store per text model
and vocabulary."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.storage.codecs import decode_npz, encode_npz
from pipeline.storage.layout import vocabulary_key
from pipeline.storage.store import ObjectStore
from pipeline.summaries.concepts import Concept, vocabulary_digest
from pipeline.summaries.features import unit_rows


@dataclass(frozen=True)
class Tag:
    """A concept that an image embedding matches: its cosine score, and SigLIP's probability `p` of it."""

    label: str
    category: str
    score: float
    p: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ConceptBank:
    concepts: list[Concept]
    embeddings: np.ndarray  # (C, D) unit
    scale: float  # SigLIP logit scale (exp'd) and bias: p = sigmoid(scale * cos + bias)
    bias: float
    digest: str

    @property
    def categories(self) -> np.ndarray:
        return np.array([c.category for c in self.concepts])


def _logit_params(encoder) -> tuple[float, float]:
    model = getattr(encoder, "model", None)
    try:
        scale = float(model.logit_scale.exp().item())
        bias = float(model.logit_bias.item()) if getattr(model, "logit_bias", None) is not None else 0.0
        return scale, bias
    except AttributeError:
        return 1.0, 0.0


def _embed_many_texts(encoder, texts: list[str], batch: int = 128) -> np.ndarray:
    """Hundreds of short prompts: batches far larger than the image batch (per call overhead dominates the
    text tower on CPU: 522 prompts took 10.6 s in batches of 8 and 1.2 s in batches of 256 here)."""
    size = getattr(encoder, "batch_size", None)
    if isinstance(size, int) and size < batch:
        encoder.batch_size = batch
    try:
        return encoder.embed_texts(texts)
    finally:
        if isinstance(size, int):
            encoder.batch_size = size


_BANK_BYTES: dict[str, bytes] = {}  # the last few vocabularies' embeddings in this process (small: ~0.8 MB each)


def concept_bank(
    store: ObjectStore, concepts: Sequence[Concept], model_id: str, text_encoder: Callable[[], Any]
) -> ConceptBank:
    """Text embeddings of the vocabulary, cached in the store per text model and vocabulary
    (`summaries/_vocabulary/{digest}.npz`), so repeated summaries never run the text tower."""
    digest = vocabulary_digest(concepts, model_id)
    key = vocabulary_key(digest)
    data = store.get(key) if store.exists(key) else _BANK_BYTES.get(digest)
    if data is None:
        encoder = text_encoder()
        embeddings = unit_rows(_embed_many_texts(encoder, [c.text for c in concepts]))
        scale, bias = _logit_params(encoder)
        data = encode_npz(
            {"embeddings": embeddings.astype(np.float16), "params": np.array([scale, bias], dtype=np.float64)}
        )
    if not store.exists(key):
        store.put(key, data)
    if len(_BANK_BYTES) >= 4:
        _BANK_BYTES.pop(next(iter(_BANK_BYTES)))
    _BANK_BYTES[digest] = data
    arrays = decode_npz(data)
    params = arrays["params"]
    return ConceptBank(list(concepts), unit_rows(arrays["embeddings"]), float(params[0]), float(params[1]), digest)


def tag_rows(
    means: np.ndarray, bank: ConceptBank, top: int, *, exclude: Sequence[str] = (), only: Sequence[str] = ()
) -> list[list[Tag]]:
    """Top concepts per row of unit SigLIP2 image embeddings, optionally limited to some categories."""
    if top <= 0 or len(means) == 0:
        return [[] for _ in range(len(means))]
    scores = means @ bank.embeddings.T
    categories = bank.categories
    mask = np.ones(len(bank.concepts), dtype=bool)
    if exclude:
        mask &= ~np.isin(categories, list(exclude))
    if only:
        mask &= np.isin(categories, list(only))
    scores = np.where(mask[None, :], scores, -np.inf)
    top = min(top, int(mask.sum()))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    tags = []
    for row, picks in zip(scores, order):
        tags.append(
            [
                Tag(
                    bank.concepts[j].label,
                    bank.concepts[j].category,
                    round(float(row[j]), 4),
                    round(float(1.0 / (1.0 + math.exp(-(bank.scale * float(row[j]) + bank.bias)))), 4),
                )
                for j in picks
            ]
        )
    return tags
