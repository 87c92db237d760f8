"""ClientApp of compat-records: a scikit-learn MLP trained with ``partial_fit`` on the arrays of
the received record, edited in place as Flower apps do.

Every expectation is an ``assert``: a broken one turns into an error reply, which the ServerApp
counts (it expects a reply from every node).
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp

app = ClientApp()

TRUE_W = np.array([1.5, -2.0, 0.5, 1.0])  # the labels are the sign of x @ TRUE_W
HIDDEN = 4
CLASSES = np.array([0, 1])


def local_data(partition_id: int, test: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """40 + 10 * partition_id training examples (or 100 test examples) of this partition."""
    rng = np.random.default_rng([partition_id, int(test)])
    x = rng.normal(size=(100 if test else 40 + 10 * partition_id, 4))
    return x, (x @ TRUE_W > 0).astype(int)


def mlp_with(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> MLPClassifier:
    """An MLP whose weights *are* ``params`` (no copy): the usual set-parameters idiom."""
    model = MLPClassifier(hidden_layer_sizes=(HIDDEN,), learning_rate_init=lr, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.partial_fit(x[:2], y[:2], classes=CLASSES)  # builds the layers
    model.coefs_ = params[:2]
    model.intercepts_ = params[2:4]
    return model


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    received = msg.content["arrays"]
    assert list(received.keys()) == ["0", "1", "2", "3", "4"], list(received.keys())

    # copy(): a new mapping; emptying it with to_numpy_ndarrays(keep_input=False) leaves the
    # received record whole.
    scratch = received.copy()
    params = scratch.to_numpy_ndarrays(keep_input=False)
    assert len(scratch) == 0 and len(received) == 5, (len(scratch), len(received))

    # The arrays are writable and independent of the record: edit them in place.
    temperature = params[4]
    assert temperature.shape == () and temperature.dtype == np.float32, temperature
    before = float(received["4"].numpy())
    temperature += partition + 1  # a 0-d parameter, updated in place
    assert float(received["4"].numpy()) == before, "editing the array changed the record"
    assert params[4] == np.float32(before + partition + 1), params[4]  # float32 arithmetic

    config = msg.content["config"].copy()
    config["seen-by"] = partition
    assert "seen-by" not in msg.content["config"], "ConfigRecord.copy() shares its entries"
    assert isinstance(config, ConfigRecord)

    x, y = local_data(partition)
    model = mlp_with(params, x, y, float(config["learning-rate"]))
    coef_before = params[0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(int(config["local-epochs"])):
            model.partial_fit(x, y)  # updates model.coefs_ in place: needs writable arrays
    assert model.coefs_[0] is params[0], "partial_fit replaced the arrays instead of updating"
    assert not np.array_equal(params[0], coef_before), "partial_fit left the weights unchanged"

    out = [*model.coefs_, *model.intercepts_, temperature]
    arrays = ArrayRecord(numpy_ndarrays=out, keep_input=False)
    assert out == [], "ArrayRecord(keep_input=False) kept the input list"
    assert arrays["4"].shape == () and arrays["4"].dtype == "float32"
    values = {"num-examples": len(x), "train-accuracy": float(model.score(x, y))}
    metrics = MetricRecord(metric_dict=values, keep_input=False)
    assert values == {}, "MetricRecord(keep_input=False) kept the input dict"
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    params = msg.content["arrays"].to_numpy_ndarrays()
    x, y = local_data(partition, test=True)
    model = mlp_with(params, x, y, 0.01)
    reply = RecordDict(
        {
            "metrics": MetricRecord(
                metric_dict={
                    "accuracy": float(model.score(x, y)),
                    "temperature": float(params[4]),
                    "num-examples": len(x),
                }
            )
        }
    )
    return msg.create_reply(reply)
