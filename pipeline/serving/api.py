"""The HTTP API of `vigil serve` (version 1, OpenAPI at /openapi.json) and its web page, as one FastAPI app.

The app reads the store itself (alerts, standing queries, summaries, tracks, media) and asks a `SearchBackend`
for what needs the models or the index: in `vigil serve` that is Ray Serve deployments (`actors.serve`: the text
encoder batching requests, the index searchers), so the app itself stays small and holds no model.

Every error is JSON `{"detail": "..."}` saying what was wrong, with a 4xx status for a bad request: an unknown
camera or key is 404, a body, image or phrase over its limit (`serve.limits`) is 413 or 422. With a token
(`serve.token`) every route but /healthz, /readyz and the page needs `Authorization: Bearer TOKEN` or the
`vigil_token` cookie `POST /v1/session` sets (pictures in a page cannot send headers); tokens are compared in
constant time and never logged or returned.

The alert stream (`GET /v1/alerts/stream`, server-sent events) looks at the store every `serve.alerts_poll`
seconds: new alert objects, and the open ones again (an open alert is rewritten once as it closes), so each look
reads what changed rather than every alert.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from pipeline.cameras import check_camera_id
from pipeline.config import ServeConfig
from pipeline.live.queries import StandingQuery, delete_query, load_queries, save_query
from pipeline.records import UNTRAINED_NOTE, Event, ModelIds
from pipeline.search.filters import ClipFilter, FilterError, TimeRange
from pipeline.search.index import IndexMismatchError
from pipeline.serving.media import RangeNotSatisfiable, byte_range, content_type, media_key
from pipeline.storage.codecs import ImageTooLargeError, decode_image
from pipeline.storage.layout import ALERTS, SUMMARY_FILES, alerts_prefix, camera_source_id, source_key
from pipeline.storage.store import ObjectStore, StoreError
from pipeline.tracking import TrackIndex, TrackSearchError, similar_tracks, stored_sources

API = "/v1"
PAGE = Path(__file__).with_name("page.html")
OPEN_PATHS = {"/", "/healthz", "/readyz", f"{API}/session"}  # no token needed
HEARTBEAT_SECONDS = 15.0  # a comment line on an idle alert stream, so proxies keep it open


class SearchBackend(Protocol):
    """What the API asks of the models and the index."""

    async def embed_text(self, text: str) -> np.ndarray:
        """A phrase's SigLIP2 text vector."""

    async def embed_image(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """An image's SigLIP2 and DINOv2 vectors."""

    async def search(
        self, siglip: np.ndarray, dinov2: np.ndarray | None, top_k: int, where: ClipFilter | None
    ) -> list[Event]:
        """The moments most like the vectors, best first."""

    async def models(self) -> ModelIds:
        """The served models' ids (the same for the life of the backend)."""

    async def describe(self) -> dict:
        """The models (`siglip`, `dinov2`, `untrained`) and the index rows (`rows`): what /readyz reports."""


class Problem(BaseModel):
    """What every error answers: one line saying what was wrong."""

    detail: str


# every route may answer these, each as a Problem (FastAPI's own 422, a list of errors, is made one line too)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (401, 404, 409, 411, 413, 416, 422, 503)
}


class KeyframeCrop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="a keyframe's store key, as search results give it")
    box: tuple[float, float, float, float] | None = Field(
        default=None, description="x1, y1, x2, y2 in the keyframe's pixels; none: the whole keyframe"
    )


class SearchRequest(BaseModel):
    """One of `text`, `image` (base64 of a JPEG or PNG) or `keyframe` (a stored keyframe, or a box of it)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="a phrase, in any language")
    image: str | None = Field(default=None, description="base64 of an example image")
    keyframe: KeyframeCrop | None = None
    cameras: list[str] = Field(default_factory=list, description="only these cameras")
    sources: list[str] = Field(default_factory=list, description="only these source ids (files or cameras)")
    time_from: str | None = Field(default=None, alias="from", description="ISO 8601, or seconds into each source")
    time_to: str | None = Field(default=None, alias="to", description="ISO 8601, or seconds into each source")
    top_k: int = Field(default=10, ge=1)


class TrackSearchRequest(BaseModel):
    """An example image (base64), or a stored keyframe or a box of it: the object to find among the tracks."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    keyframe: KeyframeCrop | None = None
    top_k: int = Field(default=10, ge=1)


