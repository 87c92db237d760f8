"""The built-in mods: clipping (fixed, adaptive), local DP noise, size logging; called directly
with a hand-written ``call_next``, and through a ClientApp."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corolla.clientapp.mod as mod_pkg
from corolla.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from corolla.clientapp import ClientApp
from corolla.clientapp.mod import (
    LocalDpMod,
    adaptiveclipping_mod,
    arrays_size_mod,
    fixedclipping_mod,
    message_size_mod,
)
from corolla.common.errors import InvalidArgument
from corolla.records import ErrorCode

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[Message, Context], Message]


def context() -> Context:
    return Context(run_id=1, node_id=7)


def train_message(sent: dict[str, np.ndarray], config: dict[str, float] | None = None) -> Message:
    content = RecordDict({"arrays": ArrayRecord(sent)})
    if config is not None:
        content["config"] = ConfigRecord(config)
    return Message(content, dst_node_id=7, message_type="train")


def returning(arrays: dict[str, np.ndarray], metrics: bool = True) -> Handler:
    """A handler that replies with ``arrays`` (and a MetricRecord), whatever it receives."""

    def handler(msg: Message, ctxt: Context) -> Message:
        content = RecordDict({"arrays": ArrayRecord(arrays)})
        if metrics:
            content["metrics"] = MetricRecord({"num-examples": 10})
        return Message(content, reply_to=msg)

    return handler


def reply_arrays(reply: Message) -> dict[str, np.ndarray]:
    assert not reply.has_error(), reply.error
    return {k: a.numpy() for k, a in reply.content["arrays"].items()}


def update_norm(reply: Message, sent: dict[str, np.ndarray]) -> float:
    got = reply_arrays(reply)
    return math.sqrt(sum(float(np.sum((got[k] - sent[k]) ** 2)) for k in sent))


SENT: dict[str, np.ndarray] = {
    "w": np.array([1.0, 1.0], dtype=np.float32),
    "b": np.array([2.0], dtype=np.float64),
}


def test_mod_package_exports_exactly_flowers_five() -> None:
    flower = ["LocalDpMod", "adaptiveclipping_mod", "arrays_size_mod", "fixedclipping_mod"]
    assert sorted(mod_pkg.__all__) == sorted([*flower, "message_size_mod"])


# -- fixedclipping_mod ----------------------------------------------------------------------------


def test_fixedclipping_scales_a_large_update_down_to_the_norm() -> None:
    # update = (w: [4, 1] - [1, 1], b: [6] - [2]) = (3, 0, 4): norm 5; clipped to 1 it is
    # (0.6, 0, 0.8), so the reply becomes w = [1.6, 1.0], b = [2.8]
    received = {"w": np.array([4.0, 1.0], dtype=np.float32), "b": np.array([6.0])}
    msg = train_message(SENT, {"clipping_norm": 1.0})
    reply = fixedclipping_mod(msg, context(), returning(received))
    got = reply_arrays(reply)
    np.testing.assert_allclose(got["w"], [1.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(got["b"], [2.8], rtol=1e-12)
    assert got["w"].dtype == np.float32 and got["b"].dtype == np.float64
    assert update_norm(reply, SENT) == pytest.approx(1.0, rel=1e-6)
    assert reply.content["metrics"]["num-examples"] == 10  # the rest of the reply is kept


@settings(max_examples=50, deadline=None)
@given(
    update=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=8),
    clipping_norm=st.floats(1e-3, 1e3),
)
def test_a_clipped_update_never_exceeds_the_norm(update: list[float], clipping_norm: float) -> None:
    sent = {"w": np.zeros(len(update))}
    received = {"w": np.array(update)}
    reply = fixedclipping_mod(
        train_message(sent, {"clipping_norm": clipping_norm}), context(), returning(received)
    )
    assert update_norm(reply, sent) <= clipping_norm * (1 + 1e-12)


def test_an_update_within_the_norm_is_left_exactly_as_it_is() -> None:
    received = {"w": np.array([1.1, 0.9], dtype=np.float32), "b": np.array([2.1])}  # norm ~0.17
    reply = fixedclipping_mod(
        train_message(SENT, {"clipping_norm": 1.0}), context(), returning(received)
    )
    got = reply_arrays(reply)
    assert got["w"].tobytes() == received["w"].tobytes()
    assert got["b"].tobytes() == received["b"].tobytes()


def test_clipping_mods_pass_other_message_types_through() -> None:
    seen: list[str] = []

    def handler(msg: Message, ctxt: Context) -> Message:
        seen.append(msg.metadata.message_type)
        return Message(RecordDict({"m": MetricRecord({"acc": 1.0})}), reply_to=msg)

    msg = Message(RecordDict(), dst_node_id=7, message_type="evaluate")  # no clipping_norm
    for mod in (fixedclipping_mod, adaptiveclipping_mod):
        reply = mod(msg, context(), handler)
        assert reply.content["m"]["acc"] == 1.0
    assert seen == ["evaluate", "evaluate"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (RecordDict({"arrays": ArrayRecord(SENT)}), "ConfigRecord"),
        (RecordDict({"arrays": ArrayRecord(SENT), "config": ConfigRecord()}), "clipping_norm"),
        (RecordDict({"config": ConfigRecord({"clipping_norm": 1.0})}), "ArrayRecord"),
        (
            RecordDict(
                {"arrays": ArrayRecord(SENT), "config": ConfigRecord({"clipping_norm": -1})}
            ),
            "positive",
        ),
    ],
)
def test_a_message_the_mod_cannot_clip_gets_an_error_reply(
    content: RecordDict, reason: str
) -> None:
    called: list[bool] = []

    def handler(msg: Message, ctxt: Context) -> Message:
        called.append(True)
        return returning(SENT)(msg, ctxt)

    msg = Message(content, dst_node_id=7, message_type="train")
    reply = fixedclipping_mod(msg, context(), handler)
    assert reply.has_error() and reason in (reply.error.reason or "")
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION == 6  # Flower's code
    assert reply.metadata.reply_to_message_id == msg.metadata.message_id
    assert not called  # refused before the handler runs


def test_a_reply_with_other_arrays_gets_an_error_reply() -> None:
    msg = train_message(SENT, {"clipping_norm": 1.0})
    renamed = fixedclipping_mod(msg, context(), returning({"v": np.zeros(2), "b": np.zeros(1)}))
    assert renamed.has_error() and "names" in (renamed.error.reason or "")
    reshaped = fixedclipping_mod(msg, context(), returning({"w": np.zeros(3), "b": np.zeros(1)}))
    assert reshaped.has_error() and "shape" in (reshaped.error.reason or "")
    assert reshaped.metadata.reply_to_message_id == msg.metadata.message_id


def test_an_error_reply_from_the_handler_goes_back_unchanged() -> None:
    msg = train_message(SENT, {"clipping_norm": 1.0})

    def failing(msg: Message, ctxt: Context) -> Message:
        from corolla.app import Error

        return Message(error=Error(1, "boom"), reply_to=msg)

    reply = fixedclipping_mod(msg, context(), failing)
    assert reply.has_error() and reply.error.reason == "boom"


# -- adaptiveclipping_mod -------------------------------------------------------------------------


def test_adaptiveclipping_reports_whether_it_clipped() -> None:
    msg = train_message(SENT, {"clipping_norm": 1.0})
    big = {"w": np.array([4.0, 1.0], dtype=np.float32), "b": np.array([6.0])}  # norm 5
    small = {"w": np.array([1.1, 1.0], dtype=np.float32), "b": np.array([2.0])}  # norm 0.1
    clipped = adaptiveclipping_mod(msg, context(), returning(big))
    kept = adaptiveclipping_mod(msg, context(), returning(small))
    assert clipped.content["metrics"]["norm_bit"] == 1
    assert kept.content["metrics"]["norm_bit"] == 0
    assert update_norm(clipped, SENT) == pytest.approx(1.0, rel=1e-6)
    assert reply_arrays(kept)["w"].tobytes() == small["w"].tobytes()


def test_adaptiveclipping_needs_one_metric_record_in_the_reply() -> None:
    msg = train_message(SENT, {"clipping_norm": 1.0})
    reply = adaptiveclipping_mod(msg, context(), returning(SENT, metrics=False))
    assert reply.has_error() and "MetricRecord" in (reply.error.reason or "")


# -- LocalDpMod -----------------------------------------------------------------------------------


def test_local_dp_noise_has_the_gaussian_mechanisms_std() -> None:
    # s = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon
    #   = 0.5 * sqrt(2 ln(1.25e5)) / 0.5 = sqrt(2 * 11.736069) = 4.844805
    dp = LocalDpMod(clipping_norm=1e9, sensitivity=0.5, epsilon=0.5, delta=1e-5)
    assert dp.std_dev == pytest.approx(4.844805, rel=1e-6)
    dp.rng = np.random.default_rng(1234)
    n = 200_000
    sent = {"w": np.zeros(n)}
    reply = dp(train_message(sent), context(), returning(sent))
    noise = reply_arrays(reply)["w"]
    # The sample std of n normal draws has a relative standard error of 1/sqrt(2n) = 0.0016:
    # 2% is over 12 standard errors away, and the seed makes the draw the same every run.
    assert noise.std() == pytest.approx(4.844805, rel=0.02)
    assert abs(noise.mean()) < 5 * 4.844805 / math.sqrt(n)


def test_local_dp_clips_before_adding_noise() -> None:
    dp = LocalDpMod(clipping_norm=1.0, sensitivity=1.0, epsilon=0.9, delta=1e-5)
    dp.rng = np.random.default_rng(7)
    sent = {"w": np.zeros(4)}
    received = {"w": np.array([30.0, 40.0, 0.0, 0.0])}  # norm 50, clipped to (0.6, 0.8, 0, 0)
    a = dp(train_message(sent), context(), returning(received))
    dp.rng = np.random.default_rng(7)
    b = dp(train_message(sent), context(), returning({"w": np.array([0.6, 0.8, 0.0, 0.0])}))
    # the same noise on the same clipped update: identical replies
    np.testing.assert_allclose(reply_arrays(a)["w"], reply_arrays(b)["w"], rtol=1e-12)


def test_local_dp_leaves_other_message_types_alone() -> None:
    dp = LocalDpMod(clipping_norm=1.0, sensitivity=1.0, epsilon=0.5, delta=1e-5)
    msg = Message(RecordDict({"arrays": ArrayRecord(SENT)}), dst_node_id=7, message_type="query")
    reply = dp(msg, context(), returning(SENT))
    assert reply_arrays(reply)["w"].tobytes() == SENT["w"].tobytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clipping_norm": 0.0},
        {"sensitivity": -1.0},
        {"epsilon": 0.0},
        {"delta": 0.0},
        {"delta": 1.0},
    ],
)
def test_local_dp_refuses_parameters_that_give_no_noise_scale(kwargs: dict[str, float]) -> None:
    params = {"clipping_norm": 1.0, "sensitivity": 1.0, "epsilon": 0.5, "delta": 1e-5} | kwargs
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError, as Flower raises
        LocalDpMod(**params)
    with pytest.raises(InvalidArgument):
        LocalDpMod(**params)


# -- size mods ------------------------------------------------------------------------------------


def test_message_size_mod_logs_the_records_bytes(caplog: pytest.LogCaptureFixture) -> None:
    msg = train_message(SENT, {"lr": 0.1})
    # the records' own size measure; the arrays alone hold 2 * 4 + 1 * 8 = 16 bytes of data
    arrays, config = msg.content["arrays"].count_bytes(), msg.content["config"].count_bytes()
    assert arrays >= 16 and config > 0
    with caplog.at_level(logging.INFO, logger="corolla.clientapp.mod"):
        reply = message_size_mod(msg, context(), returning(SENT))
    assert not reply.has_error()
    assert f"Message size: {arrays + config} bytes" in caplog.text


def test_arrays_size_mod_logs_elements_and_bytes(caplog: pytest.LogCaptureFixture) -> None:
    # "arrays": w has 2 elements, b has 1: 3 elements
    msg = train_message(SENT, {"lr": 0.1})
    size = msg.content["arrays"].count_bytes()
    with caplog.at_level(logging.INFO, logger="corolla.clientapp.mod"):
        reply = arrays_size_mod(msg, context(), returning(SENT))
    assert not reply.has_error()
    assert f"'arrays': {{'elements': 3, 'bytes': {size}}}" in caplog.text
    assert f"{size} bytes in total" in caplog.text


# -- through a ClientApp --------------------------------------------------------------------------


def test_mods_run_inside_a_client_app(caplog: pytest.LogCaptureFixture) -> None:
    app = ClientApp(mods=[message_size_mod])
    received = {"w": np.array([4.0, 1.0], dtype=np.float32), "b": np.array([6.0])}

    @app.train(mods=[fixedclipping_mod])
    def train(msg: Message, ctxt: Context) -> Message:
        return returning(received)(msg, ctxt)

    with caplog.at_level(logging.INFO, logger="corolla.clientapp.mod"):
        reply = app(train_message(SENT, {"clipping_norm": 1.0}), context())
    assert update_norm(reply, SENT) == pytest.approx(1.0, rel=1e-6)
    assert "Message size:" in caplog.text


def test_a_local_dp_mod_in_a_client_app_noises_train_replies() -> None:
    dp = LocalDpMod(clipping_norm=1.0, sensitivity=1.0, epsilon=0.5, delta=1e-5)
    dp.rng = np.random.default_rng(3)
    app = ClientApp(mods=[dp])
    app.train()(returning(SENT))
    reply = app(train_message(SENT), context())
    assert not np.array_equal(reply_arrays(reply)["w"], SENT["w"])
