"""A strategy's state after a finished round as a `RecordDict`, and back.

A checkpoint holds the current arrays (``"arrays"``), the progress (``"progress"``: round,
number of rounds, strategy class), every `Result` metric so far (``"<history>.<round>"``)
and the strategy's own state (``"state.<name>"``, see `Strategy.checkpoint_state`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from corolla.records import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from corolla.serverapp.strategy.result import Result

log = logging.getLogger(__name__)

ARRAYS_KEY = "arrays"
PROGRESS_KEY = "progress"
STATE_PREFIX = "state."


def _histories(result: Result) -> dict[str, dict[int, MetricRecord]]:
    return {
        "train-metrics-clientapp": result.train_metrics_clientapp,
        "evaluate-metrics-clientapp": result.evaluate_metrics_clientapp,
        "evaluate-metrics-serverapp": result.evaluate_metrics_serverapp,
    }


def to_checkpoint(
    result: Result,
    server_round: int,
    num_rounds: int,
    strategy: str,
    state: RecordDict | None = None,
) -> RecordDict:
    """The checkpoint of ``result`` (and the strategy's ``state``) after round
    ``server_round`` of ``num_rounds``."""
    progress = ConfigRecord(
        {"server-round": server_round, "num-rounds": num_rounds, "strategy": strategy}
    )
    records = RecordDict({ARRAYS_KEY: result.arrays, PROGRESS_KEY: progress})
    for name, by_round in _histories(result).items():
        for server_round_, metrics in by_round.items():
            records[f"{name}.{server_round_}"] = metrics
    for name, record in (state or RecordDict()).items():
        records[STATE_PREFIX + name] = record
    return records


@dataclass(frozen=True)
class Resume:
    """Where a run picks up: after ``server_round``, with ``result`` and the strategy's
    ``state`` as they were then."""

    server_round: int
    result: Result
    state: RecordDict = field(default_factory=RecordDict)


def resume_from(
    checkpoint: tuple[int, RecordDict] | None, num_rounds: int, strategy: str
) -> Resume | None:
    """What ``checkpoint`` restores, or None (with a warning) if it is not one of this run:
    malformed, of another number of rounds or of another strategy class."""
    if checkpoint is None:
        return None
    server_round, records = checkpoint
    arrays = records.get(ARRAYS_KEY)
    progress = records.get(PROGRESS_KEY)
    if not isinstance(arrays, ArrayRecord) or not isinstance(progress, ConfigRecord):
        log.warning("Ignoring the checkpoint of round %d: it is not a strategy's", server_round)
        return None
    theirs = (progress.get("server-round"), progress.get("num-rounds"), progress.get("strategy"))
    if theirs != (server_round, num_rounds, strategy):
        log.warning(
            "Ignoring the checkpoint of round %d: it is of round %s of %s rounds of %s, "
            "this run has %d rounds of %s",
            server_round,
            *theirs,
            num_rounds,
            strategy,
        )
        return None
    result = Result(arrays=arrays)
    histories = _histories(result)
    state = RecordDict()
    for key, record in records.items():
        if key.startswith(STATE_PREFIX):
            state[key.removeprefix(STATE_PREFIX)] = record
            continue
        name, _, number = key.rpartition(".")
        if name in histories and number.isdigit() and isinstance(record, MetricRecord):
            histories[name][int(number)] = record
    return Resume(server_round, result, state)
