"""What privacy accounting is about: the model (config), the releases (events), the result."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from corolla.common.errors import InvalidArgument, ResourceExhausted


class NeighboringRelation(str, Enum):  # noqa: UP042  # str() as Flower's: "Class.MEMBER"
    """Which two client populations count as neighbours (differ by one client)."""

    ADD_OR_REMOVE_ONE = "add-or-remove-one"
    REPLACE_ONE = "replace-one"


class SamplingMethod(str, Enum):  # noqa: UP042  # str() as Flower's: "Class.MEMBER"
    """How each release's clients are drawn from the population."""

    POISSON = "poisson"  # each client independently, with probability sample_size/population
    WITHOUT_REPLACEMENT = "without-replacement"  # a uniform subset of exactly sample_size
    NO_AMPLIFICATION = "no-amplification"  # no credit taken for sampling


# The (sampling, relation) pairs the RDP analysis covers: Poisson sampling and no sampling under
# add/remove-one (Mironov et al. 2019), sampling without replacement under replace-one (Wang et
# al. 2019).
SUPPORTED_MODELS = frozenset(
    {
        (SamplingMethod.POISSON, NeighboringRelation.ADD_OR_REMOVE_ONE),
        (SamplingMethod.WITHOUT_REPLACEMENT, NeighboringRelation.REPLACE_ONE),
        (SamplingMethod.NO_AMPLIFICATION, NeighboringRelation.ADD_OR_REMOVE_ONE),
    }
)


class PrivacyBudgetExhausted(ResourceExhausted):
    """The next private release would take the run past its ``max_epsilon``."""


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level accounting for a run.

    ``target_delta`` is the delta epsilon is reported at; ``population_size`` the number of
    clients releases sample from; ``max_epsilon`` (optional) the budget checked before each
    release. Raises `ValueError` (as `InvalidArgument`) for values out of range and for a
    sampling method the relation does not support.
    """

    target_delta: float
    population_size: int
    neighboring_relation: NeighboringRelation
    sampling_method: SamplingMethod
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        check_probability("target_delta", self.target_delta)
        check_positive_int("population_size", self.population_size)
        if self.max_epsilon is not None:
            check_positive_finite("max_epsilon", self.max_epsilon)
        if (self.sampling_method, self.neighboring_relation) not in SUPPORTED_MODELS:
            raise InvalidArgument(
                f"sampling method {self.sampling_method.value!r} cannot be accounted under the "
                f"{self.neighboring_relation.value!r} relation; supported: "
                + ", ".join(f"{s.value}/{r.value}" for s, r in sorted(SUPPORTED_MODELS))
            )


@dataclass(frozen=True)
class GaussianPrivacyEvent:
    """Gaussian noise of ``noise_multiplier`` times the sensitivity, added to an aggregate of
    ``sample_size`` clients out of ``population_size`` (the expected size for Poisson sampling,
    the exact one without replacement; unused without amplification)."""

    noise_multiplier: float
    sample_size: int
    population_size: int

    def __post_init__(self) -> None:
        check_positive_finite("noise_multiplier", self.noise_multiplier)
        check_positive_int("sample_size", self.sample_size)
        check_positive_int("population_size", self.population_size)
        if self.sample_size > self.population_size:
            raise InvalidArgument(
                f"sample_size ({self.sample_size}) exceeds population_size ({self.population_size})"
            )


@dataclass(frozen=True)
class PrivacySpent:
    """The privacy spent so far: (``epsilon``, ``delta``) after ``num_releases`` releases."""

    epsilon: float
    delta: float
    num_releases: int
    accounting_method: str
    optimal_order: float | None = None


class PrivacyAccountant(Protocol):
    """What a privacy accountant offers (`RdpAccountant` is the one Corolla ships)."""

    @property
    def config(self) -> PrivacyConfig:
        """The accounting model."""

    @property
    def num_releases(self) -> int:
        """How many releases have been composed."""

    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        """Add ``count`` releases of ``event``."""

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far, at ``delta``."""

    def get_delta(self, epsilon: float) -> float:
        """Delta spent so far, at ``epsilon``."""

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        """The spend so far, at ``delta`` (default: the config's ``target_delta``)."""

    def would_exceed(
        self,
        event: GaussianPrivacyEvent,
        max_epsilon: float | None = None,
        count: int = 1,
    ) -> bool:
        """Whether ``count`` more releases of ``event`` would exceed ``max_epsilon``."""

    def state_dict(self) -> dict[str, object]:
        """The accountant's state, JSON-serializable."""

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a state from `state_dict`."""


def check_probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not _finite(value) or not 0 < value < 1:
        raise InvalidArgument(f"{name} must be a number strictly between 0 and 1, got {value!r}")


def check_positive_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not _finite(value) or value <= 0:
        raise InvalidArgument(f"{name} must be a positive finite number, got {value!r}")


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
