"""Validated configuration: packaged defaults < config file < VIGIL_* environment < command-line flags."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.cameras import check_camera_id


class ConfigError(ValueError):
    """A configuration file, environment variable or flag has a wrong key or value."""


class _Section(BaseModel):
    # Strict: a value of the wrong type is an error naming it, never converted (`fps: true` is not 1.0,
    # `batch_size: "16"` not 16); only an int stands for a float (`fps: 2`). Flags and the environment give
    # typed values and strings for string keys, so they pass as they are.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DecodeConfig(_Section):
    backend: Literal["pyav", "decord"]
    fps: float = Field(gt=0, le=240)
    short_side: Annotated[int, Field(ge=32, le=4096)] | Literal[0]  # 0: the source's own size
    keyframes_only: Literal["auto"] | bool
    threads: int = Field(ge=0, le=64)
    still_threshold: float = Field(ge=0)
    # decoding left out when the sampling does not need it (pipeline.media.decode.Shortcuts says what each does)
    skip_unsampled_gops: bool = True
    skip_nonref_frames: bool = True
    skip_loop_filter: bool = True

    def sampling(self) -> dict:
        """The settings that change which frames are sampled and marked still (threads change only speed)."""
        return self.model_dump(exclude={"threads"})


class EmbedConfig(_Section):
    window: float = Field(gt=0, le=3600)


class IndexConfig(_Section):
    """The clip index. A sealed segment is exact up to `exact_max` rows (every search reads all its vectors, so
    that stays small), HNSW (`hnsw_m` links) up to `hnsw_max`, IVF (`ivf_nprobe` lists of 8-bit codes searched,
    the best re-ranked exactly) above, with kind "auto"; "ivf_sq8" keeps only the 8-bit codes (a fifth of the
    memory of "ivf", approximate scores)."""

    kind: Literal["auto", "flat", "hnsw", "ivf", "ivf_sq8"] = "auto"
    exact_max: int = Field(default=20000, ge=1)
    hnsw_max: int = Field(default=250000, ge=1)
    hnsw_m: int = Field(default=32, ge=4, le=256)
    ivf_nprobe: int = Field(default=32, ge=1, le=65536)
    seal_rows: int = Field(default=10000, ge=1)  # growing segments holding this many rows are sealed
    background: bool = True  # seal and compact in a background thread of the writer (False: during its save)
    shards: int = Field(default=1, ge=1, le=256)  # Ray actors a search fans out over (1: in the process)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # sealed segments on the GPU where faiss-gpu sees one


class SearchConfig(_Section):
    top_k: int = Field(ge=1, le=10000)
    merge_drop: float = Field(ge=0, le=1)


class Backoff(_Section):
    """Exponential backoff between attempts to reach a service (S3, Kafka brokers)."""

    backoff: float = Field(default=0.5, ge=0, le=60)  # seconds after the first failed attempt, then doubling
    backoff_max: float = Field(default=8.0, ge=0, le=600)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.backoff_max, self.backoff * 2 ** (attempt - 1))


class S3Config(Backoff):
    """How `s3://bucket/prefix` stores are reached. Credentials never live here: AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN) come from the environment only."""

    endpoint: str | None = None  # http(s)://host[:port]; VIGIL_S3_ENDPOINT
    region: str | None = None  # None: AWS_DEFAULT_REGION, else asked of the service
    create_bucket: bool = True
    attempts: int = Field(default=6, ge=1, le=100)
    deadline: float = Field(default=60.0, gt=0, le=3600)
    connect_timeout: float = Field(default=5.0, gt=0, le=600)
    read_timeout: float = Field(default=30.0, gt=0, le=3600)


class KafkaTopics(_Section):
    frames: str = Field(default="vigil.frames", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    alerts: str = Field(default="vigil.alerts", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    dlq: str = Field(default="vigil.dlq", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    # an external detector's detections (docs/DETECTIONS.md), which `vigil track --kafka` tracks
    detections: str = Field(default="vigil.detections", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")


class KafkaConfig(Backoff):
    """Live streams: where the brokers are, the topic names and how hard to try to reach them."""

    brokers: str = Field(default="127.0.0.1:9092", pattern=r"^[^,\s:]+:\d+(,[^,\s:]+:\d+)*$")  # VIGIL_KAFKA_BROKERS
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    group: str = Field(default="vigil-monitor", min_length=1)
    max_message_bytes: int = Field(
        default=1024 * 1024,  # Kafka's own default (message.max.bytes)
        ge=1024,
        le=64 * 1024 * 1024,
    )
    # Decoded pixels (frames x width x height) one message, and one poll of the decoder, may ask for: a small
    # H.264 message can decode to gigabytes. Messages over the first go to the DLQ; a poll stops at the second.
    max_message_pixels: int = Field(default=100_000_000, ge=1, le=10_000_000_000)
    max_poll_pixels: int = Field(default=400_000_000, ge=1, le=100_000_000_000)
    connect_attempts: int = Field(default=5, ge=1, le=1000)
    connect_timeout: float = Field(default=5.0, gt=0, le=600)
    delivery_timeout: float = Field(default=60.0, gt=0, le=3600)

    @property
    def servers(self) -> list[str]:
        return [b.strip() for b in self.brokers.split(",") if b.strip()]


class MatchConfig(_Section):
    """Standing-query matching (`pipeline.live.match`): the per-(query, camera) score calibration."""

    history: int = Field(default=600, ge=8, le=100000)  # recent stage-1 scores kept per (query, camera)
    warmup: int = Field(default=30, ge=1, le=100000)  # scores needed before a calibrated query can alert
    min_spread: float = Field(default=0.01, gt=0, le=1)  # floor of the robust spread (cosine units)
    temperature: float = Field(default=0.01, gt=0, le=1)  # of the soft maximum over the neutral prompts


MAX_PHRASES = 1000  # an owl detector's phrases at most, the configured and the standing queries' together


class DetectConfig(_Section):
    """The object detector (`pipeline.detection`). "motion": background subtraction (OpenCV's MOG2) per camera on a
    grey picture `width` pixels wide; blobs of `min_area` to `max_area` of the picture become boxes. "owl": the
    open-vocabulary detector `model` (OWLv2 or OWL-ViT) prompted with `phrases`, a phrase's index its class id."""

    kind: Literal["motion", "owl"] = "motion"
    # frames per second of media time the detector is given; a live tracker's files and URLs are sampled at it when
    # it is above decode.fps (the models still take decode.fps), its Kafka frames come as the producer sends them
    rate: float = Field(default=5.0, gt=0, le=240)
    history: int = Field(default=500, ge=1, le=100000)  # frames the background model learns from
    var_threshold: float = Field(default=16.0, gt=0, le=10000)  # squared grey distance to the model: foreground
    min_area: float = Field(default=0.0005, gt=0, le=1)  # least blob area, a fraction of the picture
    max_area: float = Field(default=0.5, gt=0, le=1)  # most: bigger is a light change or a shaken camera
    width: int = Field(default=320, ge=32, le=4096)  # the picture is downscaled to this width (never up)
    warmup: int = Field(default=15, ge=0, le=100000)  # frames per camera learnt before anything is reported
    model: str = Field(default="google/owlv2-base-patch16-ensemble", min_length=1)  # "owl": a hub id or a folder
    phrases: list[str] = Field(default=["person", "car"], min_length=1, max_length=MAX_PHRASES)  # "owl": what to find
    score_threshold: float = Field(default=0.1, ge=0, le=1)  # "owl": least score of a detection
    nms_iou: float = Field(default=0.3, gt=0, le=1)  # "owl": a box overlapping a better one of its class more goes
    max_detections: int = Field(default=100, ge=1, le=10000)  # "owl": most detections per frame, the best kept

    @field_validator("phrases")
    @classmethod
    def _phrases_distinct(cls, phrases: list[str]) -> list[str]:
        # a phrase's index is its class id: a blank one finds nothing, a repeated one splits a class in two
        if any(not phrase.strip() for phrase in phrases):
            raise ValueError("a phrase must not be blank")
        repeated = sorted({phrase for phrase in phrases if phrases.count(phrase) > 1})
        if repeated:
            raise ValueError(f"phrases must be distinct, {repeated} repeated")
        return phrases

    @field_validator("max_area")
    @classmethod
    def _areas_in_order(cls, value: float, info: ValidationInfo) -> float:
        if "min_area" in info.data and value < info.data["min_area"]:
            raise ValueError(f"must be at least detect.min_area ({info.data['min_area']:g})")
        return value


class TrackConfig(_Section):
    """The multi-object tracker (`pipeline.tracking`): ByteTrack's two stages with appearance (BoT-SORT's fused
    cost) and re-identification of lost tracks. Scores are the detector's; IoU and cosine distances in [0, 1]."""

    low_score: float = Field(default=0.1, ge=0, le=1)  # detections from here to high_score: the IoU-only stage
    high_score: float = Field(default=0.5, ge=0, le=1)  # detections at or above: the first, fused stage
    birth_score: float = Field(default=0.6, ge=0, le=1)  # an unmatched detection at or above starts a track
    confirm_hits: int = Field(default=2, ge=1, le=1000)  # matched detections before a track is reported
    reid_frames: int = Field(default=150, ge=0, le=100000)  # frames a lost track is kept for re-identification
    # frames a lost track is still reported, at its predicted box (a missed detection is not a gap in its track)
    report_lost_frames: int = Field(default=3, ge=0, le=1000)
    iou_gate: float = Field(default=0.2, ge=0, le=1)  # least IoU of a first-stage match
    low_iou_gate: float = Field(default=0.5, ge=0, le=1)  # least IoU of a low-score match (they are less sure)
    appearance_weight: float = Field(default=0.5, ge=0, le=1)  # of the cosine distance in the fused cost
    appearance_gate: float = Field(default=0.4, ge=0, le=2)  # most cosine distance of a match with appearance
    appearance_momentum: float = Field(default=0.9, ge=0, lt=1)  # EMA of a track's appearance: old share
    live: bool = False  # the monitor tracks each camera too, a tracker actor per shard (pipeline.live.tracker)
    # live: each detection's crop embedded by the DINOv2 of `models` (the monitor's extractors', between their
    # batches), for re-identification and the track index (`vigil tracks --similar`); off, that time is saved, the
    # tracks are matched by motion alone and kept out of the index
    appearance: bool = True

    @field_validator("high_score", "birth_score")
    @classmethod
    def _scores_in_order(cls, value: float, info: ValidationInfo) -> float:
        # each score at least the one before it (fields are validated in order; a bad earlier one is absent)
        below = {"high_score": "low_score", "birth_score": "high_score"}[info.field_name]
        if below in info.data and value < info.data[below]:
            raise ValueError(f"must be at least track.{below} ({info.data[below]:g})")
        return value


# A point of a zone or line: x, y in pixels of the frames the tracker is given (after decode.short_side).
PixelPoint = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=2, max_length=2)]


