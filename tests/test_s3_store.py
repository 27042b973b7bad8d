"""S3Store against a real S3 service (SeaweedFS on loopback): the LocalStore contract, settings and
secrets, rejected credentials, outages survived by retry, and the CLI with --store s3://bucket/prefix."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.config import ConfigError, S3Config, load_config
from pipeline.search.index import ClipIndex
from pipeline.search.manifest import read_newest
from pipeline.storage.clips import read_clip, write_clip
from pipeline.storage.store import LocalStore, S3Store, StoreError, open_store
from tests.servers import TcpProxy, wait_until
from tests.test_store import _clip

BUCKET = "vigil-test"
VIGIL = str(Path(sys.executable).parent / "vigil")
# Fast retries for tests that want the outage to be survived, and a short leash for those that want it not to be.
PATIENT = S3Config(attempts=60, backoff=0.05, backoff_max=0.25, deadline=20, connect_timeout=1, read_timeout=5)
IMPATIENT = S3Config(attempts=3, backoff=0.1, backoff_max=0.2, deadline=5, connect_timeout=1, read_timeout=2)


def _unique(name: str = "t") -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The environment a user sets: VIGIL_S3_ENDPOINT plus the AWS credentials (the only place they live)."""
    for variable, value in s3_server.env().items():
        monkeypatch.setenv(variable, value)
    for variable in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    return s3_server


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same contract tests run against both stores."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return open_store(f"s3://{BUCKET}/{_unique()}")


@pytest.fixture
def proxy(s3_server):
    with TcpProxy(s3_server.port) as proxy:
        yield proxy


def _secrets(server) -> list[str]:
    return [server.secret_key, "wrong-secret-Xy77"]


# ---------------------------------------------------------------- the ObjectStore contract, both stores


def test_put_get_list_delete(store):
    store.put("a/b/c.bin", b"one")
    store.put("a/x.bin", b"two")
    assert store.get("a/b/c.bin") == b"one"
    assert list(store.list("a/")) == ["a/b/c.bin", "a/x.bin"]
    assert store.exists("a/x.bin") and not store.exists("a/y.bin")
    assert store.delete_prefix("a/b/") == 1
    assert list(store.list()) == ["a/x.bin"]
    with pytest.raises(StoreError, match="no object"):
        store.get("a/b/c.bin")
    store.delete("a/x.bin")
    store.delete("a/x.bin")  # deleting what is gone is fine
    assert list(store.list()) == [] and store.delete_prefix("a/") == 0


def test_list_is_sorted_and_filters_by_string_prefix(store):
    keys = ["b/2.bin", "a/9.bin", "a/10.bin", "ab/x.json", "a/1.bin"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a/")) == ["a/1.bin", "a/10.bin", "a/9.bin"]
    assert list(store.list("a")) == ["a/1.bin", "a/10.bin", "a/9.bin", "ab/x.json"]
    assert list(store.list("zz/")) == []


def test_json_and_rewrites(store):
    store.put_json("sources/s.json", {"b": 1, "a": [1, 2]})
    assert store.get_json("sources/s.json") == {"a": [1, 2], "b": 1}
    store.put("k.bin", b"data")
    store.put("k.bin", b"data")
    assert list(store.list("k")) == ["k.bin"] and store.get("k.bin") == b"data"
    store.put("k.bin", b"new")
    assert store.get("k.bin") == b"new"
    store.put("empty.bin", b"")
    assert store.get("empty.bin") == b""


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "sp ace", ""])
def test_malformed_keys_are_refused(store, key):
    with pytest.raises(StoreError, match="malformed"):
        store.put(key, b"x")
    with pytest.raises(StoreError, match="malformed"):
        store.get(key)


def test_create_writes_once(store):
    assert store.create("locks/a.json", b"first") is True
    assert store.create("locks/a.json", b"second") is False
    assert store.create("locks/a.json", b"first") is False  # the same bytes again: still not this call's object
    assert store.get("locks/a.json") == b"first" and list(store.list()) == ["locks/a.json"]
    store.put("p.bin", b"put")
    assert store.create("p.bin", b"other") is False and store.get("p.bin") == b"put"
    store.delete("locks/a.json")
    assert store.create("locks/a.json", b"again") is True and store.get("locks/a.json") == b"again"
    with pytest.raises(StoreError, match="malformed"):
        store.create("a//b", b"x")


