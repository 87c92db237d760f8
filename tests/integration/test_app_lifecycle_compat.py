"""A ClientApp with a lifespan, an app-wide mod and a per-handler mod, and a ServerApp with a
lifespan, run by `run_simulation`: the ClientApp's handlers run in worker processes, so this
checks the order of lifespan, mods and handler where a real deployment runs them.

The apps live in this module: the simulation's worker processes import it
(``test_app_lifecycle_compat``, on ``sys.path`` as pytest put it there) to reach them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from corolla.app import ConfigRecord, Context, Message, RecordDict
from corolla.clientapp import ClientApp
from corolla.serverapp import Grid, ServerApp
from corolla.simulation import run_simulation

pytestmark = pytest.mark.timeout(60)

NODES = 2
ROUNDS = 2
Call = Callable[[Message, Context], Message]

# -- the apps, as a user would write them --------------------------------------------------------


def step(context: Context, name: str) -> list[str]:
    """Append ``name`` to the steps this node's context keeps; the steps so far."""
    record = context.state.get("steps")
    kept = record["steps"] if isinstance(record, ConfigRecord) else []
    steps = [str(s) for s in kept] if isinstance(kept, list) else []
    steps.append(name)
    context.state["steps"] = ConfigRecord({"steps": steps})
    return steps


def app_mod(message: Message, context: Context, call_next: Call) -> Message:
    step(context, "app-mod")
    reply = call_next(message, context)
    step(context, "app-mod-out")
    reply.content["mod"] = ConfigRecord({"pid": os.getpid()})
    return reply


def handler_mod(message: Message, context: Context, call_next: Call) -> Message:
    step(context, "handler-mod")
    reply = call_next(message, context)
    step(context, "handler-mod-out")
    return reply


client = ClientApp(mods=[app_mod])


@client.lifespan()
def client_lifespan(context: Context) -> Iterator[None]:
    step(context, "setup")
    yield
    step(context, "teardown")


@client.query("steps", mods=[handler_mod])
def report_steps(message: Message, context: Context) -> Message:
    steps = step(context, "handler")
    return Message(RecordDict({"steps": ConfigRecord({"steps": steps})}), reply_to=message)


server = ServerApp()


@server.lifespan()
def server_lifespan(context: Context) -> Iterator[None]:
    step(context, "server-setup")
    yield
    step(context, "server-teardown")


@server.main()
def main(grid: Grid, context: Context) -> None:
    step(context, f"main run={grid.run.run_id} lr={grid.run.override_config['lr']}")
    for server_round in range(1, ROUNDS + 1):
        messages = [
            Message(RecordDict(), node, "query.steps", group_id=str(server_round))
            for node in grid.get_node_ids()
        ]
        for reply in grid.send_and_receive(messages, timeout=30):
            assert not reply.has_error(), reply.error
            steps, mod = reply.content["steps"], reply.content["mod"]
            assert isinstance(steps, ConfigRecord) and isinstance(mod, ConfigRecord)
            key = f"node-{reply.metadata.src_node_id}-round-{server_round}"
            context.state[key] = ConfigRecord({"steps": steps["steps"], "pid": mod["pid"]})


# -- the test -------------------------------------------------------------------------------------


def test_lifespan_and_mods_run_in_order_in_the_worker_processes() -> None:
    context = run_simulation(server, client, NODES, run_config={"lr": 0.5}, run_id=41)
    record = context.state["steps"]
    assert isinstance(record, ConfigRecord)
    assert record["steps"] == ["server-setup", "main run=41 lr=0.5", "server-teardown"]
    one_message = ["setup", "app-mod", "handler-mod", "handler"]
    rest = ["handler-mod-out", "app-mod-out", "teardown"]  # after the handler, in the worker
    for node in range(1, NODES + 1):
        first = context.state[f"node-{node}-round-1"]
        second = context.state[f"node-{node}-round-2"]
        assert isinstance(first, ConfigRecord) and isinstance(second, ConfigRecord)
        assert first["steps"] == one_message
        # the node's context kept what the first message's mods and teardown did
        assert second["steps"] == one_message + rest + one_message
        assert first["pid"] != os.getpid()  # the app-wide mod ran in a worker process
