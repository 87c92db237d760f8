"""Client-level privacy accounting for differentially private training.

``RdpAccountant(PrivacyConfig(...))`` composes `GaussianPrivacyEvent`s (one per noised
aggregate) and reports the epsilon spent (`PrivacySpent`). The DP fixed-clipping strategies take
one as ``accountant=`` and stop the run with `PrivacyBudgetExhausted` before a release would go
past ``max_epsilon``.
"""

from corolla.serverapp.privacy._accountant import RdpAccountant
from corolla.serverapp.privacy._rdp import DEFAULT_ORDERS
from corolla.serverapp.privacy._types import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyAccountant,
    PrivacyBudgetExhausted,
    PrivacyConfig,
    PrivacySpent,
    SamplingMethod,
)

__all__ = [
    "DEFAULT_ORDERS",
    "GaussianPrivacyEvent",
    "NeighboringRelation",
    "PrivacyAccountant",
    "PrivacyBudgetExhausted",
    "PrivacyConfig",
    "PrivacySpent",
    "RdpAccountant",
    "SamplingMethod",
]