def test_racing_creates_have_exactly_one_winner(store):
    threads, rounds = 8, 4
    barrier = threading.Barrier(threads)
    results: dict[tuple[int, int], bool | BaseException] = {}

    def creator(writer: int) -> None:
        for round_ in range(rounds):
            barrier.wait(timeout=60)
            try:
                results[round_, writer] = store.create(f"race/{round_}.bin", f"writer-{writer}".encode() * 500)
            except BaseException as exc:  # reported below, not lost in the thread
                results[round_, writer] = exc

    workers = [threading.Thread(target=creator, args=(writer,)) for writer in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert len(results) == threads * rounds
    assert all(isinstance(won, bool) for won in results.values()), results
    for round_ in range(rounds):
        winners = [writer for writer in range(threads) if results[round_, writer]]
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert store.get(f"race/{round_}.bin") == f"writer-{winners[0]}".encode() * 500
    assert list(store.list()) == [f"race/{round_}.bin" for round_ in range(rounds)]


# ---------------------------------------------------------------- S3 specifics


def test_create_sends_a_condition_not_metadata(s3_env):
    bucket = _unique("vigil-create")
    store = open_store(f"s3://{bucket}/p")
    assert store.create("a/b.json", b"{}") is True  # the first write creates the bucket, as put does
    assert store.create("a/b.json", b"[]") is False
    stat = s3_env.client().stat_object(bucket, "p/a/b.json")
    assert stat.content_type == "application/json"
    assert not any("none-match" in name.lower() for name in stat.metadata)  # a real If-None-Match, not x-amz-meta


def test_create_retried_after_a_lost_answer(s3_env, monkeypatch):
    """The PUT succeeds but its answer is lost: the retry meets a 412 for its own object and still wins;
    a 412 for another writer's object, met on a retry, stays a loss."""
    import urllib3

    store = open_store(f"s3://{BUCKET}/{_unique('lost')}", s3=PATIENT)
    client = store._minio()
    real_put, calls = client._put_object, []

    def lost_answer(bucket, name, data, headers=None, **kwargs):
        calls.append(name)
        if len(calls) == 1:  # our write lands, its answer does not
            real_put(bucket, name, data, headers=headers, **kwargs)
            raise urllib3.exceptions.ProtocolError("connection reset before the answer")
        if len(calls) == 3:  # another writer gets in before our first attempt, whose answer is lost
            real_put(bucket, name, b"theirs", headers=headers, **kwargs)
            raise urllib3.exceptions.ProtocolError("connection reset before the answer")
        return real_put(bucket, name, data, headers=headers, **kwargs)

    monkeypatch.setattr(client, "_put_object", lost_answer)
    assert store.create("mine.bin", b"token-1") is True and store.get("mine.bin") == b"token-1"
    assert len(calls) == 2  # the retry really met the 412
    assert store.create("theirs.bin", b"token-2") is False and store.get("theirs.bin") == b"theirs"
    assert len(calls) == 4


def test_url_locate_and_layout(s3_env):
    store = open_store(f"s3://{BUCKET}/{_unique('lay')}/nested/")
    assert isinstance(store, S3Store) and store.url == f"s3://{BUCKET}/{store.prefix}"
    assert store.prefix.endswith("/nested")
    key = write_clip(store, _clip())
    assert store.locate(key) == f"{store.url}/clips/cam-1/000000004000.npz"
    # the object sits under the prefix in the bucket, with the LocalStore key layout
    client = s3_env.client()
    names = [o.object_name for o in client.list_objects(BUCKET, prefix=store.prefix + "/", recursive=True)]
    assert names == [f"{store.prefix}/clips/cam-1/000000004000.npz"]
    assert open_store(f"s3://{BUCKET}").url == f"s3://{BUCKET}" and open_store(f"s3://{BUCKET}/").prefix == ""


def test_prefix_isolation(s3_env):
    base = _unique("iso")
    one, two, root = (
        open_store(f"s3://{BUCKET}/{base}"),
        open_store(f"s3://{BUCKET}/{base}2"),
        open_store(f"s3://{BUCKET}"),
    )
    one.put("k/x.bin", b"one")
    two.put("k/x.bin", b"two")
    assert (one.get("k/x.bin"), two.get("k/x.bin")) == (b"one", b"two")
    assert list(one.list()) == ["k/x.bin"] == list(two.list())
    assert list(root.list(f"{base}/")) == [f"{base}/k/x.bin"]
    assert one.delete_prefix("") == 1
    assert not one.exists("k/x.bin") and two.get("k/x.bin") == b"two"


def test_clip_bytes_are_deterministic_and_match_the_local_store(s3_env, tmp_path):
    store = open_store(f"s3://{BUCKET}/{_unique('det')}")
    clip = _clip()
    key = write_clip(store, clip)
    client = s3_env.client()
    etag = client.stat_object(BUCKET, f"{store.prefix}/{key}").etag
    write_clip(store, clip)
    assert client.stat_object(BUCKET, f"{store.prefix}/{key}").etag == etag
    local = LocalStore(tmp_path)
    write_clip(local, clip)
    assert store.get(key) == local.get(key)
    assert read_clip(store, key).keyframe_key == clip.keyframe_key


def test_bucket_is_created_by_the_first_write_only(s3_env):
    bucket = _unique("vigil-new")
    store = open_store(f"s3://{bucket}/p")
    assert list(store.list()) == [] and not store.exists("a.bin")
    with pytest.raises(StoreError, match="no object"):
        store.get("a.bin")
    store.delete("a.bin")
    client = s3_env.client()
    assert not client.bucket_exists(bucket)  # reads never create it
    store.put("a.bin", b"x")
    assert client.bucket_exists(bucket) and store.get("a.bin") == b"x"
    refused = open_store(f"s3://{_unique('vigil-none')}", s3=S3Config(create_bucket=False))
    with pytest.raises(StoreError, match="does not exist"):
        refused.put("a.bin", b"x")


def test_open_store_settings_and_their_errors(s3_env, monkeypatch):
    monkeypatch.delenv("VIGIL_S3_ENDPOINT")
    with pytest.raises(StoreError, match="VIGIL_S3_ENDPOINT"):
        open_store(f"s3://{BUCKET}/x")
    store = open_store(f"s3://{BUCKET}/x", s3=S3Config(endpoint=s3_env.endpoint, region="us-east-1", attempts=2))
    assert (store.endpoint, store.region, store.settings.attempts) == (s3_env.endpoint, "us-east-1", 2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)  # the AWS SDKs' variable works too
    assert open_store(f"s3://{BUCKET}/x").endpoint == s3_env.endpoint
    with pytest.raises(StoreError, match="no credentials, no path") as bad:
        open_store(f"s3://{BUCKET}/x", s3=S3Config(endpoint="http://user:hunter2@127.0.0.1:9"))
    assert "hunter2" not in str(bad.value)
    for endpoint in ("ftp://127.0.0.1:9", "127.0.0.1:9000", "http://127.0.0.1:9/path", "http://127.0.0.1:port"):
        with pytest.raises(StoreError, match="S3 endpoint must"):
            open_store(f"s3://{BUCKET}/x", s3=S3Config(endpoint=endpoint))
    for url in ("s3://Bad_Bucket/x", "s3://ab", "s3://key:hunter2@bucket/x"):
        with pytest.raises(StoreError, match="invalid S3 bucket") as bad:
            open_store(url)
        assert "hunter2" not in str(bad.value)
    with pytest.raises(StoreError, match="malformed prefix"):
        open_store(f"s3://{BUCKET}/a b")
    tls = open_store(f"s3://{BUCKET}/x", s3=S3Config(endpoint=f"https://127.0.0.1:{s3_env.port}", backoff=1.0))
    started = time.monotonic()
    with pytest.raises(StoreError, match="TLS with endpoint https://"):  # the scheme decides TLS; no retrying that
        tls.get("a.bin")
    assert time.monotonic() - started < 1.0
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="incomplete S3 credentials"):
        open_store(f"s3://{BUCKET}/x")


