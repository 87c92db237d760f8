"""Fan-out rounds: one small query to every online node, every reply collected and checked.

Waits (``wait-timeout``) until ``nodes`` nodes are online, then for each of ``rounds`` rounds
sends one query message per node (TTL ``round-timeout``) and waits for every reply, timing
the round. With ``sample`` > 0 a round goes to that many nodes only, drawn afresh each round
from the online nodes as a strategy samples them (one look at the online ids, then
`random.Random.sample`, seeded by ``seed``). A reply that carries an error, or none at all,
is an instruction lost. The result (per round: seconds, replies, errors by code, missing)
goes to ``result-file`` as JSON; if an instruction was lost the app raises after writing it
(no later round runs), so the run fails.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from corolla.app import ConfigRecord, Context, Message, MessageType, RecordDict
from corolla.serverapp import Grid, ServerApp

app = ServerApp()

POLL = 0.5  # seconds between looks at the online nodes
REPLY_MARGIN = 5.0  # the round waits this much past the TTL, for the SuperLink's TTL errors


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        online = grid.get_node_ids()
        if len(online) >= expected:
            return online
        if time.monotonic() >= deadline:
            raise RuntimeError(f"only {len(online)} of {expected} nodes online after {timeout} s")
        time.sleep(POLL)


def usable(reply: Message) -> bool:
    """A reply as the simulated nodes make it: a metric record with ``answered``."""
    metrics = reply.content.metric_records.get("metrics")
    return metrics is not None and "answered" in metrics


def fan_out(grid: Grid, nodes: list[int], server_round: int, timeout: float) -> dict[str, Any]:
    """One round: a query to each of ``nodes``; what came back."""
    messages = [
        grid.create_message(
            RecordDict({"config": ConfigRecord({"round": server_round})}),
            MessageType.QUERY,
            node_id,
            group_id=str(server_round),
            ttl=timeout,
        )
        for node_id in nodes
    ]
    started_at = time.time()
    start = time.perf_counter()
    replies = grid.send_and_receive(messages, timeout=timeout + REPLY_MARGIN)
    seconds = time.perf_counter() - start
    sent = {message.metadata.message_id for message in messages}
    answered: set[str] = set()
    errors: Counter[int] = Counter()
    reasons: dict[int, str] = {}
    unusable = 0  # content without the reply's metric
    for reply in replies:
        answered.add(reply.metadata.reply_to_message_id)
        if reply.has_error():
            errors[reply.error.code] += 1
            reasons.setdefault(reply.error.code, reply.error.reason or "")
        elif not usable(reply):
            unusable += 1
    return {
        "round": server_round,
        "started_at": started_at,
        "seconds": seconds,
        "sent": len(messages),
        "replies": len(replies),
        "errors": {str(code): count for code, count in errors.items()},
        "error_reasons": {str(code): reason for code, reason in reasons.items()},
        "unusable": unusable,
        "missing": len(sent - answered),
    }


def lost(result: dict[str, Any]) -> int:
    return int(result["missing"] + sum(result["errors"].values()) + result["unusable"])


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    if not str(config["result-file"]):
        raise ValueError("run config result-file is required")
    result_file = Path(str(config["result-file"]))
    timeout = float(config["round-timeout"])
    start = time.perf_counter()
    nodes = wait_for_nodes(grid, int(config["nodes"]), float(config["wait-timeout"]))
    result: dict[str, Any] = {
        "nodes": len(nodes),
        "wait_seconds": time.perf_counter() - start,
        "rounds": [],
    }
    sample = int(config["sample"])
    if sample < 0 or sample > len(nodes):
        raise ValueError(f"run config sample must be between 0 and {len(nodes)}, not {sample}")
    rng = random.Random(int(config["seed"]))
    for server_round in range(1, int(config["rounds"]) + 1):
        start = time.perf_counter()
        chosen = sorted(rng.sample(grid.get_node_ids(), sample)) if sample else nodes
        sampling = time.perf_counter() - start
        outcome = fan_out(grid, chosen, server_round, timeout)
        outcome["sample_seconds"] = sampling
        result["rounds"].append(outcome)
        print(
            f"fanout round {server_round}: {outcome['replies']} replies from {len(chosen)} "
            f"nodes in {outcome['seconds']:.2f} s, {lost(outcome)} lost",
            flush=True,
        )
        if lost(outcome):
            write_result(result_file, result)
            raise RuntimeError(
                f"round {server_round}: {lost(outcome)} of {len(chosen)} instructions lost "
                f"(missing {outcome['missing']}, error replies {outcome['errors']}, "
                f"unusable {outcome['unusable']}): {outcome['error_reasons']}"
            )
    write_result(result_file, result)
