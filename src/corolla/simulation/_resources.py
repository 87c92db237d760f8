"""`BackendConfig`: which simulation backend, how many workers, and the GPUs each one sees."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.common.errors import InvalidArgument

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class BackendConfig:
    """The backend (``"local"``: the built-in worker pool; ``"ray"``), how many workers, and
    which GPUs each one sees (``None``: left as the parent's). For Ray: the resources each
    ClientApp asks of the cluster and the arguments of ``ray.init``."""

    num_workers: int
    gpus: tuple[str | None, ...] = ()
    name: str = "local"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    init_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, config: Mapping[str, Any] | None, *, max_workers: int) -> BackendConfig:
        """Read a Flower-style backend config (``-`` or ``_`` in keys, both accepted):

        - ``client-resources``: ``num-cpus`` (default 1) CPUs per ClientApp gives
          ``max(1, cores // num-cpus)`` workers (cores: the CPUs this process may use);
          ``num-gpus`` (default 0): if above 0, concurrency is limited to what the visible GPUs
          hold (``0.5``: two workers per GPU; ``2``: two GPUs per worker) and each worker gets
          its share in ``CUDA_VISIBLE_DEVICES``. GPUs are the ids in ``CUDA_VISIBLE_DEVICES``
          or, if unset, the ``/dev/nvidia<N>`` devices; none visible is an error, not a
          silent fall-back to the CPU. At 0 GPUs are ignored (workers see what the parent sees);
        - ``num-workers``: an explicit worker count (still capped by the GPUs);
        - ``name``: ``"local"`` (default) or ``"ray"``; ``init-args``: keyword arguments of
          ``ray.init`` (e.g. ``address`` of an existing cluster), for Ray only. With Ray,
          ``num-workers`` defaults to the cluster's CPUs divided by ``num-cpus``, and GPUs are
          Ray's to place (``num-gpus`` is the share each ClientApp asks for).

        At most ``max_workers`` workers (there is no use for more workers than nodes).
        """
        raw = _normalized(config or {}, "backend_config")
        resources = _normalized(raw.pop("client-resources", None) or {}, "client-resources")
        num_cpus = _positive(resources.pop("num-cpus", 1), "num-cpus")
        num_gpus = _positive(resources.pop("num-gpus", 0), "num-gpus", zero=True)
        workers = raw.pop("num-workers", None)
        init_args = raw.pop("init-args", None) or {}
        name = raw.pop("name", "local")
        for unknown in (*raw, *resources):
            raise InvalidArgument(f"unknown backend_config key {unknown!r}")
        if name not in BACKENDS:
            raise InvalidArgument(f"unknown simulation backend {name!r} (one of {BACKENDS})")
        if not isinstance(init_args, Mapping):
            raise InvalidArgument("init-args must be a table of ray.init arguments")
        if name == "ray":
            count = 0 if workers is None else int(_positive(workers, "num-workers"))
            return cls(
                min(count, max_workers),
                name=name,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                init_args={str(k).replace("-", "_"): v for k, v in init_args.items()},
            )
        if workers is None:
            count = max(1, int(_usable_cores() // num_cpus))
        else:
            count = int(_positive(workers, "num-workers"))
        gpus: tuple[str | None, ...] = ()
        if num_gpus > 0:
            gpus = _gpu_shares(num_gpus)
            count = min(count, len(gpus))
        count = max(1, min(count, max_workers))
        return cls(count, gpus[:count], num_cpus=num_cpus, num_gpus=num_gpus)


def _normalized(config: Any, name: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise InvalidArgument(f"{name} must be a mapping, got {type(config).__name__}")
    return {str(key).replace("_", "-"): value for key, value in config.items()}


def _positive(value: Any, name: str, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise InvalidArgument(f"{name} must be {'0 or more' if zero else 'above 0'}, got {value}")
    return float(value)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``/dev/nvidia<N>``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [part.strip() for part in env.split(",") if part.strip()]
        return [] if ids[:1] == ["-1"] else ids
    devices = Path("/dev")
    found = [p.name[len("nvidia") :] for p in devices.glob("nvidia[0-9]*")]
    return sorted((n for n in found if n.isdigit()), key=int)


def _gpu_shares(per_app: float) -> tuple[str, ...]:
    """``CUDA_VISIBLE_DEVICES`` of each worker slot the visible GPUs allow."""
    gpus = visible_gpus()
    if not gpus:
        raise InvalidArgument(
            f"client-resources asks for num-gpus={per_app:g} per ClientApp, but no GPU is "
            "visible (CUDA_VISIBLE_DEVICES, /dev/nvidia*); set num-gpus to 0 to run on the CPU"
        )
    if per_app <= 1:
        per_gpu = int(1 // per_app)
        return tuple(gpu for gpu in gpus for _ in range(per_gpu))
    width = math.ceil(per_app)
    groups = [",".join(gpus[i : i + width]) for i in range(0, len(gpus) - width + 1, width)]
    if not groups:
        raise InvalidArgument(
            f"client-resources asks for num-gpus={per_app:g} per ClientApp, "
            f"but only {len(gpus)} GPUs are visible"
        )
    return tuple(groups)
