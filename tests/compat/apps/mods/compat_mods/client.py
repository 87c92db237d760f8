"""ClientApp of compat-mods: an app-wide mod and ``message_size_mod`` around every handler,
``arrays_size_mod`` and a mod of its own around ``train`` only, and a lifespan that counts
messages in the context's state and listens to the size mods' log lines.

Each handler reports what ran, in order, and what the size mods logged; the ServerApp checks.
"""

import logging
from collections.abc import Callable, Iterator
from logging import INFO

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.clientapp.mod import arrays_size_mod, message_size_mod
from corolla.common import log

TRACE: list[str] = []  # what ran for the message being handled, in order
SIZE_LINES: list[str] = []  # the log lines about sizes (in bytes) logged meanwhile
Handler = Callable[[Message, Context], Message]


class SizeLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if "bytes" in record.getMessage():
            SIZE_LINES.append(record.getMessage())


def app_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    TRACE.append("app_mod")
    reply = call_next(msg, context)
    if reply.has_content():
        reply.content["metrics"]["app-mod"] = 1  # a mod may change the reply on its way out
    return reply


def train_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    TRACE.append("train_mod")
    msg.content["config"]["seen-by-train-mod"] = True  # ... and the message on its way in
    return call_next(msg, context)


app = ClientApp(mods=[app_mod, message_size_mod])


@app.lifespan()
def lifespan(context: Context) -> Iterator[None]:
    TRACE.clear()
    SIZE_LINES.clear()
    TRACE.append("lifespan")
    counts = context.state.get("lifespan", MetricRecord({"enter": 0, "exit": 0}))
    context.state["lifespan"] = MetricRecord({"enter": counts["enter"] + 1, "exit": counts["exit"]})
    logger: logging.Logger = log.__self__  # type: ignore[attr-defined]
    handler, level = SizeLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(INFO)  # the size mods log at INFO
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        counts = context.state["lifespan"]
        context.state["lifespan"] = MetricRecord(
            {"enter": counts["enter"], "exit": counts["exit"] + 1}
        )


def report(msg: Message, context: Context) -> Message:
    TRACE.append(msg.metadata.message_type)
    counts = context.state["lifespan"]
    metrics = MetricRecord(
        {
            "num-examples": 1,
            "size-lines": len(SIZE_LINES),
            "lifespan-enter": counts["enter"],
            "lifespan-exit": counts["exit"],
        }
    )
    trace = ConfigRecord({"trace": list(TRACE)})
    return Message(RecordDict({"metrics": metrics, "trace": trace}), reply_to=msg)


@app.train(mods=[train_mod, arrays_size_mod])
def train(msg: Message, context: Context) -> Message:
    assert msg.content["config"].get("seen-by-train-mod") is True, "train_mod did not run first"
    reply = report(msg, context)
    reply.content["arrays"] = ArrayRecord(msg.content["arrays"].to_numpy_ndarrays())
    return reply


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    assert "seen-by-train-mod" not in msg.content["config"], "train_mod ran for evaluate"
    return report(msg, context)
