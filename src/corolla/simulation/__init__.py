"""Run apps without a deployed federation."""

from corolla.simulation.inprocess import InProcessGrid

__all__ = ["InProcessGrid"]
