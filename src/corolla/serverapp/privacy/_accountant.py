"""`RdpAccountant`: cumulative client-level privacy loss by Rényi DP composition."""

from __future__ import annotations

import math
from typing import Any

from corolla.common.errors import InvalidArgument
from corolla.serverapp.privacy import _rdp
from corolla.serverapp.privacy._types import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    SamplingMethod,
)

_SCHEMA_VERSION = 1
_METHOD = "rdp"


class RdpAccountant:
    """Tracks the privacy a run spends, one Gaussian release at a time.

    Each release adds its RDP curve (at every tracked order) to the total; epsilon at a delta
    is read off the total curve. ``orders`` defaults to `DEFAULT_ORDERS`. The sampling model
    (``config.sampling_method``) decides the curve of an event: Poisson sampling at rate
    ``sample_size / population_size``, sampling without replacement of ``sample_size``
    clients, or no amplification (the plain Gaussian mechanism).
    """

    def __init__(self, config: PrivacyConfig, orders: tuple[float, ...] | None = None) -> None:
        self._config = config
        self._orders = _rdp.DEFAULT_ORDERS if orders is None else _check_orders(orders)
        self._rdp = [0.0] * len(self._orders)
        self._compositions: list[tuple[GaussianPrivacyEvent, int]] = []

    @property
    def config(self) -> PrivacyConfig:
        return self._config

    @property
    def num_releases(self) -> int:
        return sum(count for _, count in self._compositions)

    @property
    def orders(self) -> tuple[float, ...]:
        """The Rényi orders tracked."""
        return self._orders

    @property
    def rdp(self) -> tuple[float, ...]:
        """The total RDP spent so far, at each of `orders`."""
        return tuple(self._rdp)

    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        """Add ``count`` releases of ``event`` to the total."""
        self._check_event(event)
        _check_count(count)
        self._rdp = self._with(self._rdp, event, count)
        self._compositions.append((event, count))

    def get_epsilon(self, delta: float) -> float:
        _check_delta(delta)
        return _rdp.epsilon_from_rdp(self._orders, self._rdp, delta)[0]

    def get_delta(self, epsilon: float) -> float:
        if isinstance(epsilon, bool) or not math.isfinite(epsilon) or epsilon < 0:
            raise InvalidArgument(f"epsilon must be a non-negative finite number, got {epsilon!r}")
        return _rdp.delta_from_rdp(self._orders, self._rdp, epsilon)[0]

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        """The spend so far at ``delta`` (default: the config's ``target_delta``)."""
        delta = self._config.target_delta if delta is None else delta
        _check_delta(delta)
        epsilon, order = _rdp.epsilon_from_rdp(self._orders, self._rdp, delta)
        return PrivacySpent(
            epsilon=epsilon,
            delta=delta,
            num_releases=self.num_releases,
            accounting_method=_METHOD,
            optimal_order=order,
        )

    def would_exceed(
        self,
        event: GaussianPrivacyEvent,
        max_epsilon: float | None = None,
        count: int = 1,
    ) -> bool:
        """Whether ``count`` more releases of ``event`` would take epsilon (at the config's
        ``target_delta``) past ``max_epsilon`` (default: the config's). Changes nothing."""
        self._check_event(event)
        _check_count(count)
        limit = self._config.max_epsilon if max_epsilon is None else max_epsilon
        if limit is None:
            raise InvalidArgument("no max_epsilon: give one here or in the PrivacyConfig")
        if isinstance(limit, bool) or not math.isfinite(limit) or limit <= 0:
            raise InvalidArgument(f"max_epsilon must be a positive finite number, got {limit!r}")
        projected = self._with(self._rdp, event, count)
        return _rdp.epsilon_from_rdp(self._orders, projected, self._config.target_delta)[0] > limit

    def state_dict(self) -> dict[str, object]:
        """The config, orders and every composition, as JSON-serializable data (the same
        layout as Flower's, so a saved state moves between the two)."""
        config = self._config
        return {
            "schema_version": _SCHEMA_VERSION,
            "backend": _METHOD,
            "config": {
                "target_delta": config.target_delta,
                "population_size": config.population_size,
                "neighboring_relation": config.neighboring_relation.value,
                "sampling_method": config.sampling_method.value,
                "max_epsilon": config.max_epsilon,
            },
            "orders": list(self._orders),
            "compositions": [
                {
                    "event": {
                        "noise_multiplier": event.noise_multiplier,
                        "sample_size": event.sample_size,
                        "population_size": event.population_size,
                    },
                    "count": count,
                }
                for event, count in self._compositions
            ],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Replace this accountant's state with one from `state_dict`. The state must have been
        saved under the same config; the RDP totals are recomputed from its compositions."""
        if state.get("schema_version") != _SCHEMA_VERSION:
            raise InvalidArgument(
                f"unsupported accountant state schema {state.get('schema_version')!r}"
            )
        if state.get("backend") != _METHOD:
            raise InvalidArgument(f"accountant state of backend {state.get('backend')!r}, not rdp")
        try:
            config = _config_from(state["config"])
            orders = _check_orders(tuple(float(o) for o in _as_list(state["orders"])))
            compositions = [_composition_from(item) for item in _as_list(state["compositions"])]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"invalid accountant state: {exc}") from exc
        if config != self._config:
            raise InvalidArgument("the accountant state was saved under another PrivacyConfig")
        self._orders = orders
        total = [0.0] * len(orders)
        for event, count in compositions:
            self._check_event(event)
            total = self._with(total, event, count)
        self._rdp, self._compositions = total, compositions

    # -- internals -------------------------------------------------------------------------------
    def _with(self, total: list[float], event: GaussianPrivacyEvent, count: int) -> list[float]:
        curve = self._curve(event)
        return [t + count * r for t, r in zip(total, curve, strict=True)]

    def _curve(self, event: GaussianPrivacyEvent) -> list[float]:
        method = self._config.sampling_method
        sigma = event.noise_multiplier
        q = event.sample_size / event.population_size
        if method is SamplingMethod.POISSON:
            return [_rdp.poisson_subsampled_gaussian(q, sigma, a) for a in self._orders]
        if method is SamplingMethod.WITHOUT_REPLACEMENT:
            return [_rdp.sampled_without_replacement_gaussian(q, sigma, a) for a in self._orders]
        return [_rdp.gaussian(sigma, a) for a in self._orders]

    def _check_event(self, event: GaussianPrivacyEvent) -> None:
        if not isinstance(event, GaussianPrivacyEvent):
            raise TypeError(f"expected a GaussianPrivacyEvent, got {type(event).__name__}")
        if event.population_size != self._config.population_size:
            raise InvalidArgument(
                f"event population_size {event.population_size} differs from the config's "
                f"{self._config.population_size}"
            )


def _check_orders(orders: tuple[float, ...]) -> tuple[float, ...]:
    if not orders:
        raise InvalidArgument("orders must not be empty")
    if any(not math.isfinite(o) or o <= 1 for o in orders):
        raise InvalidArgument(f"every RDP order must be finite and above 1, got {orders!r}")
    return tuple(float(o) for o in orders)


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise InvalidArgument(f"count must be a positive integer, got {count!r}")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not math.isfinite(delta) or not 0 < delta < 1:
        raise InvalidArgument(f"delta must be strictly between 0 and 1, got {delta!r}")


def _as_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return value


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _config_from(value: object) -> PrivacyConfig:
    config = _as_dict(value)
    max_epsilon = config["max_epsilon"]
    return PrivacyConfig(
        target_delta=_as_float(config["target_delta"]),
        population_size=_as_int(config["population_size"]),
        neighboring_relation=NeighboringRelation(config["neighboring_relation"]),
        sampling_method=SamplingMethod(config["sampling_method"]),
        max_epsilon=None if max_epsilon is None else _as_float(max_epsilon),
    )


def _composition_from(value: object) -> tuple[GaussianPrivacyEvent, int]:
    item = _as_dict(value)
    event = _as_dict(item["event"])
    count = _as_int(item["count"])
    _check_count(count)
    return (
        GaussianPrivacyEvent(
            noise_multiplier=_as_float(event["noise_multiplier"]),
            sample_size=_as_int(event["sample_size"]),
            population_size=_as_int(event["population_size"]),
        ),
        count,
    )
