"""Central differential privacy with a fixed clipping norm (McMahan et al. 2018,
arXiv:1710.06963; Geyer et al. 2017, arXiv:1712.07557)."""

from __future__ import annotations

import json
import logging
import math
from abc import ABC
from collections.abc import Iterable

from corolla.clientapp.mod._dp import KEY_CLIPPING_NORM, gaussian_std
from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord
from corolla.serverapp.grid import Grid
from corolla.serverapp.privacy import (
    GaussianPrivacyEvent,
    PrivacyAccountant,
    PrivacyBudgetExhausted,
    PrivacySpent,
    SamplingMethod,
)
from corolla.serverapp.strategy._dp import (
    WrappingStrategy,
    check_reply_count,
    check_reply_layouts,
    clip_replies,
)
from corolla.serverapp.strategy.fedavg import FedAvg
from corolla.serverapp.strategy.strategy import Strategy

log = logging.getLogger(__name__)


class DifferentialPrivacyFixedClippingBase(WrappingStrategy, ABC):
    """Adds Gaussian noise of std ``noise_multiplier * clipping_norm / num_sampled_clients`` to
    each aggregate of clipped updates the wrapped ``strategy`` computes.

    With an ``accountant`` (a `PrivacyAccountant` with no-amplification sampling), each noised
    aggregate is composed as one release, and a round that would take the run past the
    accountant's ``max_epsilon`` stops it with `PrivacyBudgetExhausted` before anything is
    sent. Accounting needs FedAvg's own ``aggregate_train`` (an unweighted mean: every reply
    must carry the same weight) and exactly ``num_sampled_clients`` replies per round.
    """

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        *,
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        super().__init__(strategy)
        if not noise_multiplier >= 0:
            raise InvalidArgument(f"noise_multiplier must not be negative, got {noise_multiplier}")
        if not clipping_norm > 0:
            raise InvalidArgument(f"clipping_norm must be positive, got {clipping_norm}")
        if num_sampled_clients <= 0:
            raise InvalidArgument(
                f"num_sampled_clients must be positive, got {num_sampled_clients}"
            )
        if accountant is not None:
            _check_accountable(strategy, noise_multiplier, accountant)
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.num_sampled_clients = num_sampled_clients
        self.accountant = accountant
        self._pending_events: dict[int, GaussianPrivacyEvent | None] = {}

    def privacy_spent(self) -> PrivacySpent | None:
        """The privacy spent so far, if an accountant keeps track."""
        return None if self.accountant is None else self.accountant.get_privacy_spent()

    def summary(self) -> None:
        log.info(
            "  DP: noise multiplier %s, clipping norm %s", self.noise_multiplier, self.clipping_norm
        )
        spent = self.privacy_spent()
        if spent is not None:
            log.info("  privacy spent: epsilon %.6f at delta %g", spent.epsilon, spent.delta)
        log.info("  wrapped strategy %s:", type(self.strategy).__name__)
        self.strategy.summary()

    def _plan_release(self, server_round: int, messages: Iterable[Message]) -> Iterable[Message]:
        """Check that the round's release fits the budget, and note it for `_release`."""
        if self.accountant is None:
            return messages
        messages = list(messages)
        if server_round in self._pending_events:
            raise InvalidArgument(f"round {server_round} already has a pending privacy event")
        if not messages:
            self._pending_events[server_round] = None
            return messages
        if len(messages) != self.num_sampled_clients:
            raise InvalidArgument(
                f"{len(messages)} train messages, but the privacy accounting assumes "
                f"num_sampled_clients={self.num_sampled_clients}"
            )
        event = GaussianPrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_size=len(messages),
            population_size=self.accountant.config.population_size,
        )
        if self.accountant.config.max_epsilon is not None and self.accountant.would_exceed(event):
            spent = self.accountant.get_privacy_spent()
            raise PrivacyBudgetExhausted(
                f"round {server_round} would exceed max_epsilon "
                f"{self.accountant.config.max_epsilon} (spent so far: epsilon {spent.epsilon:.6f} "
                f"at delta {spent.delta:g})"
            )
        self._pending_events[server_round] = event
        return messages

    def _aggregate_noised(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with the wrapped strategy, noise the arrays, compose the release."""
        event = self._pending_events.pop(server_round, None)
        if not check_reply_count(
            len(replies), self.num_sampled_clients, strict=self.accountant is not None
        ):
            return None, None
        if self.accountant is not None:
            _check_equal_weights(replies, self.strategy)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            std = gaussian_std(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
            arrays = self.add_noise(arrays, std)
            if self.accountant is not None and event is not None:
                self.accountant.compose(event)
                spent = self.accountant.get_privacy_spent()
                log.info(
                    "privacy spent: epsilon %.6f at delta %g after %d releases",
                    spent.epsilon,
                    spent.delta,
                    spent.num_releases,
                )
        return arrays, metrics

    def wrapper_state(self) -> ConfigRecord:
        if self.accountant is None:
            return ConfigRecord()
        return ConfigRecord({"accountant": json.dumps(self.accountant.state_dict())})

    def restore_wrapper_state(self, state: ConfigRecord) -> None:
        if self.accountant is not None and "accountant" in state:
            self.accountant.load_state_dict(json.loads(state["accountant"]))


class DifferentialPrivacyServerSideFixedClipping(DifferentialPrivacyFixedClippingBase):
    """Central DP with the server clipping each client's update to ``clipping_norm``.

    Each train reply's update (its arrays minus the arrays sent) is clipped before the wrapped
    ``strategy`` aggregates; then Gaussian noise is added (see the base class). Clients need
    no mod. ``rng`` draws the noise.
    """

    def __init__(
        self,
        strategy: Strategy,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        *,
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        super().__init__(
            strategy, noise_multiplier, clipping_norm, num_sampled_clients, accountant=accountant
        )
        self.current_arrays = ArrayRecord()

    def __repr__(self) -> str:
        return "Differential Privacy Strategy Wrapper (Server-Side Fixed Clipping)"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays
        messages = self._sync().configure_train(server_round, arrays, config, grid)
        return self._plan_release(server_round, messages)

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        return self.strategy.check_train_reply(reply, arrays) or check_reply_layouts(reply, arrays)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        clip_replies(replies, self.current_arrays, self.clipping_norm)
        return self._aggregate_noised(server_round, replies)


class DifferentialPrivacyClientSideFixedClipping(DifferentialPrivacyFixedClippingBase):
    """Central DP with each client clipping its own update (`fixedclipping_mod` on the
    ClientApp): ``clipping_norm`` goes to the clients in the train config, under
    ``"clipping_norm"``; the server adds the noise (see the base class)."""

    def __repr__(self) -> str:
        return "Differential Privacy Strategy Wrapper (Client-Side Fixed Clipping)"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config = ConfigRecord({**config, KEY_CLIPPING_NORM: self.clipping_norm})
        messages = self._sync().configure_train(server_round, arrays, config, grid)
        return self._plan_release(server_round, messages)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self._aggregate_noised(server_round, list(replies))


def _check_accountable(
    strategy: Strategy, noise_multiplier: float, accountant: PrivacyAccountant
) -> None:
    if noise_multiplier <= 0:
        raise InvalidArgument("privacy accounting needs a positive noise_multiplier")
    if accountant.config.sampling_method is not SamplingMethod.NO_AMPLIFICATION:
        raise InvalidArgument(
            "fixed-clipping accounting needs sampling_method=SamplingMethod.NO_AMPLIFICATION"
        )
    if not isinstance(strategy, FedAvg) or type(strategy).aggregate_train is not (
        FedAvg.aggregate_train
    ):
        raise InvalidArgument(
            "fixed-clipping accounting needs a strategy that aggregates with FedAvg's own "
            "aggregate_train"
        )


def _check_equal_weights(replies: list[Message], strategy: Strategy) -> None:
    """Accounting assumes an unweighted mean: one MetricRecord per reply, equal weights."""
    key = strategy.weighted_by_key if isinstance(strategy, FedAvg) else "num-examples"
    weights = []
    for reply in replies:
        records = reply.content.metric_records
        if len(records) != 1:
            raise InvalidArgument("accounted aggregation needs exactly one MetricRecord per reply")
        weight = next(iter(records.values())).get(key)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InvalidArgument(f"accounted aggregation needs a numeric {key!r} in each reply")
        if not math.isfinite(weight) or weight <= 0:
            raise InvalidArgument(f"accounted aggregation needs a positive finite {key!r}")
        weights.append(float(weight))
    if any(w != weights[0] for w in weights):
        raise InvalidArgument(f"accounted aggregation needs equal {key!r} in every reply")
