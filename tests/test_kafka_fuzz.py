"""The `vigil.frames` reader fuzzed: whatever a producer sends (headers malformed, missing, duplicated or
extreme; payloads truncated, mutated or random bytes as H.264 or JPEG), `decode_message` and `decode_record`
return frames within the decoded-pixel bound or raise `MalformedMessage` with a reason, never another
exception, and the poll's cost estimate never fails. The examples are the same every run (`derandomize`); the
whole module takes a few seconds."""

from __future__ import annotations

import resource
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.media.kafka_clients import CREATE_TIME, announced_cost, decode_record
from pipeline.media.kafka_messages import (
    H_CAMERA,
    H_CODEC,
    H_DURATION,
    H_FRAMES,
    H_HEIGHT,
    H_INDEX,
    H_PTS,
    H_SCHEMA,
    H_WALLCLOCK,
    H_WIDTH,
    MalformedMessage,
    Message,
    decode_message,
    frame_message,
    segment_message,
)
from pipeline.records import Frame

MAX_BYTES = 64 * 1024
# Small, so the bound is within reach of the examples: a valid segment below decodes to 12288 pixels.
MAX_PIXELS = 64 * 48 * 6
FUZZ = settings(
    max_examples=500,
    deadline=None,
    database=None,  # nothing written to the working tree
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _valid_messages() -> list[Message]:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    frames = [Frame("cam", 10 + i * 0.25, 40 + i, image, camera="cam") for i, image in enumerate(images)]
    return [frame_message(frames[0], quality=80), segment_message(frames, period=0.25)]


VALID = _valid_messages()

# Header values at and beyond every edge the reader checks, and text that is no number at all.
EDGES = [
    "", "0", "1", "-1", "2", "3", "4", "5", "47", "48", "63", "64", "65", "1000", "1001", "4320", "8192", "8193",
    "99999999999999999999", "9223372036854775807", "1e308", "1e-308", "1e999", "-1e10", "nan", "inf", "-0", "0.25",
    "1.5", " 1", "1 ", "0x10", "1_000", "١", "jpeg", "h264/mpegts", "png", "cam", "cam\n", "\x00",
]  # fmt: skip
NAMES = [H_SCHEMA, H_CAMERA, H_PTS, H_INDEX, H_CODEC, H_WIDTH, H_HEIGHT, H_FRAMES, H_DURATION, H_WALLCLOCK]

header_value = st.one_of(
    st.sampled_from(EDGES).map(str.encode),
    st.binary(max_size=24),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: str(n).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x).encode()),
    st.none(),
)


@st.composite
def headers_of(draw, message: Message) -> list[tuple[str, bytes | None]]:
    """`message`'s headers with up to four changes: one dropped, replaced, given twice, or a stranger added."""
    headers: list[tuple[str, bytes | None]] = list(message.headers)
    for _ in range(draw(st.integers(0, 4))):
        change = draw(st.sampled_from(["drop", "replace", "replace", "twice", "stranger"]))
        at = draw(st.integers(0, max(0, len(headers) - 1)))
        if change == "stranger" or not headers:
            headers.insert(at, (draw(st.sampled_from(NAMES) | st.text(max_size=12)), draw(header_value)))
        elif change == "drop":
            del headers[at]
        elif change == "replace":
            headers[at] = (headers[at][0], draw(header_value))
        else:
            headers.insert(at, (headers[at][0], draw(header_value)))
    return headers


@st.composite
def payloads(draw, message: Message) -> bytes:
    """`message`'s value cut short, with bytes overwritten, or replaced by random bytes shaped like a JPEG or
    MPEG-TS packets, or by nothing."""
    value = message.value
    kind = draw(st.sampled_from(["as is", "cut", "mutate", "random", "jpeg-like", "ts-like", "empty"]))
    if kind == "cut":
        return value[: draw(st.integers(0, len(value)))]
    if kind == "mutate":
        mutated = bytearray(value)
        for _ in range(draw(st.integers(1, 8))):
            mutated[draw(st.integers(0, len(value) - 1))] = draw(st.integers(0, 255))
        return bytes(mutated)
    if kind == "random":
        return draw(st.binary(max_size=3000))
    if kind == "jpeg-like":
        return b"\xff\xd8\xff" + draw(st.binary(max_size=2000)) + b"\xff\xd9"
    if kind == "ts-like":  # MPEG-TS packets: sync byte, then anything
        return b"".join(b"\x47" + draw(st.binary(min_size=187, max_size=187)) for _ in range(draw(st.integers(1, 12))))
    return value if kind == "as is" else b""


keys = st.one_of(st.none(), st.binary(max_size=300), st.text(max_size=80))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_outcome(decode) -> None:
    """`decode()` gives frames within the bound, or raises MalformedMessage with a reason; either way the
    process's peak memory grows by little (measured around the call alone: Hypothesis's own first run, which
    reads the project's sources for constants, takes far more)."""
    before = peak_mb()
    try:
        frames = decode()
    except MalformedMessage as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    finally:
        assert peak_mb() - before < 64  # MB; one frame within the bound is 37 KB
    assert frames and sum(f.image.shape[0] * f.image.shape[1] for f in frames) <= MAX_PIXELS
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
        assert frame.camera == frame.source and np.isfinite(frame.pts)


@st.composite
def messages(draw) -> tuple:
    """(key, headers, value): a valid message with its payload or its headers damaged, or with anything."""
    base = draw(st.sampled_from(VALID))
    focus = draw(st.sampled_from(["payload", "headers", "both", "anything"]))
    key = draw(keys) if focus == "anything" else base.key
    headers = list(base.headers) if focus == "payload" else draw(headers_of(base))
    value = base.value if focus == "headers" else draw(payloads(base))
    return key, headers, value


@FUZZ
@given(messages())
def fuzz_decode_message(message) -> None:
    key, headers, value = message
    check_outcome(lambda: decode_message(key, value, headers, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))


@FUZZ
@given(messages(), st.integers(min_value=-(2**63), max_value=2**63), st.sampled_from([CREATE_TIME, 1]))
def fuzz_decode_record(message, timestamp, timestamp_type) -> None:
    key, headers, value = message
    record = SimpleNamespace(
        topic="vigil.frames",
        partition=0,
        offset=0,
        key=key,
        value=value,
        headers=headers,
        timestamp=timestamp,
        timestamp_type=timestamp_type,
    )
    check_outcome(lambda: decode_record(record, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, short_side=32))
    frames, pixels = announced_cost(record, MAX_PIXELS)
    assert frames >= 0 and 0 <= pixels <= MAX_PIXELS


def test_the_message_decoder_returns_bounded_frames_or_a_reason():
    assert all(len(decode_message(m.key, m.value, m.headers, max_pixels=MAX_PIXELS)) for m in VALID)
    fuzz_decode_message()


def test_the_record_decoder_returns_bounded_frames_or_a_reason():
    fuzz_decode_record()


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.binary(max_size=4), max_size=3)))
def test_headers_that_are_no_list_of_pairs_are_malformed(headers):
    check_outcome(lambda: decode_message(b"cam", VALID[0].value, headers, max_pixels=MAX_PIXELS))
