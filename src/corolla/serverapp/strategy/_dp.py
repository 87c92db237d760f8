"""What the four DP wrappers share: delegation to the wrapped strategy, clipping and noising.

The clipping and noise primitives, and the config/metric keys spoken with the client mods, live
in `corolla.clientapp.mod._dp` (the mods use them too).
"""

from __future__ import annotations

import logging
from abc import ABC
from collections.abc import Iterable

import numpy as np

from corolla.clientapp.mod._dp import add_gaussian_noise, arrays_of, clip_update, record_of
from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy.strategy import Strategy

log = logging.getLogger(__name__)

_STATE_KEY = "corolla.dp"  # the wrapper's own record in a checkpoint's strategy state


class WrappingStrategy(Strategy, ABC):
    """A strategy that runs another one (``self.strategy``) and changes its train phase.

    Evaluation, reply checks, the reply tolerance and checkpoint state are the wrapped
    strategy's; the wrapper's own state goes with it under one extra record. ``rng`` (a
    `numpy.random.Generator`) draws the wrapper's noise: seed it for reproducible runs.
    """

    def __init__(self, strategy: Strategy) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"expected a Strategy to wrap, got {type(strategy).__name__}")
        self.strategy = strategy
        self.rng: np.random.Generator = np.random.default_rng()

    # The reply tolerance is the wrapped strategy's (read and written through).
    @property
    def min_usable_replies(self) -> int:
        return self.strategy.min_usable_replies

    @min_usable_replies.setter
    def min_usable_replies(self, value: int) -> None:
        self.strategy.min_usable_replies = value

    @property
    def min_usable_fraction(self) -> float:
        return self.strategy.min_usable_fraction

    @min_usable_fraction.setter
    def min_usable_fraction(self, value: float) -> None:
        self.strategy.min_usable_fraction = value

    def _sync(self) -> Strategy:
        """The wrapped strategy, told the running `start`'s timeout (it samples nodes with it)."""
        self.strategy._round_timeout = self._round_timeout
        return self.strategy

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The wrapped strategy's evaluate messages."""
        return self._sync().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The wrapped strategy's evaluation metrics."""
        return self.strategy.aggregate_evaluate(server_round, replies)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        return self.strategy.check_train_reply(reply, arrays)

    def check_evaluate_reply(self, reply: Message) -> str | None:
        return self.strategy.check_evaluate_reply(reply)

    def wrapper_state(self) -> ConfigRecord:
        """The wrapper's own state to checkpoint (none by default)."""
        return ConfigRecord()

    def restore_wrapper_state(self, state: ConfigRecord) -> None:
        """Take back what `wrapper_state` returned."""

    def checkpoint_state(self) -> RecordDict:
        state = self.strategy.checkpoint_state()
        state[_STATE_KEY] = self.wrapper_state()
        return state

    def restore_checkpoint_state(self, state: RecordDict) -> None:
        inner = RecordDict({k: v for k, v in state.items() if k != _STATE_KEY})
        own = state.get(_STATE_KEY)
        if isinstance(own, ConfigRecord):
            self.restore_wrapper_state(own)
        self.strategy.restore_checkpoint_state(inner)

    def add_noise(self, arrays: ArrayRecord, std: float) -> ArrayRecord:
        """``arrays`` plus N(0, std^2) noise on every element."""
        noised = add_gaussian_noise(arrays_of(arrays), std, self.rng)
        log.info("central DP noise of std %.4f added to the aggregate", std)
        return record_of(list(arrays), noised)


def check_reply_layouts(reply: Message, arrays: ArrayRecord) -> str | None:
    """Why the server cannot clip ``reply``: an ArrayRecord in it that does not hold the arrays
    sent (by name and shape); None if it can."""
    for name, record in reply.content.array_records.items():
        if list(record) != list(arrays) or any(record[k].shape != arrays[k].shape for k in record):
            return f"ArrayRecord {name!r} does not hold the arrays sent, so it cannot be clipped"
    return None


def clip_replies(replies: list[Message], sent: ArrayRecord, clipping_norm: float) -> int:
    """Clip, in each reply, the update of every ArrayRecord (its arrays minus ``sent``) to
    ``clipping_norm``; return how many replies had an update clipped."""
    sent_arrays = arrays_of(sent)
    clipped_replies = 0
    for reply in replies:
        any_clipped = False
        for name, record in reply.content.array_records.items():
            clipped, was_clipped = clip_update(arrays_of(record), sent_arrays, clipping_norm)
            if was_clipped:
                reply.content[name] = record_of(list(record), clipped)
                any_clipped = True
        clipped_replies += any_clipped
    log.info(
        "updates clipped to norm %.4f: %d of %d replies",
        clipping_norm,
        clipped_replies,
        len(replies),
    )
    return clipped_replies


def check_reply_count(count: int, num_sampled_clients: int, *, strict: bool = False) -> bool:
    """False (skip aggregation) if ``strict`` and ``count`` differs from the number of sampled
    clients the noise is calibrated for; that difference is logged either way."""
    if count == num_sampled_clients:
        return True
    log.warning(
        "%d replies to aggregate but num_sampled_clients is %d: the noise is calibrated for "
        "%d, so the privacy guarantee may not hold",
        count,
        num_sampled_clients,
        num_sampled_clients,
    )
    if strict:
        log.warning("accounted release skipped: the reply count must match exactly")
    return not strict


def adaptive_noise_params(
    noise_multiplier: float, num_sampled_clients: int, clipped_count_stddev: float | None
) -> tuple[float, float]:
    """``(clipped_count_stddev, noise_multiplier for the update)`` for adaptive clipping.

    Releasing the noised clipped count costs privacy too; Andrew et al. 2021
    (arXiv:1905.03871, Theorem 1) keep the total at ``noise_multiplier`` by noising the
    update with ``(z^-2 - (2 s)^-2)^-1/2``, ``s`` the count's stddev (default: clients / 20).
    """
    if noise_multiplier <= 0:
        return (0.0 if clipped_count_stddev is None else clipped_count_stddev), 0.0
    if clipped_count_stddev is None:
        clipped_count_stddev = num_sampled_clients / 20
    if noise_multiplier >= 2 * clipped_count_stddev:
        raise InvalidArgument(
            f"noise_multiplier {noise_multiplier} needs clipped_count_stddev above "
            f"{noise_multiplier / 2} (it is {clipped_count_stddev}; the default is "
            "num_sampled_clients / 20): raise it, or lower noise_multiplier"
        )
    update_multiplier = float((noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2) ** -0.5)
    if update_multiplier / noise_multiplier >= 2:
        log.warning(
            "adaptive clipping needs %.2f times the noise on the update; raise "
            "clipped_count_stddev or num_sampled_clients to need less",
            update_multiplier / noise_multiplier,
        )
    return clipped_count_stddev, update_multiplier
