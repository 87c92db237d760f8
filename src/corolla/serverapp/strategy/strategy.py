"""`Strategy`: the round loop every strategy shares; subclasses supply the hooks.

The hooks have Flower's signatures. What ``aggregate_*`` receive depends on the method: a
plain override gets the round's usable replies as a `list`; one decorated with
`folds_replies` gets a one-pass iterator fed as the replies arrive, so a strategy that folds
(FedAvg and the strategies built on its mean) holds one reply at a time.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from corolla.common.errors import InvalidArgument, RoundFailed
from corolla.records import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from corolla.serverapp.grid import Grid
from corolla.serverapp.strategy._checkpoint import resume_from, to_checkpoint
from corolla.serverapp.strategy._errors import ErrorDigest, distinct_errors
from corolla.serverapp.strategy._replies import Check, Tally, screen, start_tally
from corolla.serverapp.strategy.result import Result, describe_arrays, format_metrics

log = logging.getLogger(__name__)

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = 3600  # seconds, as in Flower
_FOLDS = "_corolla_folds_replies"


def folds_replies(method: F) -> F:
    """Mark an ``aggregate_*`` method as folding its replies in one pass.

    `Strategy.start` then hands it an iterator that yields each usable reply as it arrives
    (and is exhausted after one pass) instead of a list of all of them. An override of a
    marked method is not marked unless it is decorated too.
    """
    setattr(method, _FOLDS, True)
    return method


def is_folding(method: Callable[..., Any]) -> bool:
    """True if ``method`` (a function or bound method) was decorated with `folds_replies`."""
    return bool(getattr(method, _FOLDS, False))


class Strategy(ABC):
    """Runs rounds of train -> evaluate -> ``evaluate_fn`` over a `Grid`.

    Each phase sends the messages ``configure_*`` builds and hands the usable replies to
    ``aggregate_*``: as a list, or *as they arrive* if the method is marked `folds_replies`.
    Replies that carry an error, fail ``check_*_reply`` or do not come before the timeout
    are logged (with node id and reason) and left out; an error seen before (same text but
    for node ids, addresses and numbers) is logged in one line, and the run's distinct errors
    are summed up at its end.

    Tolerance: a phase that sent ``n`` messages needs at least
    ``max(min_usable_replies, ceil(min_usable_fraction * n))`` usable replies, else `start`
    raises `RoundFailed` naming the round, the phase, the counts and the first distinct errors
    (the run fails with that line). Defaults: 1 and 0.0, so one usable reply per phase; set
    ``min_usable_replies = 0`` to go on regardless. A phase with no messages is skipped.
    """

    min_usable_replies: int = 1
    min_usable_fraction: float = 0.0
    # How long ``configure_*`` may wait for nodes: `start` sets it to its ``timeout``.
    _round_timeout: float = DEFAULT_TIMEOUT

    @abstractmethod
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The ``train`` messages of a round (none: the phase is skipped)."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """New arrays (None: keep the current ones) and train metrics from the good replies."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The ``evaluate`` messages of a round (none: the phase is skipped)."""

    @abstractmethod
    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Evaluation metrics from the good replies."""

    @abstractmethod
    def summary(self) -> None:
        """Log the strategy's settings (`start` calls it first)."""

    def checkpoint_state(self) -> RecordDict:
        """State the strategy keeps across rounds (e.g. optimizer moments), saved with each
        checkpoint so that a resumed run goes on exactly; none by default."""
        return RecordDict()

    def restore_checkpoint_state(self, state: RecordDict) -> None:
        """Take back what `checkpoint_state` returned, when a run resumes from a checkpoint."""
        return None

    def check_train_reply(self, reply: Message, arrays: ArrayRecord) -> str | None:
        """Why a train reply (to ``arrays``) cannot be used, or None if it can."""
        return None

    def check_evaluate_reply(self, reply: Message) -> str | None:
        """Why an evaluate reply cannot be used, or None if it can."""
        return None

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = DEFAULT_TIMEOUT,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        *,
        checkpoint: bool = True,
    ) -> Result:
        """Run ``num_rounds`` rounds; return the final arrays with every round's metrics.

        ``timeout`` (seconds) bounds each wait: for enough nodes to come online (else
        `DeadlineExceeded`), and for the replies of each phase. ``evaluate_fn(round, arrays)``
        runs on the ServerApp before the first round (round 0) and after each round.

        With ``checkpoint`` (default), the state after each round (arrays, round, metrics) goes
        to ``grid.save_checkpoint``; a run whose grid has a checkpoint of the same number of
        rounds and strategy class resumes after that round, with the arrays, the earlier
        metrics and the strategy's `checkpoint_state` restored (round 0's ``evaluate_fn`` is
        not run again; sampling is not replayed).
        """
        if num_rounds < 0:
            raise InvalidArgument(f"num_rounds must not be negative, got {num_rounds}")
        if not timeout > 0:
            raise InvalidArgument(f"timeout must be positive, got {timeout}")
        check_tolerance(self.min_usable_replies, self.min_usable_fraction)
        log.info("Starting %s for %d rounds", type(self).__name__, num_rounds)
        log.info("Initial arrays: %s", describe_arrays(initial_arrays))
        self.summary()
        self._round_timeout = timeout
        started = time.monotonic()
        name = type(self).__name__
        resume = resume_from(grid.load_checkpoint(), num_rounds, name) if checkpoint else None
        digest = ErrorDigest()
        try:
            if resume is None:
                first, result = 1, Result(arrays=initial_arrays)
                self._evaluate_centrally(0, result, evaluate_fn)
            else:
                first, result = resume.server_round + 1, resume.result
                self.restore_checkpoint_state(resume.state)
                log.info("resumed from round %d of %d", resume.server_round, num_rounds)
            del initial_arrays, resume  # `result` holds the current arrays: the older ones go
            for server_round in range(first, num_rounds + 1):
                round_started = time.monotonic()
                log.info("[ROUND %d/%d]", server_round, num_rounds)
                phases = (train_config or ConfigRecord(), evaluate_config or ConfigRecord())
                self._train(grid, server_round, result, phases[0], timeout, digest)
                self._evaluate(grid, server_round, result, phases[1], timeout, digest)
                self._evaluate_centrally(server_round, result, evaluate_fn)
                if checkpoint:
                    saved = to_checkpoint(
                        result, server_round, num_rounds, name, self.checkpoint_state()
                    )
                    grid.save_checkpoint(server_round, saved)
                elapsed = time.monotonic() - round_started
                log.info("[ROUND %d/%d] done in %.3f s", server_round, num_rounds, elapsed)
        finally:
            summary = digest.summary()
            if summary:
                log.warning("Reply failures in this run:\n  %s", "\n  ".join(summary))
        log.info("Finished %d rounds in %.2f s", num_rounds, time.monotonic() - started)
        log.info("%s", result.summary())
        return result

    def _train(
        self,
        grid: Grid,
        server_round: int,
        result: Result,
        config: ConfigRecord,
        timeout: float,
        digest: ErrorDigest,
    ) -> None:
        sent = result.arrays
        messages = list(self.configure_train(server_round, sent, config, grid))
        if not messages:
            log.info("[ROUND %d] train: no messages, phase skipped", server_round)
            return
        arrays, metrics = self._phase(
            grid,
            "train",
            server_round,
            messages,
            timeout,
            digest,
            lambda reply: self.check_train_reply(reply, sent),
            self.aggregate_train,
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
        self,
        grid: Grid,
        server_round: int,
        result: Result,
        config: ConfigRecord,
        timeout: float,
        digest: ErrorDigest,
    ) -> None:
        messages = list(self.configure_evaluate(server_round, result.arrays, config, grid))
        if not messages:
            return
        metrics = self._phase(
            grid,
            "evaluate",
            server_round,
            messages,
            timeout,
            digest,
            self.check_evaluate_reply,
            self.aggregate_evaluate,
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
        digest: ErrorDigest,
        check: Check,
        aggregate: Callable[[int, Iterable[Message]], T],
    ) -> T:
        """Send ``messages``; hand the good replies to ``aggregate`` (as they arrive if it
        folds them, else as a list); raise `RoundFailed` if too few were usable."""
        started = time.monotonic()
        ids = grid.push_messages(messages)
        tally = start_tally(phase, server_round, messages, ids, digest)
        replies: Iterator[Message] = screen(grid.receive(ids, timeout), tally, check)
        if is_folding(aggregate):
            outcome = aggregate(server_round, replies)
        else:
            outcome = aggregate(server_round, list(replies))
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
        self._require_usable(tally)
        return outcome

    def _require_usable(self, tally: Tally) -> None:
        needed = max(self.min_usable_replies, math.ceil(self.min_usable_fraction * tally.sent))
        if tally.ok >= needed:
            return
        errors = distinct_errors(tally.failed)
        raise RoundFailed(
            f"round {tally.server_round} {tally.phase}: {tally.ok} of {tally.sent} replies usable"
            f" ({needed} needed)" + (f": {errors}" if errors else ""),
            server_round=tally.server_round,
            phase=tally.phase,
        )

    def _evaluate_centrally(
        self, server_round: int, result: Result, evaluate_fn: EvaluateFn | None
    ) -> None:
        if evaluate_fn is None:
            return
        metrics = evaluate_fn(server_round, result.arrays)
        if metrics is not None:
            result.evaluate_metrics_serverapp[server_round] = metrics
            log.info("[ROUND %d] evaluate_fn: %s", server_round, format_metrics(metrics))


def check_tolerance(min_usable_replies: int, min_usable_fraction: float) -> None:
    """Refuse a tolerance that cannot be met or makes no sense."""
    if min_usable_replies < 0:
        raise InvalidArgument(f"min_usable_replies must not be negative, got {min_usable_replies}")
    if not 0.0 <= min_usable_fraction <= 1.0:
        raise InvalidArgument(
            f"min_usable_fraction must be between 0 and 1, got {min_usable_fraction}"
        )