class SearchResult(BaseModel):
    source: str
    source_id: str
    start: float
    end: float
    score: float
    keyframe: str | None
    keyframe_url: str | None
    play_url: str | None = Field(description="plays the source from the moment's start; none for a camera")
    untrained: bool


class SearchResponse(BaseModel):
    results: list[SearchResult]
    untrained: bool
    note: str | None = Field(description="what untrained results prove and do not")


class QueryPost(BaseModel):
    """A standing query (`StandingQuery`'s fields), with `image_data` (base64) for an example-image query."""

    model_config = ConfigDict(extra="allow")

    image_data: str | None = None


class Metrics:
    """The app's Prometheus instruments, in a registry of its own (one app per process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "vigil_http_request_seconds", "HTTP request latency", ["route", "method", "status"], registry=self.registry
        )
        self.search = Histogram(
            "vigil_search_seconds", "Search latency by step (encode: the query's vectors; search: the index)",
            ["kind", "step"], registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "vigil_http_requests_in_flight", "Requests being served (the queue)", registry=self.registry
        )
        self.waiting = Gauge(
            "vigil_backend_requests_waiting",
            "Requests waiting on a deployment (encoder, search): its queue as the API sees it",
            ["deployment"],
            registry=self.registry,
        )
        self.streams = Gauge("vigil_alert_streams", "Open alert streams", registry=self.registry)
        self.alerts_streamed = Counter("vigil_alerts_streamed", "Alert updates sent on streams", registry=self.registry)


def build_app(settings: ServeConfig, store: ObjectStore, backend: SearchBackend) -> FastAPI:
    """The app over `store`, searching through `backend`."""
    app = FastAPI(
        title="vigil",
        version="1",
        description="Search, alerts, standing queries, summaries and tracks of a vigil store.",
        responses=ERRORS,
    )

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    metrics = Metrics()
    limits = settings.limits
    page_html = PAGE.read_text()  # read once: the package's own file

    def check_top_k(top_k: int) -> None:
        if top_k > limits.top_k:
            raise HTTPException(422, f"top_k {top_k} is above the limit of {limits.top_k}")

    def example_image(image: str | None, keyframe: KeyframeCrop | None) -> np.ndarray:
        """An uploaded image (base64), else a stored keyframe or the box of it drawn."""
        if image is not None:
            return _upload(image, limits.image_pixels, limits.body_bytes)
        return _keyframe_crop(store, keyframe)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        route = request.url.path
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = _refused(request, settings)
            if response is None:
                response = await call_next(request)
        finally:
            metrics.in_flight.dec()
        matched = request.scope.get("route")
        metrics.requests.labels(
            getattr(matched, "path", route if route in OPEN_PATHS else "other"), request.method, response.status_code
        ).observe(time.perf_counter() - started)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz() -> dict:
        """The app answers."""
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """The models are loaded and the index open: searches can be served."""
        try:
            described = await backend.describe()
        except Exception as exc:  # noqa: BLE001 - any failure of a deployment means not ready
            return JSONResponse({"ready": False, "detail": str(exc).splitlines()[0][:300]}, status_code=503)
        return JSONResponse({"ready": True, **described})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(f"{API}/session", status_code=204)
    def session(body: dict) -> Response:
        """Exchange the token for a cookie (`vigil_token`, HttpOnly) that pictures and streams carry."""
        token = body.get("token") if isinstance(body, dict) else None
        if settings.token is None:
            return Response(status_code=204)
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), settings.token.encode()):
            raise HTTPException(401, "wrong token")
        response = Response(status_code=204)
        response.set_cookie("vigil_token", token, httponly=True, samesite="strict")
        return response

    @app.post(f"{API}/search", response_model=SearchResponse)
    async def search(request: SearchRequest, response: Response) -> dict:
        """Moments most like a phrase, an example image, or a stored keyframe (or a box drawn on it). The
        `Server-Timing` header says how long the query's encoding and the index search took (ms)."""
        given = [name for name in ("text", "image", "keyframe") if getattr(request, name) is not None]
        if len(given) != 1:
            raise HTTPException(422, "give exactly one of text, image or keyframe")
        check_top_k(request.top_k)
        where = _filter(request)
        started = time.perf_counter()
        if request.text is not None:
            text = request.text.strip()
            if not text:
                raise HTTPException(422, "the text is empty")
            if len(text) > limits.query_chars:
                raise HTTPException(
                    422, f"the text has {len(text)} characters, above the limit of {limits.query_chars}"
                )
            with metrics.waiting.labels("encoder").track_inprogress():
                kind, siglip, dinov2 = "text", await backend.embed_text(text), None
        else:
            kind = "image"
            image = example_image(request.image, request.keyframe)
            with metrics.waiting.labels("encoder").track_inprogress():
                siglip, dinov2 = await backend.embed_image(image)
        encoded = time.perf_counter()
        try:
            with metrics.waiting.labels("search").track_inprogress():
                events = await backend.search(siglip, dinov2, request.top_k, where)
        except IndexMismatchError as exc:
            raise HTTPException(409, str(exc).splitlines()[0]) from None
        searched = time.perf_counter()
        metrics.search.labels(kind, "encode").observe(encoded - started)
        metrics.search.labels(kind, "search").observe(searched - encoded)
        response.headers["Server-Timing"] = (
            f"encode;dur={1000 * (encoded - started):.2f}, search;dur={1000 * (searched - encoded):.2f}"
        )
        untrained = events[0].untrained if events else (await backend.models()).untrained
        playable = {source_id: _plays(store, source_id) for source_id in {event.source_id for event in events}}
        return {
            "results": [_result(event, playable[event.source_id]) for event in events],
            "untrained": untrained,
            "note": UNTRAINED_NOTE if untrained else None,
        }

    @app.get(f"{API}/alerts")
    def alerts(
        camera: str | None = None,
        query_id: str | None = None,
        status: str | None = Query(default=None, pattern="^(open|closed)$"),
        limit: int = Query(default=100, ge=1, le=10000),
    ) -> list[dict]:
        """Stored alerts (each at its latest status), newest first."""
        prefix = ALERTS if camera is None else alerts_prefix(camera_source_id(_camera(camera)))
        records = [store.get_json(key) for key in store.list(prefix) if key.endswith(".json")]
        chosen = [
            alert
            for alert in records
            if (query_id is None or alert["query_id"] == query_id) and (status is None or alert["status"] == status)
        ]
        chosen.sort(key=lambda alert: (alert.get("recorded_at") or 0, alert["start"]), reverse=True)
        return [_with_urls(alert) for alert in chosen[:limit]]

    @app.get(f"{API}/alerts/stream")
    async def alert_stream(request: Request) -> StreamingResponse:
        """New alerts and alert updates as server-sent events (`event: alert`, `data`: the alert's JSON)."""
        return StreamingResponse(_alert_events(request), media_type="text/event-stream")

    async def _alert_events(request: Request) -> AsyncIterator[str]:
        seen = await asyncio.to_thread(_alert_statuses, store)
        metrics.streams.inc()
        try:
            yield ": connected\n\n"
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                await asyncio.sleep(settings.alerts_poll)
                changed = await asyncio.to_thread(_changed_alerts, store, seen)
                for alert in changed:
                    metrics.alerts_streamed.inc()
                    yield f"event: alert\ndata: {json.dumps(_with_urls(alert))}\n\n"
                if changed:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                    yield ": idle\n\n"
                    quiet_since = time.monotonic()
        finally:
            metrics.streams.dec()

    @app.get(f"{API}/queries")
    def queries() -> list[dict]:
        """The standing queries a running monitor follows."""
        return [query.to_json() for query, _ in load_queries(store)]

    @app.post(f"{API}/queries", status_code=201)
    def add_query(body: QueryPost) -> dict:
        """Add or replace a standing query: a running monitor takes it up at its next look (monitor.query_refresh),
        without a restart. An example-image query carries its image as `image_data` (base64)."""
        fields = body.model_dump(exclude={"image_data"})
        image = None
        if body.image_data is not None:
            image = _upload(body.image_data, limits.image_pixels, limits.body_bytes)
            fields.setdefault("image", "upload")
        try:
            query = StandingQuery.from_json(fields)
            save_query(store, query, image)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return query.to_json()

    @app.delete(f"{API}/queries/{{query_id}}", status_code=204)
    def remove_query(query_id: str) -> Response:
        """Delete a standing query; a running monitor closes its open events at its next look."""
        try:
            existed = delete_query(store, query_id)
        except StoreError:
            existed = False
        if not existed:
            raise HTTPException(404, f"no standing query {query_id!r}")
        return Response(status_code=204)

    @app.get(f"{API}/summaries")
    def summaries() -> list[dict]:
        """Every summary in the store: its source and the URLs of its files."""
        found = []
        for key in store.list("summaries/"):
            if key.endswith(f"/{SUMMARY_FILES['summary']}"):
                folder = key[: -len(SUMMARY_FILES["summary"])]
                found.append(
                    {
                        "source_id": key.split("/")[1],
                        "key": key,
                        "files": {name: _media_url(folder + file) for name, file in SUMMARY_FILES.items()},
                    }
                )
        return found

    @app.get(f"{API}/summaries/{{key:path}}")
    def summary(key: str) -> dict:
        """A summary's summary.json (its key, as `GET /v1/summaries` lists it)."""
        if media_key(key) is None or not key.startswith("summaries/") or not key.endswith(SUMMARY_FILES["summary"]):
            raise HTTPException(404, f"no summary {key!r}")
        return _json_object(store, key)

    @app.get(f"{API}/media/{{key:path}}")
    def media(key: str, request: Request) -> Response:
        """A keyframe, summary file or thumbnail of the store, whole or a byte range (`Range: bytes=...`)."""
        if media_key(key) is None or not store.exists(key):
            raise HTTPException(404, f"no media {key!r}")
        return _ranged(store.get(key), content_type(key), request.headers.get("range"))

    @app.get(f"{API}/sources/{{source_id}}/video")
    def video(source_id: str) -> FileResponse:
        """A file source's video, with byte ranges, for a player to start at a moment (`#t=start`)."""
        record = _source_record(store, source_id)
        path = Path(record.get("source", "")) if record.get("kind", "file") == "file" else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"source {source_id!r} has no video file here")
        return FileResponse(path, media_type=content_type(path.name))

    @app.get(f"{API}/tracks")
    def tracks() -> list[dict]:
        """Every stored track (`vigil track` results and the live tracker's ended tracks)."""
        return [
            track.to_json() | {"thumbnail_url": _media_url(track.thumbnail)}
            for source in stored_sources(store)
            for track in source.tracks
        ]

    @app.post(f"{API}/tracks/search")
    async def search_tracks(request: TrackSearchRequest) -> list[dict]:
        """The stored tracks most like an example image or a box drawn on a keyframe (the tracks' appearance model
        must be the served DINOv2), best first."""
        if (request.image is None) == (request.keyframe is None):
            raise HTTPException(422, "give exactly one of image or keyframe")
        check_top_k(request.top_k)
        image = example_image(request.image, request.keyframe)
        model = (await backend.models()).dinov2
        try:
            index = await asyncio.to_thread(TrackIndex.from_store, store, model)
            _, dinov2 = await backend.embed_image(image)
            hits = index.search(dinov2, model, request.top_k)
        except TrackSearchError as exc:
            raise HTTPException(404, str(exc)) from None
        return [hit.to_json() | {"thumbnail_url": _media_url(hit.track.thumbnail)} for hit in hits]

    @app.get(f"{API}/tracks/{{source_id:path}}/{{track_id}}/similar")
    def tracks_like(source_id: str, track_id: int, top_k: int = Query(default=10, ge=1)) -> list[dict]:
        """The tracks most like one (the same object elsewhere), best first."""
        check_top_k(top_k)
        sources = list(stored_sources(store))
        query = next((source for source in sources if source.source_id == source_id), None)
        if query is None:
            raise HTTPException(404, f"no tracks of source {source_id!r}")
        try:
            _, hits = similar_tracks(sources, query, track_id, top_k, store.url)
        except TrackSearchError as exc:
            raise HTTPException(404, str(exc)) from None
        return [hit.to_json() | {"thumbnail_url": _media_url(hit.track.thumbnail)} for hit in hits]

    return app