def test_config_s3_section(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_S3_ENDPOINT", raising=False)
    defaults = load_config().s3
    assert defaults.endpoint is None and defaults.attempts >= 1 and defaults.create_bucket is True
    path = tmp_path / "c.yaml"
    path.write_text("store: s3://bucket/prefix\ns3:\n  endpoint: http://127.0.0.1:9000\n  attempts: 2\n")
    config = load_config(path)
    assert (config.store, config.s3.endpoint, config.s3.attempts, config.s3.backoff) == (
        "s3://bucket/prefix", "http://127.0.0.1:9000", 2, defaults.backoff
    )  # fmt: skip
    monkeypatch.setenv("VIGIL_S3_ENDPOINT", "http://127.0.0.1:9100")
    assert load_config(path).s3.endpoint == "http://127.0.0.1:9100"
    path.write_text("s3:\n  secret_key: hunter2\n")
    with pytest.raises(ConfigError, match=r"unknown key 's3.secret_key'"):
        load_config(path)
    path.write_text("s3:\n  attempts: 0\n")
    with pytest.raises(ConfigError, match=r"'s3.attempts'"):
        load_config(path)


def test_secrets_stay_out_of_repr_and_pickles(s3_env):
    store = open_store(f"s3://{BUCKET}/{_unique('sec')}")
    store.put("a.bin", b"x")
    for text in (repr(store), str(vars(store))):
        assert s3_env.secret_key not in text
    blob = pickle.dumps(store)
    assert s3_env.secret_key.encode() not in blob and s3_env.access_key.encode() not in blob
    assert pickle.loads(blob).get("a.bin") == b"x"  # the copy builds its own client from its environment


# ---------------------------------------------------------------- rejected credentials


def test_wrong_secret_is_a_clear_error_at_once(s3_env, monkeypatch):
    url = f"s3://{BUCKET}/{_unique('cred')}"
    open_store(url).put("a.bin", b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-Xy77")
    store = open_store(url, s3=S3Config(attempts=10, backoff=1.0))
    for operation, call in (
        ("put", lambda: store.put("b.bin", b"y")),
        ("get", lambda: store.get("a.bin")),
        ("list", lambda: list(store.list())),
    ):
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"credentials were rejected by endpoint {s3_env.endpoint}") as rejected:
            call()
        assert time.monotonic() - started < 1.0, f"{operation} retried rejected credentials"
        message = str(rejected.value)
        assert not any(secret in message for secret in _secrets(s3_env)) and s3_env.access_key not in message
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StoreError, match="credentials were rejected"):
        open_store(url).get("a.bin")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="refused anonymous access"):
        open_store(url).get("a.bin")


