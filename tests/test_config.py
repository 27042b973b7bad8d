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
    assert set(decode.sampling()) == {"backend", "fps", "short_side", "keyframes_only", "still_threshold"}


def test_s3_and_kafka_back_off_alike():
    config = load_config(
        None, {"s3.backoff": 0.5, "s3.backoff_max": 3.0, "kafka.backoff": 0.5, "kafka.backoff_max": 3.0}
    )
    assert [config.s3.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert [config.kafka.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