class ZoneConfig(_Section):
    """A polygon zone (`pipeline.tracking.zones`): `polygon` [[x, y], ...], at least 3 points, in order around it."""

    name: str = Field(min_length=1, max_length=100)
    polygon: list[PixelPoint]
    camera: Annotated[str, AfterValidator(check_camera_id)] | None = None  # None: every camera

    @field_validator("polygon")
    @classmethod
    def _a_polygon_has_area(cls, polygon: list[list[float]]) -> list[list[float]]:
        if len(polygon) < 3:
            raise ValueError(f"a polygon needs at least 3 points, got {len(polygon)}")
        # the shoelace formula: twice the signed area, zero when every point lies on one line
        doubled_area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]))
        if abs(doubled_area) < 1e-6:
            raise ValueError("a polygon's points must not all lie on one line")
        return polygon


class LineConfig(_Section):
    """A counting line (`pipeline.tracking.zones`): from `points[0]` to `points[1]`; `direction` says which
    crossings count: from the left side of the line, facing its second point on the picture, to the right, the
    reverse, or both."""

    name: str = Field(min_length=1, max_length=100)
    points: list[PixelPoint] = Field(min_length=2, max_length=2)
    direction: Literal["left_to_right", "right_to_left", "both"] = "both"
    camera: Annotated[str, AfterValidator(check_camera_id)] | None = None  # None: every camera

    @field_validator("points")
    @classmethod
    def _points_distinct(cls, points: list[list[float]]) -> list[list[float]]:
        if points[0] == points[1]:
            raise ValueError("a line needs 2 distinct points")
        return points