# ---------------------------------------------------------------- outages


def test_a_short_outage_is_survived_without_loss(s3_env, proxy, caplog):
    store = open_store(f"s3://{BUCKET}/{_unique('out')}", s3=PATIENT.model_copy(update={"endpoint": proxy.endpoint}))
    store.put("before.bin", b"0")  # the client now holds a pooled connection the outage will cut
    proxy.pause()
    comeback = threading.Timer(1.0, proxy.resume)
    comeback.start()
    started = time.monotonic()
    try:
        store.put("during/1.bin", b"1")
        store.put("during/2.bin", b"2")
    finally:
        comeback.cancel()
    assert time.monotonic() - started >= 0.9
    assert [store.get(k) for k in ("before.bin", "during/1.bin", "during/2.bin")] == [b"0", b"1", b"2"]
    assert list(store.list("during/")) == ["during/1.bin", "during/2.bin"]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries and proxy.endpoint in retries[0] and "put 'during/1.bin'" in retries[0]
    assert not any(s3_env.secret_key in r.getMessage() for r in caplog.records)


def test_a_long_outage_gives_a_clear_error_after_bounded_retries(s3_env, proxy):
    store = open_store(f"s3://{BUCKET}/{_unique('down')}", s3=IMPATIENT.model_copy(update={"endpoint": proxy.endpoint}))
    store.put("a.bin", b"a")
    proxy.pause()
    started = time.monotonic()
    with pytest.raises(StoreError) as down:
        store.put("b.bin", b"b")
    assert time.monotonic() - started < 3.0
    message = str(down.value)
    assert f"S3 endpoint {proxy.endpoint} is unreachable" in message and "put 'b.bin'" in message
    assert "3 attempt(s)" in message and "connection refused" in message and s3_env.secret_key not in message
    with pytest.raises(StoreError, match="get 'a.bin'"):
        store.get("a.bin")
    proxy.resume()  # the same store works again once the service is back
    store.put("b.bin", b"b")
    assert list(store.list()) == ["a.bin", "b.bin"]


