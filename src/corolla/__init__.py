"""Corolla: a federated AI platform."""

__version__ = "0.1.0"