def _refused(request: Request, settings: ServeConfig) -> Response | None:
    """A response refusing the request before it is read: no token, or a body above the limit."""
    if request.url.path not in OPEN_PATHS and settings.token is not None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get("vigil_token", "")
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            return JSONResponse(
                {"detail": "a bearer token is needed (Authorization: Bearer TOKEN)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > settings.limits.body_bytes):
        return JSONResponse(
            {"detail": f"the body is larger than the limit of {settings.limits.body_bytes} bytes"}, status_code=413
        )
    if length is None and request.headers.get("transfer-encoding"):
        return JSONResponse({"detail": "a body needs a Content-Length"}, status_code=411)
    return None


def _camera(camera: str) -> str:
    try:
        return check_camera_id(camera)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _filter(request: SearchRequest) -> ClipFilter | None:
    try:
        time_range = TimeRange.parse(request.time_from, request.time_to)
    except FilterError as exc:
        raise HTTPException(422, str(exc)) from None
    sources = None
    if request.cameras or request.sources:
        sources = {camera_source_id(_camera(camera)) for camera in request.cameras} | set(request.sources)
    return ClipFilter.of(sources, time_range)


def _upload(data: str, max_pixels: int, max_bytes: int) -> np.ndarray:
    """An uploaded image (base64) as RGB; too many pixels is 413, what does not decode 422."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "the image is not base64") from None
    if len(raw) > max_bytes:
        raise HTTPException(413, f"the image is larger than the limit of {max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as header:  # the size is in the header: no pixel decoded yet
            width, height = header.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise HTTPException(422, "the image is not a picture vigil reads (JPEG, PNG, ...)") from None
    if width * height > max_pixels:
        raise HTTPException(413, f"the image has {width}x{height} pixels, above the limit of {max_pixels}")
    try:
        return decode_image(raw)
    except (ImageTooLargeError, OSError, SyntaxError, ValueError) as exc:
        raise HTTPException(422, f"the image does not decode: {exc}") from None


def _keyframe_crop(store: ObjectStore, crop: KeyframeCrop | None) -> np.ndarray:
    """A stored keyframe, or the box of it a person drew; a box outside it, or of no area, is 422."""
    assert crop is not None
    key = media_key(crop.key)
    if key is None or not key.startswith("keyframes/") or not store.exists(key):
        raise HTTPException(404, f"no keyframe {crop.key!r}")
    image = decode_image(store.get(key))
    if crop.box is None:
        return image
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(value)) for value in crop.box)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise HTTPException(422, f"the box {list(crop.box)} holds no pixels of the {width}x{height} keyframe")
    return image[y1:y2, x1:x2]


def _media_url(key: str | None) -> str | None:
    return f"{API}/media/{key}" if key else None


def _plays(store: ObjectStore, source_id: str) -> bool:
    """Whether a source's moments can be played: a file source (a camera's footage is not kept)."""
    record = _stored_record(store, source_id)
    return record is not None and record.get("kind", "file") == "file"


def _result(event: Event, playable: bool) -> dict:
    return {
        "source": event.source,
        "source_id": event.source_id,
        "start": round(event.start, 3),
        "end": round(event.end, 3),
        "score": round(event.score, 6),
        "keyframe": event.keyframe_key or None,
        "keyframe_url": _media_url(event.keyframe_key),
        "play_url": f"{API}/sources/{event.source_id}/video#t={event.start:.3f}" if playable else None,
        "untrained": event.untrained,
    }


def _stored_record(store: ObjectStore, source_id: str) -> dict | None:
    try:
        key = source_key(source_id)
        return store.get_json(key) if store.exists(key) else None
    except StoreError:  # not a source id at all
        return None


def _source_record(store: ObjectStore, source_id: str) -> dict:
    record = _stored_record(store, source_id)
    if record is None:
        raise HTTPException(404, f"no source {source_id!r}")
    return record


def _json_object(store: ObjectStore, key: str) -> Any:
    if not store.exists(key):
        raise HTTPException(404, f"no {key!r}")
    return store.get_json(key)


def _with_urls(alert: dict) -> dict:
    return alert | {"keyframe_url": _media_url(alert.get("keyframe_key"))}


def _alert_statuses(store: ObjectStore) -> dict[str, str]:
    """Every stored alert's status by key (the alert stream's starting point: it sends what comes after)."""
    return {key: store.get_json(key)["status"] for key in store.list(ALERTS) if key.endswith(".json")}


def _changed_alerts(store: ObjectStore, seen: dict[str, str]) -> list[dict]:
    """The alerts new since `seen` and the open ones that changed status, `seen` brought up to date. Only new
    keys and open alerts are read: a closed alert is final."""
    changed = []
    for key in store.list(ALERTS):
        if not key.endswith(".json") or seen.get(key) == "closed":
            continue
        alert = store.get_json(key)
        if seen.get(key) != alert["status"]:
            seen[key] = alert["status"]
            changed.append(alert)
    return changed


def _ranged(data: bytes, media_type: str, header: str | None) -> Response:
    """`data`, or the range of it `header` asks for (206; 416 when none of it is there)."""
    try:
        span = byte_range(header, len(data))
    except RangeNotSatisfiable as exc:
        raise HTTPException(416, str(exc), headers={"Content-Range": f"bytes */{len(data)}"}) from None
    if span is None:
        return Response(data, media_type=media_type, headers={"Accept-Ranges": "bytes"})
    first, last = span
    return Response(
        data[first : last + 1],
        status_code=206,
        media_type=media_type,
        headers={"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{len(data)}"},
    )
