"""Central differential privacy with a clipping norm adapted each round to a target quantile of
the update norms (Andrew et al. 2021, "Differentially Private Learning with Adaptive
Clipping", arXiv:1905.03871)."""

from __future__ import annotations

import logging
import math
from abc import ABC
from collections.abc import Iterable

from corolla.clientapp.mod._dp import KEY_CLIPPING_NORM, KEY_NORM_BIT, gaussian_std
from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy._dp import (
    WrappingStrategy,
    adaptive_noise_params,
    check_reply_count,
    check_reply_layouts,
    clip_replies,
)
from corolla.serverapp.strategy.strategy import Strategy

log = logging.getLogger(__name__)


class DifferentialPrivacyAdaptiveBase(WrappingStrategy, ABC):
    """Clipped updates, aggregated by the wrapped ``strategy``, plus Gaussian noise of std
    ``noise_multiplier * clipping_norm / num_sampled_clients``; then the clipping norm moves
    towards the ``target_clipped_quantile`` of the update norms.

    Each round, every client's update is clipped to the current norm ``C`` and the count of
    clipped updates is released with N(0, ``clipped_count_stddev``^2) noise (default
    ``num_sampled_clients / 20``); with ``b`` the noised clipped fraction, the geometric rule
    ``C <- C * exp(clip_norm_lr * (b - target_clipped_quantile))`` raises ``C`` when more updates
    than targeted were clipped and lowers it when fewer were. Since the count costs privacy too,
    the noise multiplier of the updates is raised so that the round as a whole keeps
    ``noise_multiplier`` (``self.noise_multiplier`` holds the raised value). The aggregate's
    noise is calibrated to the norm the updates were clipped to in that round.
    """

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        num_sampled_clients: int,
        initial_clipping_norm: float = 0.1,
        target_clipped_quantile: float = 0.5,
        clip_norm_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
    ) -> None:
        if strategy is None:
            raise InvalidArgument("no strategy to wrap")
        super().__init__(strategy)
        if not noise_multiplier >= 0:
            raise InvalidArgument(f"noise_multiplier must not be negative, got {noise_multiplier}")
        if num_sampled_clients <= 0:
            raise InvalidArgument(
                f"num_sampled_clients must be positive, got {num_sampled_clients}"
            )
        if not initial_clipping_norm > 0:
            raise InvalidArgument(
                f"initial_clipping_norm must be positive, got {initial_clipping_norm}"
            )
        if not 0 <= target_clipped_quantile <= 1:
            raise InvalidArgument(
                f"target_clipped_quantile must be in [0, 1], got {target_clipped_quantile}"
            )
        if not clip_norm_lr > 0:
            raise InvalidArgument(f"clip_norm_lr must be positive, got {clip_norm_lr}")
        if clipped_count_stddev is not None and not clipped_count_stddev >= 0:
            raise InvalidArgument(
                f"clipped_count_stddev must not be negative, got {clipped_count_stddev}"
            )
        self.num_sampled_clients = num_sampled_clients
        self.clipping_norm = initial_clipping_norm
        self.target_clipped_quantile = target_clipped_quantile
        self.clip_norm_lr = clip_norm_lr
        self.clipped_count_stddev, self.noise_multiplier = adaptive_noise_params(
            noise_multiplier, num_sampled_clients, clipped_count_stddev
        )

    def summary(self) -> None:
        log.info(
            "  DP: noise multiplier %s, clipping norm %s (adapting to clip a fraction %s of the "
            "updates, learning rate %s)",
            self.noise_multiplier,
            self.clipping_norm,
            self.target_clipped_quantile,
            self.clip_norm_lr,
        )
        log.info("  wrapped strategy %s:", type(self.strategy).__name__)
        self.strategy.summary()

    def _aggregate_noised(
        self, server_round: int, replies: list[Message], clipped: int
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with the wrapped strategy, noise the arrays for the norm used this round,
        then adapt the norm to the ``clipped`` count of the ``replies``."""
        check_reply_count(len(replies), self.num_sampled_clients)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            std = gaussian_std(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
            arrays = self.add_noise(arrays, std)
        if replies:
            self._adapt_norm(clipped, len(replies))
        return arrays, metrics

    def _adapt_norm(self, clipped: int, total: int) -> None:
        noised = float(self.rng.normal(clipped, self.clipped_count_stddev))
        fraction = noised / total
        before = self.clipping_norm
        self.clipping_norm = before * math.exp(
            self.clip_norm_lr * (fraction - self.target_clipped_quantile)
        )
        log.info(
            "clipping norm %.4f -> %.4f (%d of %d updates clipped, noised fraction %.3f)",
            before,
            self.clipping_norm,
            clipped,
            total,
            fraction,
        )

    def wrapper_state(self) -> ConfigRecord:
        return ConfigRecord({"clipping_norm": self.clipping_norm})

    def restore_wrapper_state(self, state: ConfigRecord) -> None:
        if "clipping_norm" in state:
            self.clipping_norm = float(state["clipping_norm"])


class DifferentialPrivacyServerSideAdaptiveClipping(DifferentialPrivacyAdaptiveBase):
    """Adaptive clipping done by the server: it clips each train reply's update (its arrays
    minus the arrays sent) and counts the clipped ones itself. Clients need no mod."""

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        num_sampled_clients: int,
        initial_clipping_norm: float = 0.1,
        target_clipped_quantile: float = 0.5,
        clip_norm_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
    ) -> None:
        super().__init__(
            strategy,
            noise_multiplier,
            num_sampled_clients,
            initial_clipping_norm,
            target_clipped_quantile,
            clip_norm_lr,
            clipped_count_stddev,
        )
        self.current_arrays = ArrayRecord()

    def __repr__(self) -> str:
        return "Differential Privacy Strategy Wrapper (Server-Side Adaptive Clipping)"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays
        return self._sync().configure_train(server_round, arrays, config, grid)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        return self.strategy.check_train_reply(reply, arrays) or check_reply_layouts(reply, arrays)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        clipped = clip_replies(replies, self.current_arrays, self.clipping_norm)
        return self._aggregate_noised(server_round, replies, clipped)


class DifferentialPrivacyClientSideAdaptiveClipping(DifferentialPrivacyAdaptiveBase):
    """Adaptive clipping done by the clients (`adaptiveclipping_mod` on the ClientApp): the
    current norm goes to them in the train config under ``"clipping_norm"``, and each reply
    reports ``norm_bit`` (1 if its update was clipped) in its MetricRecord. A reply without
    ``norm_bit`` is refused (its update was not clipped by the mod)."""

    def __repr__(self) -> str:
        return "Differential Privacy Strategy Wrapper (Client-Side Adaptive Clipping)"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config = ConfigRecord({**config, KEY_CLIPPING_NORM: self.clipping_norm})
        return self._sync().configure_train(server_round, arrays, config, grid)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        reason = self.strategy.check_train_reply(reply, arrays)
        if reason is not None:
            return reason
        records = reply.content.metric_records
        if not records or any(KEY_NORM_BIT not in record for record in records.values()):
            return (
                f"no {KEY_NORM_BIT!r} in the reply's MetricRecord (is adaptiveclipping_mod used?)"
            )
        return None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        clipped = sum(_norm_bit(reply) for reply in replies)
        return self._aggregate_noised(server_round, replies, clipped)


def _norm_bit(reply: Message) -> int:
    for record in reply.content.metric_records.values():
        if KEY_NORM_BIT in record:
            return int(bool(record[KEY_NORM_BIT]))
    return 0
