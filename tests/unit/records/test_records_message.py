"""`Message` construction and replies, `ClientApp` dispatch, `ServerApp` and `Grid` basics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest

from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.records import (
    DEFAULT_TTL,
    ConfigRecord,
    Context,
    Error,
    ErrorCode,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from corolla.records.message import restore_message, validate_message_type
from corolla.serverapp import Grid, ServerApp
from corolla.serverapp._run import Run


def make_message(
    message_type: str = "train",
    *,
    ttl: float | None = None,
    group_id: str | None = "round-1",
    run_id: int = 11,
    src: int = 1,
    dst: int = 42,
) -> Message:
    message = Message(
        RecordDict({"config": ConfigRecord({"lr": 0.1})}),
        dst,
        message_type,
        ttl=ttl,
        group_id=group_id,
    )
    message.metadata.run_id = run_id
    message.metadata.src_node_id = src
    return message


CONTEXT = Context(run_id=11, node_id=42)

# -- construction --------------------------------------------------------------------------------


def test_new_message_metadata() -> None:
    before = time.time()
    message = Message(RecordDict(), 7, "evaluate", group_id="g")
    md = message.metadata
    assert (md.run_id, md.src_node_id, md.dst_node_id) == (0, 0, 7)
    assert md.reply_to_message_id == ""
    assert md.group_id == "g"
    assert md.message_type == "evaluate"
    assert md.ttl == DEFAULT_TTL
    assert before <= md.created_at <= time.time()
    assert len(md.message_id) == 32
    int(md.message_id, 16)  # hex
    assert message.has_content()
    assert not message.has_error()


def test_message_ids_are_unique() -> None:
    ids = {Message(RecordDict(), 1, "train").metadata.message_id for _ in range(200)}
    assert len(ids) == 200


def test_group_id_defaults_to_empty() -> None:
    assert Message(RecordDict(), 1, "train").metadata.group_id == ""


def test_explicit_ttl_kept() -> None:
    assert Message(RecordDict(), 1, "train", ttl=30).metadata.ttl == 30.0
    assert isinstance(Message(RecordDict(), 1, "train", ttl=30).metadata.ttl, float)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
def test_non_positive_ttl_refused(ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="ttl"):
        Message(RecordDict(), 1, "train", ttl=ttl)


def test_exactly_one_of_content_or_error() -> None:
    original = make_message()
    with pytest.raises(TypeError, match="exactly one"):
        Message(reply_to=original)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="exactly one"):
        Message(RecordDict(), error=Error(ErrorCode.UNKNOWN), reply_to=original)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="exactly one"):
        Message(dst_node_id=1, message_type="train")  # type: ignore[call-overload]


def test_only_a_reply_carries_an_error() -> None:
    with pytest.raises(TypeError, match="reply"):
        Message(error=Error(ErrorCode.UNKNOWN), dst_node_id=1, message_type="train")  # type: ignore[call-overload]


@pytest.mark.parametrize("content", [{}, MetricRecord(), ConfigRecord(), "x"])
def test_content_must_be_record_dict(content: Any) -> None:
    with pytest.raises(TypeError, match="RecordDict"):
        Message(content, 1, "train")


def test_new_message_needs_destination_and_type() -> None:
    with pytest.raises(TypeError):
        Message(RecordDict(), dst_node_id=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        Message(RecordDict(), message_type="train")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "kwargs", [{"dst_node_id": 3}, {"message_type": "train"}, {"group_id": "other"}]
)
def test_reply_cannot_override_routing(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="inherits"):
        Message(RecordDict(), reply_to=make_message(), **kwargs)


# -- message types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_type",
    [
        "fit",
        "train.",
        "",
        "Train",
        "TRAIN",
        " train",
        "train ",
        ".train",
        "train..x",
        "train.fed prox",
        "train.1x",
        "train.a.b",
        "system",
        "evaluate.",
        "querying",
    ],
)
def test_invalid_message_types_refused(message_type: str) -> None:
    with pytest.raises(InvalidArgument, match="message_type"):
        validate_message_type(message_type)
    with pytest.raises(InvalidArgument):
        Message(RecordDict(), 1, message_type)


@pytest.mark.parametrize("message_type", [None, 1, b"train"])
def test_non_str_message_type_refused(message_type: Any) -> None:
    with pytest.raises(InvalidArgument):
        validate_message_type(message_type)


@pytest.mark.parametrize(
    "message_type",
    [
        MessageType.TRAIN,
        MessageType.EVALUATE,
        MessageType.QUERY,
        "train.fedprox",
        "evaluate.my_eval-2",
        "query._private",
        "train.X9",
    ],
)
def test_valid_message_types(message_type: str) -> None:
    assert validate_message_type(message_type) == message_type
    assert Message(RecordDict(), 1, message_type).metadata.message_type == message_type


def test_trailing_newline_message_type_refused() -> None:
    with pytest.raises(InvalidArgument):
        validate_message_type("train\n")


# -- replies -------------------------------------------------------------------------------------


def test_reply_inherits_and_swaps() -> None:
    original = make_message("train.fedprox", run_id=5, src=3, dst=9, group_id="g7")
    reply = Message(RecordDict({"m": MetricRecord({"acc": 1.0})}), reply_to=original)
    md, omd = reply.metadata, original.metadata
    assert md.run_id == 5
    assert md.group_id == "g7"
    assert md.message_type == "train.fedprox"
    assert (md.src_node_id, md.dst_node_id) == (9, 3)
    assert md.reply_to_message_id == omd.message_id
    assert md.message_id != omd.message_id
    assert md.created_at >= omd.created_at
    assert reply.content["m"] == MetricRecord({"acc": 1.0})


def test_error_reply_inherits_and_swaps() -> None:
    original = make_message("query", src=1, dst=2)
    reply = Message(error=Error(ErrorCode.NODE_UNAVAILABLE, "gone"), reply_to=original)
    assert reply.has_error()
    assert not reply.has_content()
    assert reply.error == Error(ErrorCode.NODE_UNAVAILABLE, "gone")
    assert (reply.metadata.src_node_id, reply.metadata.dst_node_id) == (2, 1)
    assert reply.metadata.reply_to_message_id == original.metadata.message_id
    assert reply.metadata.message_type == "query"


def test_reply_ttl_is_remaining_time() -> None:
    original = make_message(ttl=1000.0)
    original.metadata.created_at -= 100.0  # sent 100 s ago
    reply = Message(RecordDict(), reply_to=original)
    assert 895.0 <= reply.metadata.ttl <= 900.0
    # the reply expires when the original does
    deadline = original.metadata.created_at + original.metadata.ttl
    assert reply.metadata.created_at + reply.metadata.ttl == pytest.approx(deadline, abs=1e-6)


def test_reply_ttl_never_above_original() -> None:
    original = make_message(ttl=60.0)
    reply = Message(RecordDict(), reply_to=original)
    assert 0 < reply.metadata.ttl <= 60.0
    longer = Message(RecordDict(), reply_to=original, ttl=10_000.0)  # type: ignore[call-overload]
    assert longer.metadata.ttl <= 60.0


def test_reply_ttl_can_be_shortened() -> None:
    original = make_message(ttl=600.0)
    reply = Message(RecordDict(), reply_to=original, ttl=5.0)  # type: ignore[call-overload]
    assert reply.metadata.ttl == 5.0
    with pytest.raises(InvalidArgument):
        Message(RecordDict(), reply_to=original, ttl=0)  # type: ignore[call-overload]


def test_reply_to_expired_message_has_tiny_positive_ttl() -> None:
    original = make_message(ttl=10.0)
    original.metadata.created_at -= 3600.0
    assert original.expired()
    reply = Message(error=Error(ErrorCode.TTL_EXPIRED), reply_to=original)
    assert 0 < reply.metadata.ttl <= 1e-3


def test_reply_of_reply_chains() -> None:
    first = make_message(src=1, dst=2)
    second = Message(RecordDict(), reply_to=first)
    third = Message(RecordDict(), reply_to=second)
    assert (third.metadata.src_node_id, third.metadata.dst_node_id) == (1, 2)
    assert third.metadata.reply_to_message_id == second.metadata.message_id
    assert third.metadata.ttl <= second.metadata.ttl <= first.metadata.ttl


def test_reply_ttl_capped_under_clock_skew() -> None:
    original = make_message(ttl=60.0)
    original.metadata.created_at += 30.0  # sender's clock is 30 s ahead
    reply = Message(RecordDict(), reply_to=original)
    assert reply.metadata.ttl <= 60.0


# -- content and error accessors -----------------------------------------------------------------


def test_content_on_error_message_raises() -> None:
    reply = Message(error=Error(ErrorCode.UNKNOWN, "x"), reply_to=make_message())
    with pytest.raises(ValueError, match="error"):
        _ = reply.content


def test_error_on_content_message_raises() -> None:
    with pytest.raises(ValueError, match="content"):
        _ = make_message().error


def test_content_setter_replaces_content_but_not_an_error() -> None:
    message = make_message()
    message.content = RecordDict({"m": MetricRecord({"x": 1})})
    assert message.content["m"] == MetricRecord({"x": 1})
    with pytest.raises(TypeError):
        message.content = {"m": MetricRecord()}  # type: ignore[assignment]
    reply = Message(error=Error(ErrorCode.UNKNOWN, "x"), reply_to=make_message())
    with pytest.raises(ValueError, match="error"):  # Flower: an error message takes no content
        reply.content = RecordDict()
    assert reply.has_error() and not reply.has_content()


def test_error_setter_replaces_error_but_not_content() -> None:
    reply = Message(error=Error(ErrorCode.UNKNOWN, "x"), reply_to=make_message())
    reply.error = Error(ErrorCode.NODE_UNAVAILABLE, "gone")
    assert reply.error == Error(ErrorCode.NODE_UNAVAILABLE, "gone")
    with pytest.raises(TypeError):
        reply.error = "gone"  # type: ignore[assignment]
    message = make_message()
    with pytest.raises(ValueError, match="content"):
        message.error = Error(ErrorCode.UNKNOWN)
    assert message.has_content() and not message.has_error()


def test_error_is_immutable_with_optional_reason() -> None:
    error = Error(ErrorCode.UNKNOWN, "x")
    with pytest.raises(AttributeError):
        error.reason = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        error.code = 1  # type: ignore[misc]
    assert Error(3).reason is None
    assert Error(3) == Error(3, "")  # no reason and an empty one look the same on the wire
    assert Error(3, "a") != Error(3, "b")
    assert Error(3, "a") != Error(4, "a")
    assert hash(Error(3)) == hash(Error(3, ""))


def test_expired() -> None:
    message = make_message(ttl=10.0)
    created = message.metadata.created_at
    assert not message.expired(created + 9.9)
    assert not message.expired(created + 10.0)
    assert message.expired(created + 10.1)
    assert not message.expired()


def test_restore_message_keeps_metadata() -> None:
    original = make_message()
    restored = restore_message(original.metadata, content=RecordDict())
    assert restored.metadata is original.metadata
    with pytest.raises(InvalidArgument):
        restore_message(original.metadata)
    with pytest.raises(InvalidArgument):
        restore_message(original.metadata, content=RecordDict(), error=Error(0))


def test_repr() -> None:
    text = repr(make_message("evaluate"))
    assert "evaluate" in text
    assert "1->42" in text
    assert "error=Error" in repr(Message(error=Error(ErrorCode.UNKNOWN), reply_to=make_message()))


# -- ClientApp dispatch --------------------------------------------------------------------------


def reply_with(tag: str) -> Any:
    def handler(message: Message, context: Context) -> Message:
        return Message(RecordDict({"who": ConfigRecord({"tag": tag})}), reply_to=message)

    return handler


def tag_of(reply: Message) -> str:
    assert not reply.has_error(), reply.error if reply.has_error() else None
    record = reply.content["who"]
    assert isinstance(record, ConfigRecord)
    return str(record["tag"])


@pytest.fixture
def app() -> ClientApp:
    app = ClientApp()
    app.train()(reply_with("train"))
    app.evaluate()(reply_with("evaluate"))
    app.query()(reply_with("query"))
    app.train("fedprox")(reply_with("train.fedprox"))
    app.evaluate("final")(reply_with("evaluate.final"))
    return app


@pytest.mark.parametrize(
    "message_type", ["train", "evaluate", "query", "train.fedprox", "evaluate.final"]
)
def test_dispatch_by_type(app: ClientApp, message_type: str) -> None:
    message = make_message(message_type)
    reply = app(message, CONTEXT)
    assert tag_of(reply) == message_type
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert reply.metadata.message_type == message_type


def test_message_types_listed(app: ClientApp) -> None:
    assert app.message_types == sorted(
        ["train", "evaluate", "query", "train.fedprox", "evaluate.final"]
    )


def test_handler_receives_message_and_context() -> None:
    seen: list[tuple[Message, Context]] = []
    app = ClientApp()

    @app.query()
    def handle(message: Message, context: Context) -> Message:
        seen.append((message, context))
        context.state["counter"] = MetricRecord({"n": 1})
        return Message(RecordDict(), reply_to=message)

    message = make_message("query")
    context = Context(run_id=11, node_id=42)
    app(message, context)
    assert seen == [(message, context)]
    assert context.state["counter"] == MetricRecord({"n": 1})


def test_decorator_returns_the_handler() -> None:
    app = ClientApp()
    handler = reply_with("x")
    assert app.train()(handler) is handler


@pytest.mark.parametrize("message_type", ["train.other", "query.fedprox", "evaluate.x"])
def test_unknown_type_gives_error_reply(message_type: str) -> None:
    app = ClientApp()
    app.train()(reply_with("train"))
    app.train("fedprox")(reply_with("fedprox"))
    message = make_message(message_type)
    reply = app(message, CONTEXT)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert repr(message_type) in reply.error.reason
    assert "train.fedprox" in reply.error.reason  # lists what is registered
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert reply.metadata.dst_node_id == message.metadata.src_node_id


def test_base_handler_does_not_catch_named_types() -> None:
    app = ClientApp()
    app.train()(reply_with("train"))
    reply = app(make_message("train.fedprox"), CONTEXT)
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def test_named_handler_does_not_catch_base_type() -> None:
    app = ClientApp()
    app.train("fedprox")(reply_with("fedprox"))
    reply = app(make_message("train"), CONTEXT)
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def test_empty_app_reports_none_registered() -> None:
    reply = ClientApp()(make_message("query"), CONTEXT)
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "none" in reply.error.reason


def test_raising_handler_gives_error_reply() -> None:
    app = ClientApp()

    @app.train()
    def handle(message: Message, context: Context) -> Message:
        raise RuntimeError("exploded-7f3a")

    message = make_message("train")
    reply = app(message, CONTEXT)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "exploded-7f3a" in reply.error.reason
    assert "RuntimeError" in reply.error.reason
    assert reply.metadata.reply_to_message_id == message.metadata.message_id


def test_raising_handler_reason_is_bounded() -> None:
    app = ClientApp()

    def recurse(n: int) -> None:
        if n == 0:
            raise ValueError("deep-failure")
        recurse(n - 1)

    @app.evaluate()
    def handle(message: Message, context: Context) -> Message:
        recurse(50)
        raise AssertionError("unreachable")

    reply = app(make_message("evaluate"), CONTEXT)
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "deep-failure" in reply.error.reason
    assert len(reply.error.reason.splitlines()) <= 12


def test_keyboard_interrupt_is_not_swallowed() -> None:
    app = ClientApp()

    @app.train()
    def handle(message: Message, context: Context) -> Message:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        app(make_message("train"), CONTEXT)


@pytest.mark.parametrize(
    "bad_reply",
    [
        pytest.param(lambda m: None, id="none"),
        pytest.param(lambda m: RecordDict(), id="record-dict"),
        pytest.param(lambda m: Message(RecordDict(), 1, "train"), id="new-message"),
        pytest.param(
            lambda m: Message(RecordDict(), reply_to=make_message("train")), id="reply-to-other"
        ),
        pytest.param(lambda m: m, id="echo"),
    ],
)
def test_non_reply_gives_invalid_reply(bad_reply: Any) -> None:
    app = ClientApp()

    @app.train()
    def handle(message: Message, context: Context) -> Message:
        return bad_reply(message)  # type: ignore[no-any-return]

    message = make_message("train")
    reply = app(message, CONTEXT)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.INVALID_REPLY
    assert "reply_to" in reply.error.reason
    assert reply.metadata.reply_to_message_id == message.metadata.message_id


def test_handler_may_return_its_own_error_reply() -> None:
    app = ClientApp()

    @app.query()
    def handle(message: Message, context: Context) -> Message:
        return Message(error=Error(ErrorCode.UNKNOWN, "custom"), reply_to=message)

    reply = app(make_message("query"), CONTEXT)
    assert reply.error == Error(ErrorCode.UNKNOWN, "custom")


@pytest.mark.parametrize(
    ("register", "name"),
    [("train", None), ("evaluate", None), ("query", None), ("train", "fedprox")],
)
def test_duplicate_registration_refused(register: str, name: str | None) -> None:
    app = ClientApp()
    getattr(app, register)(name)(reply_with("first"))
    with pytest.raises(ValueError, match="registered already"):
        getattr(app, register)(name)(reply_with("second"))
    # the first handler stays in place
    expected = register if name is None else f"{register}.{name}"
    assert tag_of(app(make_message(expected), CONTEXT)) == "first"


@pytest.mark.parametrize("name", ["", "bad name", "1st", "a.b"])
def test_invalid_handler_names_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        ClientApp().train(name)


# -- ServerApp and Grid --------------------------------------------------------------------------


class LoopbackGrid(Grid):
    """A grid whose nodes all run one ClientApp, answering at push time (or never)."""

    def __init__(self, client: ClientApp, *, answer: bool = True) -> None:
        self._client = client
        self._answer = answer
        self._replies: list[Message] = []
        self.pushed: list[Message] = []
        self._run = Run.create_empty(77)

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return super().create_message(content, message_type, dst_node_id, group_id, ttl)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.run_id = self.run_id
            self.pushed.append(message)
            ids.append(message.metadata.message_id)
            if self._answer:
                self._replies.append(self._client(message, Context(self.run_id, 1)))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = set(message_ids)
        out = [r for r in self._replies if r.metadata.reply_to_message_id in wanted]
        self._replies = [r for r in self._replies if r not in out]
        return out


def test_server_app_without_main_raises_type_error() -> None:
    with pytest.raises(TypeError, match="main"):
        ServerApp()(LoopbackGrid(ClientApp()), Context(1, 0))


def test_server_app_runs_main_once_registered() -> None:
    app = ServerApp()
    calls: list[tuple[Grid, Context]] = []

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        calls.append((grid, context))

    grid, context = LoopbackGrid(ClientApp()), Context(1, 0)
    app(grid, context)
    assert calls == [(grid, context)]
    with pytest.raises(ValueError, match="already"):
        app.main()(main)


def test_grid_create_message_stamps_run_id() -> None:
    grid = LoopbackGrid(ClientApp())
    message = grid.create_message(RecordDict(), "train", 2, "g", ttl=30)
    assert message.metadata.run_id == 77
    assert message.metadata.dst_node_id == 2
    assert message.metadata.group_id == "g"
    assert message.metadata.ttl == 30.0
    with pytest.raises(InvalidArgument):
        grid.create_message(RecordDict(), "fit", 2, "g")


def test_grid_send_and_receive() -> None:
    client = ClientApp()
    client.train()(reply_with("ok"))
    grid = LoopbackGrid(client)
    messages = [grid.create_message(RecordDict(), "train", n, "g") for n in grid.get_node_ids()]
    replies = grid.send_and_receive(messages, timeout=5)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(
        m.metadata.message_id for m in messages
    )
    assert [tag_of(r) for r in replies] == ["ok", "ok"]


def test_grid_receive_gives_up_at_timeout() -> None:
    grid = LoopbackGrid(ClientApp(), answer=False)
    ids = grid.push_messages([grid.create_message(RecordDict(), "train", 1, "g")])
    start = time.monotonic()
    assert list(grid.receive(ids, timeout=0.05)) == []
    assert time.monotonic() - start < 2.0
