"""The serve job: the Ray Serve application of `actors.serve` on `serve.host`:`serve.port`, until stopped.

It refuses to start bound to anything but a loopback address without a token (`serve.token`): the API would
answer anyone who can reach the port.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading

from pipeline.config import VigilConfig
from pipeline.storage.store import open_configured_store

APP_NAME = "vigil"


class ServeRefused(ValueError):
    """A setting `vigil serve` will not start with (a one-line reason)."""


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one (a name that does not resolve is not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_serving(config: VigilConfig) -> None:
    """Refuse what must not serve: a token-less API beyond loopback, or a store that is not there."""
    settings = config.serve
    if settings.token is None and not is_loopback(settings.host):
        raise ServeRefused(
            f"serve.host {settings.host} is not a loopback address: set a token (VIGIL_SERVE_TOKEN, at least 16 "
            "characters) so that only its holders are answered"
        )
    open_configured_store(config, create=False)  # a missing store is a one-line error now, not in a replica


def start_serving(config: VigilConfig) -> str:
    """Deploy the application on Ray (joining or starting it) and return its URL once it answers."""
    from ray import serve

    from actors.serve import serve_application
    from actors.stages import start_ray

    check_serving(config)
    start_ray()
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(serve_application(config), name=APP_NAME, route_prefix="/", blocking=False)
    host = config.serve.host if ":" not in config.serve.host else f"[{config.serve.host}]"
    return f"http://{host}:{config.serve.port}"


def stop_serving() -> None:
    from ray import serve

    serve.delete(APP_NAME)


def serve_until_stopped(config: VigilConfig) -> None:
    """`start_serving`, then wait for SIGINT or SIGTERM and take the application down."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = start_serving(config)
    print(f"serving {url} (API {url}/v1, OpenAPI {url}/openapi.json); stop with Ctrl-C", flush=True)
    stop.wait()
    stop_serving()
