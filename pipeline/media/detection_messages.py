"""The `vigil.detections` wire format: one camera frame's detections from a detector of the user's own, so
vigil can track objects it did not detect itself. docs/DETECTIONS.md documents it for users.

Message, version 1 (JSON: no pickle, nothing executable):

    key      camera id (UTF-8, the rule of `pipeline.cameras`): one camera stays in one partition, in order
    value    a UTF-8 JSON object:
             v               1
             camera          the camera id again; must equal the key
             pts             media time of the frame, seconds          } at least one of the two;
             wallclock       when the camera took it, Unix seconds     } without pts, wallclock stands in for it
             frame_index     the frame's index in the camera's stream, an integer >= 0
             width, height   the picture the boxes are in, pixels (1..MAX_SIDE)
             classes         optional: the class names, class id i being classes[i]
             appearance_dim  the length of every appearance vector; given, every detection carries one
             detections      a list (maybe empty) of {"box": [x1, y1, x2, y2] in pixels, "score": 0..1,
                             "class": an id, or a name of `classes` (absent: 0),
                             "appearance": a list of floats, or base64 of little-endian float32}
    headers  content-type: application/json, for tools that show topics; readers go by the value alone

Fields this version does not know are ignored. `decode_detection_message` checks the rest (types, finite
numbers, x1 < x2 and y1 < y2, boxes inside the picture but for BOX_TOLERANCE, scores in [0, 1], appearance
dimensions, the size limit) and raises `DetectionMessageError(reason)`, the reason one line naming the field.
Appearance vectors are scaled to unit length as they are read (the tracker compares them by dot products).

`DetectionReader` reads them from a `FrameConsumer`, each camera's frames in order, and skips, counts and
(given a `DeadLetters`) dead-letters the bad ones; `send_detections` is the producer side. kafka-python is
imported only inside the clients (ARCHITECTURE.md, layering).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from pipeline.cameras import check_camera_id
from pipeline.media.kafka_clients import CREATE_TIME, DeadLetters, FrameConsumer, MessageProducer, next_offsets
from pipeline.media.kafka_messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_PIXELS,
    MAX_PTS,
    MAX_SIDE,
    Message,
    value_problem,
)
from pipeline.records import DetectionFrame, Detections

log = logging.getLogger(__name__)

DETECTIONS_TOPIC = "vigil.detections"
SCHEMA_VERSION = 1
MAX_DETECTIONS = 10_000  # per frame: the bound of the built-in detectors' `detect.max_detections`
MAX_CLASSES = 10_000
MAX_CLASS_NAME = 256  # characters
MAX_CLASS_ID = 2**31 - 1  # class ids are int32
MAX_APPEARANCE_DIM = 4096
# How far past the picture's edge (a fraction of its side) a box may reach; it is clipped to the picture.
# Detectors regress boxes a little beyond the border for objects the border cuts.
BOX_TOLERANCE = 0.05
CONTENT_TYPE = ("content-type", b"application/json")

_BINARY = (bytes, bytearray, memoryview)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class DetectionMessageError(ValueError):
    """A message that is not a valid `vigil.detections` message; `reason` says what is wrong, in one line."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------------------------- writing


def _decimals(values: np.ndarray) -> list:
    """float32 values as the shortest decimals that read back as the same float32 values (nested like them)."""
    return np.asarray(values, dtype=np.float32).astype(str).astype(np.float64).tolist()


