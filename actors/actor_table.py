"""Where the monitor's actors run and how often Ray restarted them, for its status document.

Read from Ray's actor table in the GCS: `ray.util.state` would ask the dashboard, which vigil starts Ray
without (`actors.stages.start_ray`), and an actor's own runtime context would need a call queued behind its
work and knows nothing of its restarts.
"""

from __future__ import annotations

from pipeline.live.status import ActorStatus


def actor_statuses(handles: list, in_flight: list[int] | None = None) -> list[ActorStatus]:
    """The status of each actor of `handles`, with the driver's calls in flight to each (`in_flight`) where the
    caller tells them apart by actor."""
    from ray._private.state import actors

    statuses = []
    for i, handle in enumerate(handles):
        info = actors(actor_id=actor_id(handle))
        address = info["Address"]
        statuses.append(
            ActorStatus(
                actor_id=info["ActorID"],
                node_id=address["NodeID"],
                address=address["IPAddress"],
                pid=info["Pid"],
                state=info["State"],
                restarts=info["NumRestarts"],
                in_flight=None if in_flight is None else in_flight[i],
            )
        )
    return statuses


def actor_id(handle) -> str:
    """The id Ray knows an actor by (hex), as its errors name it."""
    return handle._actor_id.hex()
