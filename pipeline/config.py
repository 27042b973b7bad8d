"""Validated configuration: packaged defaults < config file < VIGIL_* environment < command-line flags."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A configuration file, environment variable or flag has a wrong key or value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecodeConfig(_Section):
    backend: Literal["pyav", "decord"]
    fps: float = Field(gt=0, le=240)
    short_side: int = Field(ge=32, le=4096)
    keyframes_only: Literal["auto"] | bool
    threads: int = Field(ge=0, le=64)
    still_threshold: float = Field(ge=0)


class EmbedConfig(_Section):
    window: float = Field(gt=0, le=3600)


class IndexConfig(_Section):
    kind: Literal["auto", "flat", "hnsw"]
    exact_max: int = Field(ge=1)
    hnsw_m: int = Field(ge=4, le=256)


class SearchConfig(_Section):
    top_k: int = Field(ge=1, le=10000)
    merge_drop: float = Field(ge=0, le=1)


class VigilConfig(_Section):
    store: str = Field(min_length=1)
    models: str = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"]
    batch_size: int = Field(ge=1, le=4096)
    decode: DecodeConfig
    embed: EmbedConfig
    index: IndexConfig
    search: SearchConfig


# Environment variables and the config keys they set.
ENVIRONMENT = {"VIGIL_STORE": "store", "VIGIL_MODELS": "models"}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError, origin: str) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"'{where}': {error['msg']} (got {error.get('input')!r})")
    return f"{origin}: " + "; ".join(problems)


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
        data = _merge(data, _read_yaml(path.read_text(), str(path)))
        origin = str(path)
    for variable, key in ENVIRONMENT.items():
        if os.environ.get(variable):
            data[key] = os.environ[variable]
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        section = data
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    try:
        return VigilConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