def detection_message(
    camera: str,
    pts: float | None,
    detections: Detections,
    *,
    width: int,
    height: int,
    frame_index: int,
    wallclock: float | None = None,
    classes: Sequence[str] = (),
    appearance_format: Literal["base64", "list"] = "base64",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """One frame's detections as a `vigil.detections` message (key, value and headers). `pts` may be None
    when `wallclock` is given. With `classes`, detections name their class; without, they give its id.
    Appearance vectors go as base64 (compact, exact) or as lists of floats (`appearance_format`). Raises
    ValueError for anything a reader would refuse (`DetectionMessageError` for the message: it is read back)."""
    names = list(classes)
    boxes, scores = _decimals(detections.boxes), _decimals(detections.scores)
    appearance = detections.appearance
    items: list[dict[str, Any]] = []
    for row, class_id in enumerate(detections.class_ids.tolist()):
        item: dict[str, Any] = {"box": boxes[row], "score": scores[row]}
        item["class"] = names[class_id] if 0 <= class_id < len(names) else class_id
        if appearance is not None:
            vector = appearance[row]
            if appearance_format == "base64":
                item["appearance"] = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                item["appearance"] = _decimals(vector)
        items.append(item)
    body: dict[str, Any] = {"v": SCHEMA_VERSION, "camera": camera}
    if pts is not None:
        body["pts"] = float(pts)
    if wallclock is not None:
        body["wallclock"] = float(wallclock)
    body |= {"frame_index": int(frame_index), "width": int(width), "height": int(height)}
    if names:
        body["classes"] = names
    if appearance is not None:
        body["appearance_dim"] = int(appearance.shape[1])
    body["detections"] = items
    value = json.dumps(body, separators=(",", ":")).encode()
    message = Message(check_camera_id(camera).encode(), value, [CONTENT_TYPE])
    _read(message.key, message.value, max_bytes)
    return message


def send_detections(
    producer: MessageProducer,
    frame: DetectionFrame,
    *,
    topic: str = DETECTIONS_TOPIC,
    appearance_format: Literal["base64", "list"] = "base64",
):
    """Queue one frame's detections on `topic`, in its camera's partition; returns kafka-python's future
    (`producer.flush()` waits for every delivery). Raises `DetectionMessageError` for a frame a reader would
    refuse, over the producer's `max_message_bytes` included."""
    message = detection_message(
        frame.camera,
        frame.pts,
        frame.detections,
        width=frame.width,
        height=frame.height,
        frame_index=frame.index,
        wallclock=frame.wallclock,
        classes=frame.classes,
        appearance_format=appearance_format,
        max_bytes=producer.settings.max_message_bytes,
    )
    return producer.send(topic, message)


# --------------------------------------------------------------------------------------------- reading


def _shown(value: Any) -> str:
    """A value for an error message: short, one line."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    # bool is an int to Python, but `true` is no number in JSON
    if type(value) not in (int, float):
        raise DetectionMessageError(f"{name} is not a number: {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and lo <= number <= hi):
        raise DetectionMessageError(f"{name} = {_shown(value)} is not a finite number in [{lo}, {hi}]")
    return number


def _integer(value: Any, name: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise DetectionMessageError(f"{name} is not an integer: {_shown(value)}")
    if not lo <= value <= hi:
        raise DetectionMessageError(f"{name} = {_shown(value)} is out of range [{lo}, {hi}]")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a field comes twice (which one counts would be the parser's whim)."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise DetectionMessageError(f"field {_shown(twice)} is given twice")
    return body


def _key_camera(key: Any) -> str:
    if key is None:
        raise DetectionMessageError("missing key (the camera id)")
    if not isinstance(key, (str, *_BINARY)):
        raise DetectionMessageError(f"key is {type(key).__name__}, not text")
    try:
        text = key if isinstance(key, str) else bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        raise DetectionMessageError("key is not UTF-8 text") from None
    try:
        return check_camera_id(text)
    except ValueError as exc:
        raise DetectionMessageError(f"key: {exc}") from None


def _json_body(value: Any, max_bytes: int) -> dict[str, Any]:
    if problem := value_problem(value, max_bytes):
        raise DetectionMessageError(problem)
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise DetectionMessageError("value is not UTF-8 text") from None
    try:
        body = json.loads(text, object_pairs_hook=_object)
    except DetectionMessageError:
        raise
    except RecursionError:
        raise DetectionMessageError("value nests too deeply for a vigil.detections message") from None
    except ValueError as exc:  # JSONDecodeError, and integers of thousands of digits
        raise DetectionMessageError(f"value is not JSON: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(body, dict):
        raise DetectionMessageError(f"value is {_shown(body)}, not a JSON object")
    return body


def _classes(body: dict[str, Any]) -> tuple[str, ...]:
    names = body.get("classes", [])
    if not isinstance(names, list):
        raise DetectionMessageError(f"classes is not a list: {_shown(names)}")
    if len(names) > MAX_CLASSES:
        raise DetectionMessageError(f"classes has {len(names)} names, more than {MAX_CLASSES}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CLASS_NAME:
            raise DetectionMessageError(
                f"classes[{i}] is not a name (text, not blank, at most {MAX_CLASS_NAME} characters): {_shown(name)}"
            )
    if len(set(names)) != len(names):
        seen: set[str] = set()
        again = next(i for i, name in enumerate(names) if name in seen or seen.add(name))
        raise DetectionMessageError(f"classes[{again}] repeats the name {_shown(names[again])}")
    return tuple(names)


def _box(value: Any, name: str, width: int, height: int) -> list[float]:
    if not isinstance(value, list) or len(value) != 4:
        raise DetectionMessageError(f"{name} is not a list of 4 numbers [x1, y1, x2, y2]: {_shown(value)}")
    x1, y1, x2, y2 = (_number(v, f"{name}[{i}]", -math.inf, math.inf) for i, v in enumerate(value))
    for i, (coordinate, side) in enumerate(zip((x1, y1, x2, y2), (width, height, width, height))):
        if not -BOX_TOLERANCE * side <= coordinate <= (1 + BOX_TOLERANCE) * side:
            raise DetectionMessageError(
                f"{name}[{i}] = {coordinate:g} is outside the {width}x{height} picture "
                f"(by more than {BOX_TOLERANCE:.0%} of its side)"
            )
    if not x1 < x2:
        raise DetectionMessageError(f"{name}: x1 ({x1:g}) is not less than x2 ({x2:g})")
    if not y1 < y2:
        raise DetectionMessageError(f"{name}: y1 ({y1:g}) is not less than y2 ({y2:g})")
    clipped = np.clip(np.array([x1, y1, x2, y2]), 0, [width, height, width, height]).astype(np.float32)
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise DetectionMessageError(f"{name} lies outside the {width}x{height} picture")
    return clipped.tolist()


def _class_id(value: Any, name: str, classes: tuple[str, ...]) -> int:
    if isinstance(value, str):
        if not classes:
            raise DetectionMessageError(f"{name} {_shown(value)} is a name, but the message has no 'classes' list")
        try:
            return classes.index(value)
        except ValueError:
            raise DetectionMessageError(f"{name} {_shown(value)} is not one of the message's classes") from None
    return _integer(value, name, 0, len(classes) - 1 if classes else MAX_CLASS_ID)


def _appearance(value: Any, name: str, dim: int) -> np.ndarray:
    """One appearance vector, scaled to unit length."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DetectionMessageError(f"{name} is not base64") from None
        if len(raw) != 4 * dim:
            raise DetectionMessageError(
                f"{name} holds {len(raw)} bytes, not the {4 * dim} of {dim} float32 values (appearance_dim)"
            )
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    elif isinstance(value, list):
        if len(value) != dim:
            raise DetectionMessageError(f"{name} has {len(value)} values, not appearance_dim = {dim}")
        vector = np.array([_number(v, f"{name}[{i}]", -_FLOAT32_MAX, _FLOAT32_MAX) for i, v in enumerate(value)])
    else:
        raise DetectionMessageError(f"{name} is neither a list of numbers nor base64 float32: {_shown(value)}")
    if not np.isfinite(vector).all():
        raise DetectionMessageError(f"{name} holds a value that is not a finite number")
    norm = float(np.sqrt(vector @ vector))
    if norm == 0:
        raise DetectionMessageError(f"{name} is a zero vector (it has no direction to compare)")
    return vector / norm


def _detections(body: dict[str, Any], width: int, height: int, classes: tuple[str, ...]) -> Detections:
    items = body.get("detections")
    if items is None:
        raise DetectionMessageError("missing field 'detections' (a list, empty when nothing was found)")
    if not isinstance(items, list):
        raise DetectionMessageError(f"detections is not a list: {_shown(items)}")
    if len(items) > MAX_DETECTIONS:
        raise DetectionMessageError(f"detections has {len(items)} entries, more than {MAX_DETECTIONS}")
    dim = body.get("appearance_dim")
    if dim is not None:
        dim = _integer(dim, "appearance_dim", 1, MAX_APPEARANCE_DIM)
    boxes, scores, class_ids, vectors = [], [], [], []
    for i, item in enumerate(items):
        name = f"detections[{i}]"
        if not isinstance(item, dict):
            raise DetectionMessageError(f"{name} is not an object: {_shown(item)}")
        if "box" not in item or "score" not in item:
            raise DetectionMessageError(f"{name} misses field '{'box' if 'box' not in item else 'score'}'")
        boxes.append(_box(item["box"], f"{name}.box", width, height))
        scores.append(_number(item["score"], f"{name}.score", 0.0, 1.0))
        class_ids.append(_class_id(item.get("class", 0), f"{name}.class", classes))
        vector = item.get("appearance")
        if (vector is None) != (dim is None):
            raise DetectionMessageError(
                f"{name}.appearance is given without the message's appearance_dim"
                if dim is None
                else f"{name} has no appearance, but appearance_dim says every detection carries one"
            )
        if dim is not None:
            vectors.append(_appearance(vector, f"{name}.appearance", dim))
    if not items:
        return Detections.empty(dim)
    appearance = None if dim is None else np.array(vectors, dtype=np.float32)
    return Detections(np.array(boxes), np.array(scores), np.array(class_ids), appearance)


def _read(key: Any, value: Any, max_bytes: int, timestamp_ms: int | None = None) -> DetectionFrame:
    camera = _key_camera(key)
    body = _json_body(value, max_bytes)
    if "v" not in body:
        raise DetectionMessageError("missing field 'v' (not a vigil.detections message)")
    if type(body["v"]) is not int or body["v"] != SCHEMA_VERSION:
        raise DetectionMessageError(f"unsupported version v = {_shown(body['v'])} (this reader knows {SCHEMA_VERSION})")
    if body.get("camera") != camera:
        raise DetectionMessageError(f"camera {_shown(body.get('camera'))} differs from the key {_shown(camera)}")
    pts = body.get("pts")
    wallclock = body.get("wallclock")
    if pts is None and wallclock is None:
        raise DetectionMessageError("missing field 'pts' or 'wallclock' (the frame's time: at least one)")
    if wallclock is not None:
        wallclock = _number(wallclock, "wallclock", 0.0, MAX_PTS)
    pts = wallclock if pts is None else _number(pts, "pts", -MAX_PTS, MAX_PTS)
    if wallclock is None and timestamp_ms is not None and timestamp_ms > 0:
        wallclock = timestamp_ms / 1000
    for field in ("frame_index", "width", "height"):
        if field not in body:
            raise DetectionMessageError(f"missing field '{field}'")
    index = _integer(body["frame_index"], "frame_index", 0, 2**63 - 1)
    width = _integer(body["width"], "width", 1, MAX_SIDE)
    height = _integer(body["height"], "height", 1, MAX_SIDE)
    if width * height > MAX_PIXELS:
        raise DetectionMessageError(f"picture of {width}x{height} exceeds {MAX_PIXELS} pixels")
    classes = _classes(body)
    detections = _detections(body, width, height, classes)
    return DetectionFrame(camera, pts, index, width, height, detections, classes, wallclock)


def decode_detection_message(record: Any, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> DetectionFrame:
    """The frame of one consumed `vigil.detections` record (kafka-python's, or anything with `key` and `value`
    and maybe `timestamp` and `timestamp_type`). Without a `wallclock` field, the record's CreateTime dates the
    frame. Boxes come clipped to the picture, appearance vectors at unit length. Raises `DetectionMessageError`
    for anything wrong, with a one-line reason naming the field."""
    created = getattr(record, "timestamp", None) if getattr(record, "timestamp_type", None) == CREATE_TIME else None
    return _read(getattr(record, "key", None), getattr(record, "value", None), max_bytes, created)


class DetectionReader:
    """Detection frames from a `FrameConsumer` of `vigil.detections`, each camera's in order (a camera's messages
    share a partition). A bad message, one `decode_detection_message` refuses or one whose pts is not after its
    camera's previous frame, is skipped and counted (`malformed`, `reasons`); it goes to the DLQ when
    `dead_letters` is given, else to the log. It never stops the reader."""

    def __init__(
        self, consumer: FrameConsumer, dead_letters: DeadLetters | None = None, *, max_bytes: int | None = None
    ):
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.max_bytes = consumer.settings.max_message_bytes if max_bytes is None else max_bytes
        self.messages = 0  # records read
        self.malformed = 0  # records skipped
        self.reasons: Counter[str] = Counter()
        self._last_pts: dict[str, float] = {}

    def poll(
        self, timeout: float = 1.0, max_records: int | None = None
    ) -> tuple[list[DetectionFrame], dict[tuple[str, int], int]]:
        """The good frames of the records fetched within `timeout` seconds (partition by partition, in order) and
        `{(topic, partition): next offset}` after those records, to commit once the frames' outputs are durable;
        the dead letters among them are durable when this returns."""
        records = self.consumer.poll(timeout, max_records)
        frames: list[DetectionFrame] = []
        for record in records:
            self.messages += 1
            try:
                frames.append(self._in_order(decode_detection_message(record, max_bytes=self.max_bytes)))
            except DetectionMessageError as exc:
                self._skip(record, exc.reason)
        if self.dead_letters is not None:
            self.dead_letters.flush()  # dead letters are durable before their offsets can be committed
        return frames, next_offsets(records)

    def frames(
        self,
        *,
        idle_timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
        poll_timeout: float = 0.5,
    ) -> Iterator[DetectionFrame]:
        """Every good frame, in order, until `idle_timeout` seconds pass without a record or `stop()` is true. A
        poll's offsets are committed (under the consumer's group_id, if any) when the caller asks for the frame
        after the poll's last: it has handled them by then."""
        last_record = time.monotonic()
        while stop is None or not stop():
            frames, offsets = self.poll(poll_timeout)
            if not offsets:
                if idle_timeout is not None and time.monotonic() - last_record >= idle_timeout:
                    return
                continue
            last_record = time.monotonic()
            yield from frames
            self.consumer.commit(offsets)

    def _in_order(self, frame: DetectionFrame) -> DetectionFrame:
        # a tracker's motion model steps forward in time: a frame from its camera's past would corrupt it
        last = self._last_pts.get(frame.camera)
        if last is not None and frame.pts <= last:
            raise DetectionMessageError(
                f"pts {frame.pts:g} is not after the previous frame's ({last:g}) of camera {_shown(frame.camera)}"
            )
        self._last_pts[frame.camera] = frame.pts
        return frame

    def _skip(self, record: Any, reason: str) -> None:
        self.malformed += 1
        self.reasons[reason] += 1
        if self.dead_letters is not None:
            self.dead_letters.publish(record, reason)  # which logs it
        else:
            log.warning("skipped %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason)
