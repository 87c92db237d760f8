"""`Context`: what an app knows about its run and node, and the state it keeps between messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from corolla.records.recorddict import RecordDict

ConfigScalar = int | float | str | bool
UserConfig = dict[str, ConfigScalar]


@dataclass
class Context:
    """Run and node identity, their configs, and ``state`` that persists across a run's messages.

    Fields in Flower's order; the configs and ``state`` may be left out (empty). ``series_id``
    is Flower's and stays with the object (it is not sent).
    """

    run_id: int
    node_id: int
    node_config: UserConfig = field(default_factory=dict)
    state: RecordDict = field(default_factory=RecordDict)
    run_config: UserConfig = field(default_factory=dict)
    series_id: int = 0
