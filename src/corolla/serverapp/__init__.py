"""The ServerApp user API: `ServerApp`, `Grid`, the strategies and the privacy accountants."""

from corolla.serverapp import strategy
from corolla.serverapp.grid import Grid
from corolla.serverapp.privacy import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyAccountant,
    PrivacyConfig,
    PrivacySpent,
    RdpAccountant,
    SamplingMethod,
)
from corolla.serverapp.serverapp import ServerApp

__all__ = [
    "GaussianPrivacyEvent",
    "Grid",
    "NeighboringRelation",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacySpent",
    "RdpAccountant",
    "SamplingMethod",
    "ServerApp",
    "strategy",
]
