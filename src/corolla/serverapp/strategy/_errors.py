"""Collapsing identical reply failures across nodes and rounds, and naming them in one line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from corolla.clientapp.clientapp import error_headline, error_signature

REFUSED = -1  # the "code" of a failure that is not an error reply (check failed, no reply)
_SHOWN_NODES = 5
_SHOWN_ERRORS = 3


@dataclass(frozen=True)
class Failure:
    """Why one node's reply in one phase of a round could not be used."""

    node_id: int
    server_round: int
    phase: str
    reason: str  # the full text (a ClientApp error's traceback tail included)
    code: int = REFUSED

    @property
    def headline(self) -> str:
        """The reason in one line (a traceback's last line: the exception)."""
        return error_headline(self.reason)

    @property
    def signature(self) -> str:
        """Equal for failures that differ only in node ids, addresses and numbers."""
        return error_signature(self.code, self.reason)


@dataclass
class _Seen:
    first: Failure
    nodes: set[int] = field(default_factory=set)
    rounds: set[int] = field(default_factory=set)
    phases: set[str] = field(default_factory=set)
    count: int = 0


class ErrorDigest:
    """Every distinct failure of a run once, with where and how often it happened."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def note(self, failure: Failure) -> bool:
        """Record ``failure``; True if no identical failure was seen before."""
        seen = self._seen.get(failure.signature)
        new = seen is None
        if seen is None:
            seen = self._seen[failure.signature] = _Seen(first=failure)
        seen.nodes.add(failure.node_id)
        seen.rounds.add(failure.server_round)
        seen.phases.add(failure.phase)
        seen.count += 1
        return new

    def summary(self) -> list[str]:
        """One line per distinct failure, e.g. ``same error on 2 nodes, rounds 1-10 (20 times,
        train): ValueError: bad shape``."""
        lines = []
        for seen in self._seen.values():
            where = f"{describe_nodes(sorted(seen.nodes))}, {_rounds(seen.rounds)}"
            phases = "/".join(sorted(seen.phases))
            if seen.count == 1:
                lines.append(f"error on {where} ({phases}): {seen.first.headline}")
            else:
                times = f"{seen.count} times, {phases}"
                lines.append(f"same error on {where} ({times}): {seen.first.headline}")
        return lines


def distinct_errors(failures: Iterable[Failure]) -> str:
    """The first distinct failures in one line, e.g.
    ``node 12: ValueError: x (+1 node); node 13: KeyError: 'w'``."""
    groups: dict[str, list[Failure]] = {}
    for failure in failures:
        groups.setdefault(failure.signature, []).append(failure)
    parts = []
    for group in list(groups.values())[:_SHOWN_ERRORS]:
        more = len({f.node_id for f in group}) - 1
        also = f" (+{more} node{'s' if more > 1 else ''})" if more else ""
        parts.append(f"node {group[0].node_id}: {group[0].headline}{also}")
    if len(groups) > _SHOWN_ERRORS:
        parts.append(f"{len(groups) - _SHOWN_ERRORS} more distinct errors")
    return "; ".join(parts)


def describe_nodes(node_ids: list[int]) -> str:
    if len(node_ids) == 1:
        return f"node {node_ids[0]}"
    shown = ", ".join(str(n) for n in node_ids[:_SHOWN_NODES])
    more = ", ..." if len(node_ids) > _SHOWN_NODES else ""
    return f"{len(node_ids)} nodes ({shown}{more})"


def _rounds(rounds: set[int]) -> str:
    """``round 3`` or ``rounds 1-4, 7``."""
    ordered = sorted(rounds)
    spans: list[tuple[int, int]] = []
    for rnd in ordered:
        if spans and rnd == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], rnd)
        else:
            spans.append((rnd, rnd))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"round {text}" if len(ordered) == 1 else f"rounds {text}"
