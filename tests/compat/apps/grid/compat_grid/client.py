"""ClientApp of compat-grid: one handler per message type, each saying which it is and what its
context holds; ``query.boom`` raises."""

from corolla.app import ConfigRecord, Context, Message, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


def answer(msg: Message, context: Context, handler: str) -> Message:
    info = ConfigRecord(
        {
            "handler": handler,
            "message-type": msg.metadata.message_type,
            "partition": int(context.node_config["partition-id"]),
            "context-node-id": context.node_id,
            "context-run-id": context.run_id,
            "num-nodes": int(context.run_config["num-nodes"]),
        }
    )
    return Message(RecordDict({"info": info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return answer(msg, context, "train")


@app.train("sgd")
def train_sgd(msg: Message, context: Context) -> Message:
    return answer(msg, context, "train.sgd")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return answer(msg, context, "evaluate")


@app.query()
def query(msg: Message, context: Context) -> Message:
    return answer(msg, context, "query")


@app.query("boom")
def boom(msg: Message, context: Context) -> Message:
    raise ValueError("compat-grid: boom on purpose")
