"""deploy/ and configs/cluster.yaml: checked against the Compose specification's schema, vigil's own config
validation and CLI. No Docker engine or Kubernetes runs here: no image is built and no manifest applied
(tests/test_compose_on_loopback.py runs the compose services' commands as processes)."""

import inspect
import re
import shlex
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.cli import build_parser
from pipeline.config import load_config
from pipeline.media import synthetic

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
MANIFESTS = sorted((DEPLOY / "kuberay").glob("*.yaml"))
# A vigil command up to the end of its shell command (a newline, `&&`, `;` or `|`).
VIGIL_COMMAND = re.compile(r"\bvigil (?:ingest|monitor|index|search|remove|summarize|query|demo)\b[^\n&;|]*")


def compose_schema() -> dict:
    """The Compose specification's JSON schema, as vendored by check-jsonschema."""
    import json

    schemas = resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    return json.loads((schemas / "compose-spec.json").read_text())


def test_cluster_config_validates():
    config = load_config(ROOT / "configs" / "cluster.yaml")
    assert config.store.startswith("s3://") and config.s3.endpoint and config.kafka.brokers
    assert config.monitor.extractors == "auto"


def test_compose_file_follows_the_compose_specification():
    compose = yaml.safe_load(COMPOSE.read_text())
    jsonschema.validate(compose, compose_schema())
    services = compose["services"]
    assert {"kafka", "minio", "ray-head", "ray-worker", "vigil-monitor"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on an unknown service {dependency}"


def test_the_compose_schema_check_catches_a_mistake():
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["vigil-monitor"]["restart_policy"] = "always"  # not a service key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, compose_schema())


def test_secrets_are_never_written_into_deploy_files():
    text = COMPOSE.read_text()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"):
        for line in text.splitlines():
            if line.strip().startswith(f"{key}:"):
                assert "${" in line, f"{key} must come from the environment: {line.strip()}"
    for manifest in MANIFESTS:
        for document in yaml.safe_load_all(manifest.read_text()):
            assert document is None or "AWS_SECRET_ACCESS_KEY: " not in yaml.safe_dump(document)


def test_kuberay_manifests_are_ray_resources():
    kinds = []
    for manifest in MANIFESTS:
        for document in yaml.safe_load_all(manifest.read_text()):
            if document:
                assert document["apiVersion"] == "ray.io/v1", manifest.name
                kinds.append(document["kind"])
    assert {"RayCluster", "RayJob"} <= set(kinds)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _commands() -> list[tuple[str, str]]:
    """(file, command) for every vigil command in the values (not the comments) of the deploy files."""
    found = []
    for path in [COMPOSE, *MANIFESTS]:
        for document in yaml.safe_load_all(path.read_text()):
            for text in _strings(document):
                # Compose escapes a shell's $ as $$; a shell variable's value does not matter to the parser.
                text = re.sub(r"\$\$\{?(\w+)[^}\"\s]*\}?", r"\1", text)
                found += [(path.name, match.group(0)) for match in VIGIL_COMMAND.finditer(text)]
    return found


def test_every_vigil_command_in_deploy_parses_with_the_real_cli():
    commands = _commands()
    assert {name for name, _ in commands} == {COMPOSE.name, *(m.name for m in MANIFESTS)}
    parser = build_parser()
    for name, command in commands:
        words = shlex.split(command)
        try:
            parser.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{command}` does not parse")


def test_the_demo_camera_generator_exists_as_compose_calls_it():
    call = re.search(r"write_static_camera_video as w; w\('\$\$src', ([^)]*\))\)", COMPOSE.read_text())
    assert call, "the vigil-ingest demo command changed: update this test"
    inspect.signature(synthetic.write_static_camera_video).bind("camera.mp4", 60.0, size=(640, 360))
