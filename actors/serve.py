"""`vigil serve` on Ray Serve: three deployments composed into one application.

- `EncoderDeployment`: the SigLIP2 and DINOv2 encoders; phrases are embedded in batches (`serve.batch`, up to
  `serve.batch_max` texts, waiting at most `serve.batch_wait` seconds for them), images one at a time.
- `SearchDeployment`: the clip index (its shards' actors when `index.shards` > 1), followed as writers add to it
  (every `serve.index_refresh` seconds at most); moments merged from its hits.
- `ApiDeployment`: the HTTP API and page (`pipeline.serving.api`), asking the other two through their handles.

Each has the autoscaling bounds of its section (`serve.encoder`, `serve.search`; the API one replica per bound of
the searchers). `ServeBackend` is the API's `SearchBackend` over the handles.
"""

from __future__ import annotations

import time

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.index_shards import open_search_index
from pipeline.config import ServeAutoscaling, VigilConfig
from pipeline.records import Event, ModelIds
from pipeline.search.filters import ClipFilter
from pipeline.search.index import ClipIndex
from pipeline.search.moments import moments_of
from pipeline.serving.api import build_app
from pipeline.storage.store import open_configured_store

API_ONGOING = 256  # requests one API replica holds at once (each mostly waits on the encoder and searchers)


def autoscaling(bounds: ServeAutoscaling) -> dict:
    return bounds.model_dump()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class EncoderDeployment:
    def __init__(self, config: VigilConfig):
        from pipeline.models import load_encoders

        self.encoders = load_encoders(
            config.models, device=config.device, precision=config.precision, batch_size=config.batch_size
        )
        self.embed_text.set_max_batch_size(config.serve.batch_max)
        self.embed_text.set_batch_wait_timeout_s(config.serve.batch_wait)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def embed_text(self, texts: list[str]) -> list[np.ndarray]:
        """Phrases from concurrent requests, embedded in one call."""
        return list(self.encoders.siglip.embed_texts(texts))

    def embed_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        siglip, dinov2 = self.encoders.embed_images(image[None])
        return siglip[0], dinov2[0]

    def ids(self) -> ModelIds:
        return self.encoders.ids


@serve.deployment(ray_actor_options={"num_cpus": 0})
class SearchDeployment:
    def __init__(self, config: VigilConfig):
        self.config = config
        self.store = open_configured_store(config, create=False)
        self.index = open_search_index(config, self.store)
        self.looked = time.monotonic()

    def search(
        self, siglip: np.ndarray, dinov2: np.ndarray | None, top_k: int, where: ClipFilter | None, models: ModelIds
    ) -> list[Event]:
        self._follow()
        self.index.check_models(models)
        search = self.config.search
        return moments_of(
            self.index,
            siglip,
            dinov2,
            top_k=top_k,
            merge_drop=search.merge_drop,
            where=where,
            untrained=models.untrained,
        )

    def rows(self) -> int:
        self._follow()
        return len(self.index)

    def _follow(self) -> None:
        """The rows writers committed since the last look, at most every `serve.index_refresh` seconds."""
        if time.monotonic() - self.looked < self.config.serve.index_refresh:
            return
        self.looked = time.monotonic()
        if isinstance(self.index, ClipIndex):
            self.index.refresh(self.store)
        else:
            self.index.refresh()


class ServeBackend:
    """The API's `SearchBackend`: the encoder and search deployments through their handles."""

    def __init__(self, encoder: DeploymentHandle, searcher: DeploymentHandle):
        self.encoder, self.searcher = encoder, searcher
        self._ids: ModelIds | None = None

    async def models(self) -> ModelIds:
        if self._ids is None:
            self._ids = await self.encoder.ids.remote()
        return self._ids

    async def embed_text(self, text: str) -> np.ndarray:
        return await self.encoder.embed_text.remote(text)

    async def embed_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return await self.encoder.embed_image.remote(image)

    async def search(
        self, siglip: np.ndarray, dinov2: np.ndarray | None, top_k: int, where: ClipFilter | None
    ) -> list[Event]:
        return await self.searcher.search.remote(siglip, dinov2, top_k, where, await self.models())

    async def describe(self) -> dict:
        ids = await self.models()
        return {
            "siglip": ids.siglip,
            "dinov2": ids.dinov2,
            "untrained": ids.untrained,
            "rows": await self.searcher.rows.remote(),
        }


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ApiDeployment:
    def __init__(self, config: VigilConfig, encoder: DeploymentHandle, searcher: DeploymentHandle):
        self.config = config
        self.store = open_configured_store(config, create=False)
        self.backend = ServeBackend(encoder, searcher)

    def __serve_build_asgi_app__(self):
        return build_app(self.config.serve, self.store, self.backend)


def serve_application(config: VigilConfig):
    """The application `vigil serve` runs: the API over an encoder and a search deployment."""
    settings = config.serve
    # a replica takes twice a batch of phrases at once, so that one batch fills while the other runs
    encoder = EncoderDeployment.options(
        autoscaling_config=autoscaling(settings.encoder), max_ongoing_requests=2 * settings.batch_max
    ).bind(config)
    searcher = SearchDeployment.options(autoscaling_config=autoscaling(settings.search)).bind(config)
    # the API mostly awaits the others: many requests at once per replica
    api = ApiDeployment.options(autoscaling_config=autoscaling(settings.search), max_ongoing_requests=API_ONGOING)
    return api.bind(config, encoder, searcher)
