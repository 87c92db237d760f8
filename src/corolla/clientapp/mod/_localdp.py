"""`LocalDpMod`: local differential privacy on the updates a ClientApp sends."""

from __future__ import annotations

import logging

import numpy as np

from corolla.clientapp.mod._centraldp import matching_reply_record, single_array_record
from corolla.clientapp.mod._dp import (
    add_gaussian_noise,
    arrays_of,
    clip_update,
    local_gaussian_std,
    record_of,
)
from corolla.clientapp.mod._typing import ClientAppCallable
from corolla.common.errors import InvalidArgument
from corolla.records import Context, Message, MessageType

log = logging.getLogger(__name__)


class LocalDpMod:
    """Clip each ``train`` reply's update and add Gaussian noise before it leaves the client.

    The update (reply arrays minus the arrays received) is scaled down to L2 norm at most
    ``clipping_norm``; then every parameter gets N(0, s^2) noise with
    ``s = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon``, the Gaussian mechanism's
    calibration for (``epsilon``, ``delta``)-DP of a query with that L2 ``sensitivity``
    (proven for ``epsilon < 1``). Other message types pass through. ``rng`` (a
    `numpy.random.Generator`) draws the noise; seed it for reproducible runs.

    Use it app-wide or per handler: ``ClientApp(mods=[LocalDpMod(...)])``.
    """

    def __init__(
        self, clipping_norm: float, sensitivity: float, epsilon: float, delta: float
    ) -> None:
        if not clipping_norm > 0:
            raise InvalidArgument(f"clipping_norm must be positive, got {clipping_norm}")
        if not sensitivity >= 0:
            raise InvalidArgument(f"sensitivity must not be negative, got {sensitivity}")
        if not epsilon > 0:
            raise InvalidArgument(f"epsilon must be positive, got {epsilon}")
        if not 0 < delta < 1:
            raise InvalidArgument(f"delta must be strictly between 0 and 1, got {delta}")
        if epsilon >= 1:
            log.warning(
                "LocalDpMod: epsilon=%s; the Gaussian mechanism's calibration is proven for "
                "epsilon < 1 only",
                epsilon,
            )
        self.clipping_norm = clipping_norm
        self.sensitivity = sensitivity
        self.epsilon = epsilon
        self.delta = delta
        self.rng: np.random.Generator = np.random.default_rng()

    @property
    def std_dev(self) -> float:
        """The standard deviation of the noise added to each parameter."""
        return local_gaussian_std(self.sensitivity, self.epsilon, self.delta)

    def __repr__(self) -> str:
        return (
            f"LocalDpMod(clipping_norm={self.clipping_norm}, sensitivity={self.sensitivity}, "
            f"epsilon={self.epsilon}, delta={self.delta})"
        )

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        sent = single_array_record("LocalDpMod", msg, "message")
        if isinstance(sent, Message):
            return sent
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        found = matching_reply_record("LocalDpMod", msg, reply, sent)
        if isinstance(found, Message):
            return found
        key, received = found
        clipped, was_clipped = clip_update(
            arrays_of(received), [sent[k].view() for k in received], self.clipping_norm
        )
        std = self.std_dev
        noised = add_gaussian_noise(clipped, std, self.rng) if std > 0 else clipped
        if was_clipped or noised is not clipped:
            reply.content[key] = record_of(list(received), noised)
        log.info(
            "LocalDpMod: update %s norm %.4f, noise of std %.4f added",
            "clipped to" if was_clipped else "within",
            self.clipping_norm,
            std,
        )
        return reply
