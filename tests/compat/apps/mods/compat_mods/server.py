"""ServerApp of compat-mods: train and evaluate messages on every node for a few rounds, checking
what the ClientApp's mods and lifespan did; its own lifespan prints the success line, so the
line shows that the lifespan's tear-down ran after ``main``."""

import time
from collections.abc import Iterator

import numpy as np

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from corolla.serverapp import Grid, ServerApp

app = ServerApp()


@app.lifespan()
def lifespan(context: Context) -> Iterator[None]:
    context.state["lifespan"] = ConfigRecord({"phase": "set up"})
    yield
    phase = context.state["lifespan"]["phase"]
    assert phase == "main done", f"the lifespan's tear-down found phase {phase!r}"
    rounds = int(context.run_config["num-server-rounds"])
    print(f"compat-mods: PASS rounds={rounds} mods and lifespans ran in order", flush=True)


def wait_for_nodes(grid: Grid, wanted: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < wanted:
        assert time.monotonic() < deadline, f"only {len(nodes)} of {wanted} nodes came"
        time.sleep(0.1)
    return nodes


def exchange(grid: Grid, nodes: list[int], message_type: str, server_round: int) -> list[Message]:
    content = RecordDict(
        {"arrays": ArrayRecord([np.ones(100)]), "config": ConfigRecord({"round": server_round})}
    )
    messages = [
        Message(content, dst_node_id=node, message_type=message_type, group_id=str(server_round))
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=60))
    errors = [r.error.reason for r in replies if r.has_error()]
    assert not errors, errors
    assert len(replies) == len(nodes), f"{len(replies)} of {len(nodes)} {message_type} replies"
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    assert context.state["lifespan"]["phase"] == "set up", "main ran before the lifespan"
    nodes = wait_for_nodes(grid, int(context.run_config["num-nodes"]))
    for server_round in range(1, int(context.run_config["num-server-rounds"]) + 1):
        # Each node handles train then evaluate each round: its k-th message finds the
        # lifespan entered k times and left k - 1 times.
        for offset, message_type, trace, size_lines in (
            (1, MessageType.TRAIN, ["lifespan", "app_mod", "train_mod", "train"], (2, 4)),
            (0, MessageType.EVALUATE, ["lifespan", "app_mod", "evaluate"], (1, 1)),
        ):
            for reply in exchange(grid, nodes, message_type, server_round):
                metrics = reply.content["metrics"]
                ran = list(reply.content["trace"]["trace"])
                assert ran == trace, f"{message_type}: {ran} ran, not {trace}"
                assert metrics["app-mod"] == 1, "app_mod did not change the reply"
                entered = 2 * server_round - offset
                got = (metrics["lifespan-enter"], metrics["lifespan-exit"])
                assert got == (entered, entered - 1), f"{message_type}: lifespan counts {got}"
                # message_size_mod logs one line in bytes; arrays_size_mod (train only) more.
                low, high = size_lines
                lines = metrics["size-lines"]
                assert low <= lines <= high, f"{message_type}: {lines} size lines logged"
            if message_type == MessageType.TRAIN:
                assert reply.content["arrays"]["0"].shape == (100,)
    context.state["lifespan"] = ConfigRecord({"phase": "main done"})
