"""`Result`: what a strategy's ``start()`` returns (final arrays and per-round metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from corolla.records import ArrayRecord, MetricRecord

_MAX_LIST_ITEMS = 4


def format_metrics(metrics: Mapping[str, object]) -> str:
    """``key=value`` pairs for logs: floats to 4 significant digits, long lists shortened."""
    return ", ".join(f"{key}={_format_value(value)}" for key, value in metrics.items()) or "-"


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        shown = ", ".join(_format_value(v) for v in value[:_MAX_LIST_ITEMS])
        more = ", ..." if len(value) > _MAX_LIST_ITEMS else ""
        return f"[{shown}{more}]"
    return str(value)


def describe_arrays(arrays: ArrayRecord) -> str:
    """A one-line size summary of ``arrays`` (count, parameters, bytes)."""
    params = 0
    for array in arrays.values():
        count = 1
        for dim in array.shape:
            count *= dim
        params += count
    return f"{len(arrays)} arrays, {params:,} parameters, {arrays.count_bytes():,} bytes"


@dataclass(repr=False)
class Result:
    """The final ``arrays`` and the metrics of every round (keyed by round number).

    ``evaluate_metrics_serverapp`` holds what ``evaluate_fn`` returned; its round 0 is the
    evaluation of the initial arrays.
    """

    arrays: ArrayRecord = field(default_factory=ArrayRecord)
    train_metrics_clientapp: dict[int, MetricRecord] = field(default_factory=dict)
    evaluate_metrics_clientapp: dict[int, MetricRecord] = field(default_factory=dict)
    evaluate_metrics_serverapp: dict[int, MetricRecord] = field(default_factory=dict)

    def summary(self) -> str:
        """A multi-line, human-readable overview (also what ``print(result)`` shows)."""
        lines = [f"Result(final arrays: {describe_arrays(self.arrays)})"]
        sections = [
            ("ClientApp train metrics", self.train_metrics_clientapp),
            ("ClientApp evaluate metrics", self.evaluate_metrics_clientapp),
            ("ServerApp evaluate metrics", self.evaluate_metrics_serverapp),
        ]
        for title, by_round in sections:
            if not by_round:
                lines.append(f"  {title}: none")
                continue
            lines.append(f"  {title}:")
            lines.extend(
                f"    round {rnd}: {format_metrics(by_round[rnd])}" for rnd in sorted(by_round)
            )
        return "\n".join(lines)

    __repr__ = summary