class EventsConfig(_Section):
    """Events of tracks in zones and across lines (`pipeline.tracking.TrackEvents`). An object's place is its
    box's `anchor` point: "bottom_center" (its feet, on the ground plane the zones are drawn on) or "center"."""

    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[LineConfig] = Field(default_factory=list)
    dwell_seconds: float = Field(default=30.0, gt=0, le=86400)  # a visit this long gives one "dwell" event
    # pixels past a line the anchor must be before it counts as on that side: jitter on the line is no crossing
    line_margin: float = Field(default=8.0, ge=0, le=10000)
    anchor: Literal["bottom_center", "center"] = "bottom_center"

    @field_validator("zones", "lines")
    @classmethod
    def _names_unique_per_camera(cls, places: list[ZoneConfig] | list[LineConfig]) -> list:
        # two entries clash when they share a name and a camera (an entry without one is on every camera)
        for later, place in enumerate(places):
            for earlier in places[:later]:
                same_camera = None in (earlier.camera, place.camera) or earlier.camera == place.camera
                if earlier.name == place.name and same_camera:
                    raise ValueError(f"the name {place.name!r} is given twice on one camera")
        return places


class StreamSource(_Section):
    camera: Annotated[str, AfterValidator(check_camera_id)]  # the one rule for camera ids (pipeline/cameras.py)
    url: str = Field(min_length=1)  # a file path or a live URL (rtsp://, http://, ...)


