"""Honest outcomes: too few usable replies fail the run in one line; repeated errors collapse."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from corolla.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.clientapp.clientapp import error_headline, error_signature
from corolla.common.errors import AppError, RoundFailed
from corolla.records import ErrorCode
from corolla.serverapp.strategy import FedAvg
from corolla.simulation import InProcessGrid

pytestmark = pytest.mark.timeout(30)

ARRAYS = ArrayRecord([np.zeros(3)])


def good_train(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"num-examples": 1})
    content = RecordDict({"arrays": ArrayRecord([np.ones(3)]), "metrics": metrics})
    return Message(content, reply_to=msg)


def good_evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"loss": 1.0, "num-examples": 1})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def raising_train(msg: Message, context: Context) -> Message:
    # Node id, round and an address in the text: they differ, the error is still "the same".
    where = f"node {context.node_id} round {msg.content['config']['server-round']} at {id(msg):#x}"
    raise ValueError(f"bad shape (3, {context.node_id}) on {where}")


def app_with(train: object = good_train, evaluate: object = good_evaluate) -> ClientApp:
    app = ClientApp()
    app.train()(train)  # type: ignore[arg-type]  # test handlers are plain functions
    app.evaluate()(evaluate)  # type: ignore[arg-type]
    return app


def test_a_round_with_no_usable_reply_fails_with_one_line() -> None:
    grid = InProcessGrid(app_with(raising_train), num_nodes=2)
    with pytest.raises(RoundFailed) as caught:
        FedAvg().start(grid=grid, initial_arrays=ARRAYS, num_rounds=3, timeout=5)
    message = str(caught.value)
    assert "\n" not in message
    # The first reply to arrive is named; the other node failed the same way.
    pattern = (
        r"round 1 train: 0 of 2 replies usable \(1 needed\): node ([12]): "
        r"ValueError: bad shape \(3, \1\) on node \1 round 1 at 0x[0-9a-f]+ \(\+1 node\)"
    )
    assert re.fullmatch(pattern, message), message
    assert isinstance(caught.value, AppError)  # what the ServerApp runtime reports as `failed`
    assert (caught.value.server_round, caught.value.phase) == (1, "train")


def test_distinct_errors_are_each_named() -> None:
    def train(msg: Message, context: Context) -> Message:
        if context.node_id == 1:
            raise KeyError("weights")
        return Message(RecordDict({"arrays": ARRAYS}), reply_to=msg)  # no metrics

    grid = InProcessGrid(app_with(train), num_nodes=2)
    with pytest.raises(RoundFailed, match="0 of 2 replies usable") as caught:
        FedAvg().start(grid=grid, initial_arrays=ARRAYS, num_rounds=1, timeout=5)
    text = str(caught.value)
    assert "node 1: ClientApp replied with error 1: KeyError: 'weights'" not in text
    assert "node 1: KeyError: 'weights'" in text
    assert "node 2: invalid reply: no MetricRecord with 'num-examples'" in text
    assert text.count("; ") == 1  # two distinct errors, in order of arrival


def test_an_evaluate_phase_with_no_usable_reply_fails() -> None:
    def evaluate(msg: Message, context: Context) -> Message:
        raise RuntimeError("no test data")

    grid = InProcessGrid(app_with(evaluate=evaluate), num_nodes=2)
    with pytest.raises(RoundFailed, match=r"^round 1 evaluate: 0 of 2 replies usable"):
        FedAvg().start(grid=grid, initial_arrays=ARRAYS, num_rounds=2, timeout=5)


def test_a_skipped_evaluate_phase_is_not_a_failure() -> None:
    def evaluate(msg: Message, context: Context) -> Message:
        raise AssertionError("evaluate must not be sent")

    grid = InProcessGrid(app_with(evaluate=evaluate), num_nodes=2)
    result = FedAvg(fraction_evaluate=0.0).start(
        grid=grid, initial_arrays=ARRAYS, num_rounds=2, timeout=5
    )
    assert sorted(result.train_metrics_clientapp) == [1, 2]


@pytest.mark.parametrize(("failing", "passes"), [(1, True), (2, False)])
def test_min_usable_fraction_sets_the_bar(failing: int, passes: bool) -> None:
    def train(msg: Message, context: Context) -> Message:
        if context.node_id <= failing:
            raise ValueError("flaky")
        return good_train(msg, context)

    grid = InProcessGrid(app_with(train), num_nodes=4)
    strategy = FedAvg(min_usable_fraction=0.75, fraction_evaluate=0.0)  # ceil(0.75 * 4) = 3
    if passes:
        strategy.start(grid=grid, initial_arrays=ARRAYS, num_rounds=1, timeout=5)
    else:
        with pytest.raises(RoundFailed, match=r"2 of 4 replies usable \(3 needed\)"):
            strategy.start(grid=grid, initial_arrays=ARRAYS, num_rounds=1, timeout=5)


def test_min_usable_replies_above_one() -> None:
    def train(msg: Message, context: Context) -> Message:
        if context.node_id == 1:
            raise ValueError("flaky")
        return good_train(msg, context)

    grid = InProcessGrid(app_with(train), num_nodes=3)
    with pytest.raises(RoundFailed, match=r"2 of 3 replies usable \(3 needed\)"):
        FedAvg(min_usable_replies=3).start(grid=grid, initial_arrays=ARRAYS, num_rounds=1)


def test_identical_errors_are_logged_in_full_once(caplog: pytest.LogCaptureFixture) -> None:
    grid = InProcessGrid(app_with(raising_train), num_nodes=3)
    with caplog.at_level(logging.INFO, logger="corolla"):
        FedAvg(min_usable_replies=0).start(grid=grid, initial_arrays=ARRAYS, num_rounds=4)

    def text_of(logger: str) -> str:
        return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(logger))

    server, client = text_of("corolla.serverapp"), text_of("corolla.clientapp")
    source_line = 'raise ValueError(f"bad shape'  # a line of the traceback, not of the headline
    assert server.count(source_line) == 1
    assert client.count(source_line) == 1  # one ClientApp (process) serves every node here
    assert client.count("raised the same error again") == 11
    repeats = [line for line in server.splitlines() if "same error as before" in line]
    assert re.match(
        r"\[ROUND 1\] train failed with the same error as before on 2 nodes \(\d, \d\): "
        r"ValueError: bad shape \(3, \d\) on node \d round 1 at 0x",
        repeats[0],
    )
    assert [line.split("]")[0] for line in repeats] == [f"[ROUND {r}" for r in (1, 2, 3, 4)]
    assert all("3 nodes (1, 2, 3)" in line for line in repeats[1:])
    summary = "same error on 3 nodes (1, 2, 3), rounds 1-4 (12 times, train): ValueError: bad"
    assert summary in server


def test_the_summary_is_logged_when_the_run_fails(caplog: pytest.LogCaptureFixture) -> None:
    grid = InProcessGrid(app_with(raising_train), num_nodes=2)
    with caplog.at_level(logging.WARNING, logger="corolla.serverapp"), pytest.raises(RoundFailed):
        FedAvg().start(grid=grid, initial_arrays=ARRAYS, num_rounds=3)
    assert "Reply failures in this run:\n  same error on 2 nodes (1, 2), round 1" in caplog.text


# -- what counts as the same error ----------------------------------------------------------------

TRACEBACK = """Traceback (most recent call last):
  File "{home}/apps/{hash}/digits/client_app.py", line {line}, in train
    raise ConnectionError(f"cannot reach {{addr}}")
