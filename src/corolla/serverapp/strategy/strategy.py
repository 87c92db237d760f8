"""`Strategy`: the round loop every strategy shares; subclasses supply the hooks."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TypeVar

from corolla.common.errors import InvalidArgument
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy._replies import Check, screen, start_tally
from corolla.serverapp.strategy.result import Result, describe_arrays, format_metrics

log = logging.getLogger(__name__)

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
T = TypeVar("T")

DEFAULT_TIMEOUT = 3600.0


class Strategy(ABC):
    """Runs rounds of train -> evaluate -> ``evaluate_fn`` over a `Grid`.

    Each phase sends the messages ``configure_*`` builds, then feeds the replies to
    ``aggregate_*`` *as they arrive*. Replies that carry an error, fail ``check_*_reply`` or do
    not come before the timeout are logged (with node id and reason) and left out.
    """

    @abstractmethod
    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Message]:
        """The ``train`` messages of a round (may wait up to ``timeout`` for nodes)."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """New arrays (None: keep the current ones) and train metrics from the good replies."""

    @abstractmethod
    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Message]:
        """The ``evaluate`` messages of a round (an empty list skips the phase)."""

    @abstractmethod
    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Evaluation metrics from the good replies."""

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """Why a train reply (to ``arrays``) cannot be used, or None if it can."""
        return None

    def check_evaluate_reply(self, reply: Message) -> str | None:
        """Why an evaluate reply cannot be used, or None if it can."""
        return None

    def start(
        self,
        *,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = DEFAULT_TIMEOUT,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> Result:
        """Run ``num_rounds`` rounds; return the final arrays with every round's metrics.

        ``timeout`` (seconds) bounds each wait: for enough nodes to come online (else
        `DeadlineExceeded`), and for the replies of each phase. ``evaluate_fn(round, arrays)``
        runs on the ServerApp before the first round (round 0) and after each round.
        """
        if num_rounds < 0:
            raise InvalidArgument(f"num_rounds must not be negative, got {num_rounds}")
        if not timeout > 0:
            raise InvalidArgument(f"timeout must be positive, got {timeout}")
        log.info("Starting %r for %d rounds", self, num_rounds)
        log.info("Initial arrays: %s", describe_arrays(initial_arrays))
        started = time.monotonic()
        result = Result(arrays=initial_arrays)
        self._evaluate_centrally(0, result, evaluate_fn)
        for server_round in range(1, num_rounds + 1):
            round_started = time.monotonic()
            log.info("[ROUND %d/%d]", server_round, num_rounds)
            self._train(grid, server_round, result, train_config or ConfigRecord(), timeout)
            self._evaluate(grid, server_round, result, evaluate_config or ConfigRecord(), timeout)
            self._evaluate_centrally(server_round, result, evaluate_fn)
            elapsed = time.monotonic() - round_started
            log.info("[ROUND %d/%d] done in %.3f s", server_round, num_rounds, elapsed)
        log.info("Finished %d rounds in %.2f s", num_rounds, time.monotonic() - started)
        log.info("%s", result.summary())
        return result

    def _train(
        self, grid: Grid, server_round: int, result: Result, config: ConfigRecord, timeout: float
    ) -> None:
        sent = result.arrays
        messages = self.configure_train(server_round, sent, config, grid, timeout=timeout)
        arrays, metrics = self._phase(
            grid,
            "train",
            server_round,
            messages,
            timeout,
            lambda reply: self.check_train_reply(reply, sent),
            lambda replies: self.aggregate_train(server_round, replies),
        )
        if arrays is None:
            log.warning(
                "[ROUND %d] no train reply could be aggregated; keeping the previous arrays",
                server_round,
            )
        else:
            result.arrays = arrays
        if metrics is not None:
            result.train_metrics_clientapp[server_round] = metrics
            log.info("[ROUND %d] train metrics: %s", server_round, format_metrics(metrics))

    def _evaluate(
        self, grid: Grid, server_round: int, result: Result, config: ConfigRecord, timeout: float
    ) -> None:
        messages = self.configure_evaluate(
            server_round, result.arrays, config, grid, timeout=timeout
        )
        if not messages:
            return
        metrics = self._phase(
            grid,
            "evaluate",
            server_round,
            messages,
            timeout,
            self.check_evaluate_reply,
            lambda replies: self.aggregate_evaluate(server_round, replies),
        )
        if metrics is not None:
            result.evaluate_metrics_clientapp[server_round] = metrics
            log.info("[ROUND %d] evaluate metrics: %s", server_round, format_metrics(metrics))

    def _phase(
        self,
        grid: Grid,
        phase: str,
        server_round: int,
        messages: list[Message],
        timeout: float,
        check: Check,
        aggregate: Callable[[Iterable[Message]], T],
    ) -> T:
        """Send ``messages``; feed the good replies to ``aggregate`` as they arrive."""
        started = time.monotonic()
        ids = grid.push_messages(messages)
        tally = start_tally(phase, server_round, messages, ids)
        outcome = aggregate(screen(grid.receive(ids, timeout), tally, check))
        tally.finish()
        log.info(
            "[ROUND %d] %s: %d of %d replies ok, %d failed (%.3f s)",
            server_round,
            phase,
            tally.ok,
            tally.sent,
            len(tally.failures),
            time.monotonic() - started,
        )
        return outcome

    def _evaluate_centrally(
        self, server_round: int, result: Result, evaluate_fn: EvaluateFn | None
    ) -> None:
        if evaluate_fn is None:
            return
        metrics = evaluate_fn(server_round, result.arrays)
        if metrics is not None:
            result.evaluate_metrics_serverapp[server_round] = metrics
            log.info("[ROUND %d] evaluate_fn: %s", server_round, format_metrics(metrics))
