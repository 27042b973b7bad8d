import pytest

from pipeline.config import ConfigError, load_config


def test_packaged_defaults_load_and_validate():
    config = load_config()
    assert config.store == "./vigil-data"
    assert config.models == "default"
    assert config.decode.fps == 1.0 and config.embed.window == 2.0
    assert config.index.kind == "auto"


def test_file_then_environment_then_flags(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("store: /from/file\ndecode:\n  fps: 3\nindex:\n  kind: hnsw\n")
    monkeypatch.setenv("VIGIL_STORE", "/from/env")
    monkeypatch.setenv("VIGIL_MODELS", "tiny")
    config = load_config(path, {"decode.fps": 5.0, "embed.window": None})
    assert config.store == "/from/env"
    assert config.models == "tiny"
    assert config.decode.fps == 5.0
    assert config.decode.backend == "pyav"  # untouched keys keep their defaults
    assert config.index.kind == "hnsw"
    assert load_config(path, {"store": "/from/flag"}).store == "/from/flag"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  fsp: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'decode.fsp'"):
        load_config(path)


def test_wrong_value_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  fps: -1\n")
    with pytest.raises(ConfigError, match=r"'decode.fps'.*greater than 0"):
        load_config(path)
    with pytest.raises(ConfigError, match="'index.kind'"):
        load_config(None, {"index.kind": "ivf-magic"})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_rolling_summaries_are_off_by_default_and_need_two_clip_windows():
    assert load_config().monitor.summary_every == 0
    assert load_config(None, {"monitor.summary_every": 600}).monitor.summary_every == 600
    with pytest.raises(ConfigError, match=r"'monitor.summary_every' must be 0 \(off\) or at least two clip windows"):
        load_config(None, {"monitor.summary_every": 3})
    with pytest.raises(ConfigError, match="'monitor.summary_every'"):
        load_config(None, {"monitor.summary_every": -1})


def test_short_side_is_a_size_or_zero_for_the_sources_own():
    assert load_config(None, {"decode.short_side": 0}).decode.short_side == 0
    assert load_config(None, {"decode.short_side": 480}).decode.short_side == 480
    with pytest.raises(ConfigError, match="'decode.short_side"):
        load_config(None, {"decode.short_side": 16})


def test_sampling_settings_leave_out_what_changes_only_speed():
    decode = load_config(None, {"decode.threads": 7}).decode
    assert decode.sampling() == load_config().decode.sampling()
    # the decode shortcuts change which frame a sample lands on, or its pixels: they are sampling settings
    assert set(decode.sampling()) == {
        "backend",
        "fps",
        "short_side",
        "keyframes_only",
        "still_threshold",
        "skip_unsampled_gops",
        "skip_nonref_frames",
        "skip_loop_filter",
    }


def test_s3_and_kafka_back_off_alike():
    config = load_config(
        None, {"s3.backoff": 0.5, "s3.backoff_max": 3.0, "kafka.backoff": 0.5, "kafka.backoff_max": 3.0}
    )
    assert [config.s3.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert [config.kafka.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("yaml_text", "key", "given"),
    [
        ("decode:\n  fps: true\n", "decode.fps", "True"),
        ("decode:\n  threads: false\n", "decode.threads", "False"),
        ('decode:\n  keyframes_only: "yes"\n', "decode.keyframes_only", "'yes'"),
        ('batch_size: "16"\n', "batch_size", "'16'"),
        ("search:\n  top_k: 3.0\n", "search.top_k", "3.0"),
        ("index:\n  background: 1\n", "index.background", "1"),
        ("store: 5\n", "store", "5"),
        ("monitor:\n  sources: [{camera: gate, url: 7}]\n", "monitor.sources.0.url", "7"),
    ],
)
def test_values_of_the_wrong_type_are_refused_not_converted(tmp_path, yaml_text, key, given):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: '{key}': Input should be") and message.endswith(f"(got {given})")
    assert "\n" not in message


def test_an_int_stands_for_a_float_and_flags_keep_their_types(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("decode:\n  fps: 2\n  keyframes_only: false\nembed:\n  window: 4\nsearch:\n  merge_drop: 0\n")
    config = load_config(path)
    assert config.decode.fps == 2.0 and isinstance(config.decode.fps, float)
    assert config.embed.window == 4.0 and config.search.merge_drop == 0.0 and config.decode.keyframes_only is False
    monkeypatch.setenv("VIGIL_STORE", "/from/env")
    monkeypatch.setenv("VIGIL_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("VIGIL_KAFKA_BROKERS", "127.0.0.1:9092")
    flags = {"decode.fps": 2, "batch_size": 8, "search.top_k": 3, "decode.backend": "decord", "embed.window": 1.5}
    config = load_config(path, flags)
    assert (config.store, config.s3.endpoint, config.kafka.brokers) == (
        "/from/env",
        "http://127.0.0.1:9000",
        "127.0.0.1:9092",
    )
    assert (config.decode.fps, config.batch_size, config.search.top_k, config.embed.window) == (2.0, 8, 3, 1.5)


def test_a_union_value_names_every_alternative_once():
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"monitor.extractors": "many", "decode.short_side": 16})
    message = str(caught.value)
    assert "'monitor.extractors': Input should be a valid integer or 'auto' (got 'many')" in message
    assert "'decode.short_side': Input should be greater than or equal to 32 or 0 (got 16)" in message
    assert "literal" not in message and "constrained-int" not in message


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("store: /vidéos\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"config file {path} is not UTF-8 text \(byte 0xe9 at offset 11\)"):
        load_config(path)


def test_bad_yaml_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("decode:\n  fps: [1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid YAML at line 3, column 1: ") and "\n" not in str(
        caught.value
    )


def test_a_value_where_a_section_goes_is_named_even_with_flags_for_that_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decode: fast\n")
    with pytest.raises(ConfigError, match=r"'decode': Input should be a valid dictionary"):
        load_config(path, {"decode.fps": 2.0})


@pytest.mark.parametrize("camera", ["x" * 300, "gate\x1b[31m", "gate\nlobby"])
def test_a_configured_camera_id_follows_the_one_rule_in_one_line(tmp_path, camera):
    path = tmp_path / "c.yaml"
    path.write_text(f"monitor:\n  sources:\n    - camera: {camera!r}\n      url: a.mp4\n".replace("'", '"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "monitor.sources" in message and "camera" in message and "\n" not in message and len(message) < 400