# ---------------------------------------------------------------- the CLI on S3


def vigil(*args, env, check=True, **kwargs):
    result = subprocess.run(
        [VIGIL, *map(str, args)], capture_output=True, text=True, env={**os.environ, **env}, timeout=300, **kwargs
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def cli_s3(s3_server, scene_video, vigil_cache):
    """One video indexed by `vigil index --store s3://...` with tiny models."""
    path, _ = scene_video
    url = f"s3://{BUCKET}/{_unique('cli')}"
    result = vigil("index", path, "--store", url, "--models", "tiny", "--no-progress", env=s3_server.env())
    assert "indexed 1 file(s), 10 clips" in result.stdout and f"store: {url}" in result.stdout
    return url


def test_cli_index_and_search_on_s3(cli_s3, s3_env):
    result = vigil("search", "a red car at night", "--store", cli_s3, "--top-k", 3, "--json", env=s3_env.env())
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert 1 <= len(lines) <= 3 and all(line["untrained"] for line in lines)
    assert all(line["keyframe"].startswith(f"{cli_s3}/keyframes/") for line in lines)
    # everything the search used is in the bucket: manifest, index segments, clips, keyframes, source record
    store = open_store(cli_s3)
    manifest = read_newest(store)
    assert all(store.exists(f"index/segments/{entry.id}/rows.parquet") for entry in manifest.segments)
    assert len(ClipIndex.load(store)) == 10 and len(list(store.list("clips/"))) == 10
    assert store.exists(lines[0]["keyframe"].removeprefix(cli_s3 + "/"))
    (record,) = store.list("sources/")
    assert len(store.get_json(record)["clips"]) == 10


def test_cli_wrong_secret_exits_2_naming_credentials(cli_s3, s3_server):
    result = vigil(
        "search", "gate", "--store", cli_s3, env=s3_server.env(AWS_SECRET_ACCESS_KEY="wrong-secret-Xy77"), check=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "credentials were rejected" in result.stderr and s3_server.endpoint in result.stderr
    assert "retry" not in result.stderr
    assert not any(secret in result.stderr + result.stdout for secret in _secrets(s3_server))


def test_cli_survives_an_outage_and_reports_a_long_one(cli_s3, s3_env, scene_video, proxy, tmp_path):
    # a copy of the indexed store, to change through the proxy
    source, url = open_store(cli_s3), f"s3://{BUCKET}/{_unique('cli-out')}"
    store = open_store(url)
    for key in source.list():
        store.put(key, source.get(key))
    env = s3_env.env(VIGIL_S3_ENDPOINT=proxy.endpoint)
    patient = tmp_path / "patient.yaml"
    patient.write_text(
        "s3:\n  attempts: 100\n  backoff: 0.05\n  backoff_max: 0.25\n  deadline: 30\n  connect_timeout: 1\n"
    )
    impatient = tmp_path / "impatient.yaml"
    impatient.write_text("s3:\n  attempts: 2\n  backoff: 0.1\n  connect_timeout: 1\n")

    proxy.pause()
    down = vigil("search", "gate", "--store", url, "--config", impatient, env=env, check=False)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert f"S3 endpoint {proxy.endpoint} is unreachable" in down.stderr and "2 attempt(s)" in down.stderr
    assert s3_env.secret_key not in down.stderr

    # `vigil remove` deletes and rewrites the index while the store is down, then it comes back
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        run = subprocess.Popen(
            [VIGIL, "remove", str(scene_video[0]), "--store", url, "--config", str(patient)],
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **env},
        )  # fmt: skip
        try:
            wait_until(lambda: "retry" in stderr.read_text(), 60, "a retry while the store is down")
        finally:
            proxy.resume()
        out, _ = run.communicate(timeout=120)
    log = stderr.read_text()
    assert run.returncode == 0, log
    assert "removed" in out and "10 clips" in out
    assert proxy.endpoint in log and s3_env.secret_key not in log
    assert (
        list(store.list("clips/")) == [] and list(store.list("keyframes/")) == [] and list(store.list("sources/")) == []
    )
    assert len(ClipIndex.load(store)) == 0