class MonitorConfig(_Section):
    """The live monitor: its name (checkpoints), where frames come from, and its pacing."""

    name: str = Field(default="monitor", min_length=1, max_length=100)
    sources: list[StreamSource] = Field(default_factory=list)  # embedded mode; empty: Kafka vigil.frames
    batch_frames: int = Field(default=32, ge=1, le=4096)  # most frames per extractor call, across cameras
    poll_timeout: float = Field(default=0.5, gt=0, le=60)  # the wait for a first frame when none is on hand
    in_flight: int = Field(default=2, ge=1, le=64)  # full batches' worth of frames between decoder and sink
    # extractor actors, each holding up to two batches; auto: one per GPU in the cluster, else one
    extractors: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"
    decoders: int = Field(default=1, ge=1, le=256)  # Kafka decoder actors; decoder i reads the partitions i modulo it
    shards: int = Field(default=1, ge=1, le=256)  # analyzer and sink actors, each holding the cameras that hash to it
    # "null": benchmarking the data plane only. The extractors run no model: fixed unit vectors from each frame's
    # mean colours (pipeline.models.null_encoders), beside random-weight checkpoints only (outputs marked untrained).
    extractor: Literal["models", "null"] = "models"
    checkpoint_every: float = Field(default=2.0, gt=0, le=3600)  # seconds between durable checkpoints
    query_refresh: float = Field(default=5.0, gt=0, le=3600)  # seconds between re-reads of queries/
    summary_every: float = Field(default=0.0, ge=0, le=86400)  # seconds of media time per rolling summary; 0: none


class ServeLimits(_Section):
    """What one request of `vigil serve` may hold; more is a 4xx error saying which limit."""

    body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)  # a request body (an upload's too)
    image_pixels: int = Field(default=40_000_000, ge=1024, le=1_000_000_000)  # an uploaded image, decoded
    query_chars: int = Field(default=1000, ge=1, le=100_000)  # a search phrase
    top_k: int = Field(default=100, ge=1, le=10_000)  # the most results a search asks for


class ServeAutoscaling(_Section):
    """Ray Serve autoscaling bounds of a deployment: replicas between `min_replicas` and `max_replicas`, aiming at
    `target_ongoing_requests` per replica."""

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float = Field(default=2.0, gt=0, le=10_000)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ServeAutoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        return self


