"""The ClientApp a FAB needs. The benchmark's simulated nodes answer the query themselves
(`bench/_fleet_load.py`) with the same reply this one gives, so it runs only on a real node."""

from corolla.app import Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"metrics": MetricRecord({"answered": 1})}), reply_to=msg)
