"""The one exception tree of Corolla.

Every error Corolla raises on purpose derives from :class:`CorollaError`. The subclasses are
grouped by meaning, not by where they happen, so that each boundary (gRPC servicer, CLI) maps
them once: to a gRPC status code, or to an exit code and a one-line message.
"""

from __future__ import annotations


class CorollaError(Exception):
    """Root of every error Corolla raises on purpose."""


class InvalidArgument(CorollaError, ValueError):
    """The input is malformed or out of range."""


class NotFound(CorollaError, LookupError):
    """A run, node, message, FAB or object id is unknown."""


class AlreadyExists(CorollaError):
    """Something with this identity exists already."""


class PermissionDenied(CorollaError):
    """The caller is known but not allowed to do this."""


class Unauthenticated(CorollaError):
    """The caller could not be identified (missing or bad credentials)."""


class FailedPrecondition(CorollaError):
    """The request is valid but the system is not in a state to serve it."""


class ResourceExhausted(CorollaError):
    """A size or count limit was exceeded."""


class Unavailable(CorollaError):
    """A peer (SuperLink, SuperNode, app process) cannot be reached right now."""


class DeadlineExceeded(CorollaError, TimeoutError):
    """A wait ran out of time."""


class AppError(CorollaError):
    """User app code (ServerApp, ClientApp, strategy) failed to load or raised."""


class RoundFailed(AppError):
    """A phase of a strategy round had too few usable replies; the message is one line."""

    def __init__(self, message: str, *, server_round: int, phase: str) -> None:
        super().__init__(message)
        self.server_round = server_round
        self.phase = phase


__all__ = [
    "AlreadyExists",
    "AppError",
    "CorollaError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