class ServeConfig(_Section):
    """`vigil serve`: the HTTP API and web page (a Ray Serve application). Anything but a loopback `host` needs a
    `token` (env VIGIL_SERVE_TOKEN): requests then carry `Authorization: Bearer TOKEN`."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=1, le=65535)
    token: str | None = Field(default=None, min_length=16)  # from the environment, never from a config file in git
    limits: ServeLimits = Field(default_factory=ServeLimits)
    encoder: ServeAutoscaling = Field(default_factory=ServeAutoscaling)  # the text and image encoders
    search: ServeAutoscaling = Field(default_factory=ServeAutoscaling)  # the index's searchers
    batch_max: int = Field(default=16, ge=1, le=1024)  # texts the encoder embeds in one call
    batch_wait: float = Field(default=0.01, ge=0, le=10)  # seconds a text waits for others to batch with it
    index_refresh: float = Field(default=5.0, gt=0, le=3600)  # seconds between a searcher's looks for new rows
    alerts_poll: float = Field(default=1.0, gt=0, le=600)  # seconds between the alert stream's looks at the store


class VigilConfig(_Section):
    store: str = Field(min_length=1)
    models: str = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "int8-compiled"]
    batch_size: int = Field(ge=1, le=4096)
    decode: DecodeConfig
    embed: EmbedConfig
    index: IndexConfig
    search: SearchConfig
    s3: S3Config = Field(default_factory=S3Config)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @model_validator(mode="after")
    def _summary_periods_hold_two_windows(self) -> VigilConfig:
        # A rolling summary is made from the period's clip windows and needs at least two of them.
        every, window = self.monitor.summary_every, self.embed.window
        if 0 < every < 2 * window:
            raise ValueError(
                f"'monitor.summary_every' must be 0 (off) or at least two clip windows "
                f"(2 * embed.window = {2 * window:g} s), got {every:g}"
            )
        return self


# Environment variables and the config keys they set.
ENVIRONMENT = {
    "VIGIL_STORE": "store",
    "VIGIL_MODELS": "models",
    "VIGIL_S3_ENDPOINT": "s3.endpoint",
    "VIGIL_KAFKA_BROKERS": "kafka.brokers",
    "VIGIL_SERVE_TOKEN": "serve.token",
}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set(data: dict, dotted: str, value: Any) -> None:
    """Set a dotted key such as "decode.fps" (a section written as an empty `s3:` counts as missing)."""
    *parents, leaf = dotted.split(".")
    section = data
    for part in parents:
        if section.get(part) is None:
            section[part] = {}
        if not isinstance(section[part], dict):  # a value where a section goes: validation names it
            return
        section = section[part]
    section[leaf] = value


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section type an annotation holds, itself or in a list (`monitor.sources`), if any."""
    if get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, get_args(annotation))), None)


def _key(loc: tuple[int | str, ...]) -> str:
    """The dotted key an error's location names: pydantic follows a key of a union type ("auto" or a bool)
    with a tag per member it tried ("literal['auto']", "bool"), which are no keys."""
    parts, section = [], VigilConfig
    for part in loc:
        if isinstance(part, int):  # an item of a list
            parts.append(str(part))
            continue
        if section is None or part not in section.model_fields:
            break
        parts.append(part)
        section = _model_in(section.model_fields[part].annotation)
    return ".".join(parts)


def _describe(exc: ValidationError, origin: str) -> str:
    # Each problem with what was expected of it: a union's members each give one, said as alternatives.
    problems: dict[str, list[str]] = {}
    given: dict[str, Any] = {}
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems[f"unknown key '{where}'"] = []
        elif not where:  # a rule across keys: its message names them
            problems[str(error.get("ctx", {}).get("error", error["msg"]))] = []
        else:
            key = f"'{_key(error['loc'])}'"
            problems.setdefault(key, []).append(error["msg"])
            given[key] = error.get("input")
    return f"{origin}: " + "; ".join(
        f"{problem}: {_alternatives(expected)} (got {_shown(given[problem])})" if expected else problem
        for problem, expected in problems.items()
    )


def _shown(value: Any, limit: int = 60) -> str:
    """A value as an error quotes it: its repr, cut when long (the error stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _alternatives(messages: list[str]) -> str:
    """["Input should be 'auto'", "Input should be a valid boolean"] -> "Input should be 'auto' or a valid boolean"."""
    first, *others = messages
    return " or ".join([first, *(message.removeprefix("Input should be ") for message in others)])


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> VigilConfig:
    """Load the packaged defaults, then `path`, then the environment, then `overrides` (flags; None values ignored).

    Overrides use dotted keys for nested values, e.g. {"decode.fps": 2.0}.
    """
    data = _read_yaml(resources.files("configs").joinpath("default.yaml").read_text(), "default.yaml")
    origin = "configuration"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        data = _merge(data, _read_yaml(text, str(path)))
        origin = str(path)
    for variable, key in ENVIRONMENT.items():
        if os.environ.get(variable):
            _set(data, key, os.environ[variable])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(data, dotted, value)
    try:
        return VigilConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
