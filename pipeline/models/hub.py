"""Checkpoint loading: local files first, then the Hugging Face hub when it is reachable.

Checkpoints load through ``AutoModel`` / ``AutoImageProcessor`` / ``AutoTokenizer`` (so SigLIP's
``"siglip"`` and NaFlex ``"siglip2"`` model types both work). When the weights cannot be had, the
ModelUnavailableError says why and how to provide them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.models.random_weights import UNTRAINED_MARKER


class ModelUnavailableError(RuntimeError):
    """The weights of a model could not be loaded; the message says how to provide them."""


def weights_guidance(model_id: str) -> str:
    """The ways to provide the weights of `model_id`, for the end of a ModelUnavailableError message."""
    return (
        "How to provide the weights:\n"
        f"  1. on a machine with internet access, download them: `huggingface-cli download {model_id}` "
        f"(or `hf download {model_id}`), then copy ~/.cache/huggingface to this machine "
        "(or point HF_HOME at the copied folder);\n"
        "  2. or pass local checkpoint folders: --models SIGLIP_DIR,DINOV2_DIR (or the VIGIL_MODELS "
        "environment variable);\n"
        "  3. or use --models tiny for untrained random-weight checkpoints (plumbing tests only, "
        "never accuracy)."
    )


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_reachability: dict[str, tuple[float, bool]] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: never touch the network."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub (or of the HTTPS proxy, if one is set), cached for a minute.

    Without it, transformers retries an unresolvable hub for about 30 s per file before failing.
    """
    endpoint = _hub_endpoint()
    cached = _reachability.get(endpoint)
    if cached and time.monotonic() - cached[0] < 60:
        return cached[1]
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urllib.parse.urlparse(proxy or endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    result: dict[str, bool] = {}

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    thread = threading.Thread(target=probe, name="vigil-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result.get("ok"))
    _reachability[endpoint] = (time.monotonic(), ok)
    return ok


@dataclass
class LoadedCheckpoint:
    """A checkpoint's fp32 model, image processor and tokenizer (None unless asked for); `untrained` when it
    carries the random-weight marker."""

    model: Any
    image_processor: Any
    tokenizer: Any
    model_id: str
    untrained: bool


def _locate(id_or_dir: str, default_id: str = "<model-id>") -> tuple[str, str]:
    """("dir", absolute folder) for an existing folder, ("hub", id) for a plausible hub id."""
    if not isinstance(id_or_dir, str) or not id_or_dir.strip():
        raise ModelUnavailableError(f"empty model id or folder {id_or_dir!r}.\n{weights_guidance(default_id)}")
    text = id_or_dir.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return "dir", str(path.absolute())
    looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or not _REPO_ID.match(text)
    if looks_like_path or path.exists():
        raise ModelUnavailableError(
            f"model folder {text} does not exist (or is not a folder).\n{weights_guidance(default_id)}"
        )
    return "hub", text


class _SiglipDefaultTokenFilter(logging.Filter):
    """Drop one false alarm: transformers 5 builds a default SiglipTextConfig() while saving/loading any
    SigLIP checkpoint, and that default (bos 49406 / eos 49407 with vocab 32000) fails its own validation."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("within the vocabulary" in msg and ("got 49406" in msg or "got 49407" in msg))


class _TorchaoImportFilter(logging.Filter):
    """Drop torchao's import-time noise (transformers imports torchao on every load when it is installed, for
    precision int8-compiled): a warning per enum it registers with torch's pytree, one per optional GPU kernel
    library it cannot load on this machine."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("is an Enum subclass and is now natively supported" in msg or msg.startswith("Failed to load"))


def _install_log_filter() -> None:
    for name, kind in (
        ("transformers.configuration_utils", _SiglipDefaultTokenFilter),
        ("torch.utils._pytree", _TorchaoImportFilter),
        ("torchao", _TorchaoImportFilter),
    ):
        target = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in target.filters):
            target.addFilter(kind())


@contextlib.contextmanager
def _no_progress_bars():
    """Hide transformers' per-load "Loading weights" bars (noise in actor logs); warnings stay visible."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_checkpoint(
    id_or_dir: str, *, with_tokenizer: bool, default_id: str = "<model-id>", model_class: Any = None
) -> LoadedCheckpoint:
    """Load a checkpoint by hub id or folder, local files first; ModelUnavailableError (with guidance) when the
    folder cannot be loaded, or the hub id is neither cached nor downloadable. `model_class`: the transformers
    Auto class for a model with a task head (a detector's), instead of ``AutoModel``."""
    import torch

    _install_log_filter()  # before transformers' import, which imports torchao
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    kind, where = _locate(id_or_dir, default_id)

    def attempt(local_only: bool) -> tuple[Any, Any, Any]:
        with _no_progress_bars():
            return _attempt(local_only)

    def _attempt(local_only: bool) -> tuple[Any, Any, Any]:
        model = (model_class or AutoModel).from_pretrained(where, local_files_only=local_only, dtype=torch.float32)
        image_processor = AutoImageProcessor.from_pretrained(where, local_files_only=local_only, backend="pil")
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only) if with_tokenizer else None
        return model, image_processor, tokenizer

    if kind == "dir":
        try:
            parts = attempt(True)
        except Exception as exc:  # noqa: BLE001 - any failure means "can't use this folder"
            raise ModelUnavailableError(
                f"could not load the checkpoint in folder {where}: {type(exc).__name__}: {exc}\n"
                f"{weights_guidance(default_id)}"
            ) from exc
        untrained = (Path(where) / UNTRAINED_MARKER).is_file()
        return LoadedCheckpoint(*parts, model_id=where, untrained=untrained)

    try:
        parts = attempt(True)
    except Exception as local_exc:  # noqa: BLE001
        if hub_offline():
            raise ModelUnavailableError(
                f"model {where} is not in the local Hugging Face cache ({_hf_cache_dir()}) and HF_HUB_OFFLINE "
                f"is set, so it cannot be downloaded.\n{weights_guidance(where)}"
            ) from local_exc
        if not hub_reachable():
            raise ModelUnavailableError(
                f"model {where} is not in the local Hugging Face cache ({_hf_cache_dir()}) and the hub "
                f"({_hub_endpoint()}) is unreachable from this machine.\n{weights_guidance(where)}"
            ) from local_exc
        try:
            parts = attempt(False)
        except Exception as exc:  # noqa: BLE001
            raise ModelUnavailableError(
                f"could not download model {where} from {_hub_endpoint()}: {type(exc).__name__}: {exc}\n"
                f"{weights_guidance(where)}"
            ) from exc
    untrained = False
    try:
        from huggingface_hub import try_to_load_from_cache

        untrained = isinstance(try_to_load_from_cache(where, UNTRAINED_MARKER), str)
    except Exception:  # noqa: BLE001 - the marker is optional
        pass
    return LoadedCheckpoint(*parts, model_id=where, untrained=untrained)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        return "~/.cache/huggingface/hub"


__all__ = [
    "ModelUnavailableError",
    "weights_guidance",
    "LoadedCheckpoint",
    "load_checkpoint",
    "hub_offline",
    "hub_reachable",
]