ConnectionError: cannot reach {addr} (object {uuid}, node {node}, object at {ptr})"""


def traceback_of(**values: object) -> str:
    fields = {
        "home": "/home/ann/.corolla",
        "hash": "ab" * 32,
        "line": 12,
        "addr": "127.0.0.1:9092",
        "uuid": "0b8e7a34-7f8c-4c46-9a0e-5d2b9b7c3e11",
        "node": 1234567890123,
        "ptr": "0x7f3a2c1b9d30",
    }
    return TRACEBACK.format(**{**fields, **values})


@pytest.mark.parametrize(
    "other",
    [
        {"home": "/srv/node-7/corolla", "hash": "cd" * 32},
        {"addr": "[::1]:40123"},
        {"addr": "10.0.0.12:5555", "node": 42, "ptr": "0x55d1e0"},
        {"uuid": "9f0c2b1e-1111-2222-3333-444455556666", "line": 13},
    ],
)
def test_errors_differing_in_ids_addresses_and_paths_are_the_same(other: dict[str, object]) -> None:
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert error_signature(code, traceback_of()) == error_signature(code, traceback_of(**other))


def test_errors_of_another_kind_or_code_differ() -> None:
    code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    first = traceback_of()
    assert error_signature(code, first) != error_signature(ErrorCode.NODE_UNAVAILABLE, first)
    assert error_signature(code, first) != error_signature(
        code, first.replace("ConnectionError: cannot", "TimeoutError: cannot")
    )
    assert error_signature(code, "dtype float32") != error_signature(code, "dtype float64")


def test_the_headline_is_the_exception_line() -> None:
    assert error_headline(traceback_of()).startswith("ConnectionError: cannot reach 127.0.0.1")
    assert error_headline("\n\n") == "(no reason given)"
    assert len(error_headline("x" * 1000)) == 300
