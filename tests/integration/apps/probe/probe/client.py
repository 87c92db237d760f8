"""ClientApp of the probe app: adds 1 to the arrays; raises on a chosen partition."""

import os
import time

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    if context.run_config["client-raise-all"] or int(
        context.node_config.get("partition-id", -2)
    ) == int(context.run_config["client-raise-node"]):
        raise RuntimeError("probe ClientApp failure on purpose")
    if context.run_config.get("env-names"):
        print(f"probe client env-names={','.join(sorted(os.environ))}", flush=True)
    print(f"probe client training pid={os.getpid()}", flush=True)
    hold_file = str(context.run_config["hold-once-file"])
    if hold_file and int(context.node_config.get("partition-id", -2)) == 0:
        try:  # the first ClientApp of partition 0 to get here holds its message
            os.close(os.open(hold_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            print(f"probe client holding pid={os.getpid()}", flush=True)
            time.sleep(300)  # until the test kills this process
    time.sleep(float(context.run_config["round-sleep"]))
    arrays = [a + 1 for a in msg.content["arrays"].to_numpy_ndarrays()]
    count = context.state.get("count", MetricRecord({"n": 0}))
    context.state["count"] = MetricRecord({"n": int(count["n"]) + 1})
    metrics = MetricRecord(
        {"num-examples": 5, "pid": os.getpid(), "calls": int(context.state["count"]["n"])}
    )
    print(f"probe client pid={os.getpid()} call={context.state['count']['n']}", flush=True)
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 5, "loss": 1.0})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
