"""ServerApp of compat-grid: what a Flower ServerApp relies on from its Grid, its messages and
their replies, checked against Flower's values."""

import time

from corolla.app import DEFAULT_TTL, Context, Message, MessageType, RecordDict
from corolla.serverapp import Grid, ServerApp

app = ServerApp()

# Flower's ErrorCode values (flwr.common.constant.ErrorCode): a ClientApp that raised, for any
# reason (its handler raised, or it has no handler for the message type).
CLIENT_APP_RAISED_EXCEPTION = 2
# Message type -> the handler that should take it (``train.default`` is ``train``).
ROUTES = {
    MessageType.TRAIN: "train",
    "train.default": "train",
    "train.sgd": "train.sgd",
    MessageType.EVALUATE: "evaluate",
    MessageType.QUERY: "query",
}


def wait_for_nodes(grid: Grid, wanted: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < wanted:
        assert time.monotonic() < deadline, f"only {len(nodes)} of {wanted} nodes came"
        time.sleep(0.1)
    return nodes


def check_created(grid: Grid, context: Context, nodes: list[int]) -> list[Message]:
    messages = [grid.create_message(RecordDict(), "query", node, "created") for node in nodes]
    for message, node in zip(messages, nodes, strict=True):
        md = message.metadata
        assert (md.dst_node_id, md.message_type, md.group_id) == (node, "query", "created"), md
        assert md.run_id == context.run_id, (md.run_id, context.run_id)
        assert md.ttl == DEFAULT_TTL, md.ttl
    short = grid.create_message(RecordDict(), "query", nodes[0], "created", ttl=120.0)
    assert short.metadata.ttl == 120.0, short.metadata.ttl
    return messages


def check_replies(messages: list[Message], replies: list[Message], context: Context) -> None:
    by_id = {m.metadata.message_id: m for m in messages}
    assert len(replies) == len(messages), f"{len(replies)} replies to {len(messages)} messages"
    for reply in replies:
        sent = by_id.pop(reply.metadata.reply_to_message_id)  # one reply per message
        assert not reply.has_error(), reply.error
        assert reply.metadata.src_node_id == sent.metadata.dst_node_id
        assert reply.metadata.run_id == context.run_id
        assert reply.metadata.group_id == sent.metadata.group_id
        info = reply.content["info"]
        assert info["context-node-id"] == sent.metadata.dst_node_id, info
        assert info["context-run-id"] == context.run_id, info
        assert info["message-type"] == sent.metadata.message_type, info
        assert info["handler"] == ROUTES[sent.metadata.message_type], info


def send_and_receive(grid: Grid, messages: list[Message]) -> list[Message]:
    return list(grid.send_and_receive(messages, timeout=60))


def push_and_pull(grid: Grid, messages: list[Message], timeout: float = 60.0) -> list[Message]:
    ids = list(grid.push_messages(messages))
    assert len(ids) == len(messages), ids
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(replies) < len(ids):
        assert time.monotonic() < deadline, f"{len(replies)} of {len(ids)} replies came"
        replies.extend(grid.pull_messages(ids))
        time.sleep(0.05)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(ids)
    assert list(grid.pull_messages(ids)) == [], "a reply was returned twice"
    return replies


def error_replies(grid: Grid, nodes: list[int], message_type: str) -> list[Message]:
    messages = [Message(RecordDict(), node, message_type) for node in nodes]
    replies = list(grid.send_and_receive(messages, timeout=60))
    assert len(replies) == len(nodes), replies
    for reply in replies:
        assert reply.has_error() and not reply.has_content(), reply
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    assert DEFAULT_TTL == 43200.0, DEFAULT_TTL  # 12 hours, as in Flower
    assert grid.run.run_id == context.run_id, (grid.run.run_id, context.run_id)
    nodes = wait_for_nodes(grid, int(context.run_config["num-nodes"]))

    messages = check_created(grid, context, nodes)
    check_replies(messages, send_and_receive(grid, messages), context)

    # Every message type, to every node: through send_and_receive, then push/pull.
    for exchange in (send_and_receive, push_and_pull):
        messages = [
            Message(RecordDict(), dst_node_id=node, message_type=message_type, group_id="types")
            for message_type in ROUTES
            for node in nodes
        ]
        assert all(m.metadata.ttl == DEFAULT_TTL for m in messages)
        check_replies(messages, exchange(grid, messages), context)

    for reply in error_replies(grid, nodes, "query.boom"):
        assert reply.error.code == CLIENT_APP_RAISED_EXCEPTION, reply.error
        assert "compat-grid: boom on purpose" in reply.error.reason, reply.error.reason
    for reply in error_replies(grid, nodes, "query.nosuchhandler"):  # no handler for it
        assert reply.error.code == CLIENT_APP_RAISED_EXCEPTION, reply.error

    print(f"compat-grid: PASS nodes={len(nodes)} message types={len(ROUTES)}", flush=True)
