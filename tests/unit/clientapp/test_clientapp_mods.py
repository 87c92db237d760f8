"""`ClientApp` mods (app-wide and per handler), actions and ``@app.lifespan()``, with Flower's
signatures: ``ClientApp(client_fn=None, mods=None)``, ``@app.train(action="default", *,
mods=None)``, the first mod outermost, the lifespan entered around every message."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator

import pytest

from corolla.clientapp import ClientApp
from corolla.records import ConfigRecord, Context, Error, ErrorCode, Message, RecordDict

Call = Callable[[Message, Context], Message]


def make_message(message_type: str = "train") -> Message:
    return Message(RecordDict(), 7, message_type)


def new_context() -> Context:
    return Context(run_id=3, node_id=7)


def tracing_mod(name: str, trace: list[str]) -> Callable[[Message, Context, Call], Message]:
    def mod(message: Message, context: Context, call_next: Call) -> Message:
        trace.append(f"{name}>")
        reply = call_next(message, context)
        trace.append(f"<{name}")
        return reply

    return mod


def ok_handler(trace: list[str], tag: str = "handler") -> Call:
    def handler(message: Message, context: Context) -> Message:
        trace.append(tag)
        return Message(RecordDict({"tag": ConfigRecord({"tag": tag})}), reply_to=message)

    return handler


def reason_of(reply: Message) -> str:
    return str(reply.error.reason)


def tag_of(reply: Message) -> str:
    assert not reply.has_error(), reply.error
    record = reply.content["tag"]
    assert isinstance(record, ConfigRecord)
    return str(record["tag"])


# -- signatures -----------------------------------------------------------------------------------


def test_signatures_are_flowers() -> None:
    init = inspect.signature(ClientApp.__init__).parameters
    assert [(p.name, p.default) for p in list(init.values())[1:]] == [
        ("client_fn", None),
        ("mods", None),
    ]
    for name in ("train", "evaluate", "query"):
        params = inspect.signature(getattr(ClientApp, name)).parameters
        assert params["action"].default == "default"
        assert params["action"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert params["mods"].default is None
        assert params["mods"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(ClientApp.lifespan).parameters) == ["self"]


def test_client_fn_is_refused_with_a_pointer_to_the_decorators() -> None:
    with pytest.raises(ValueError, match=r"@app\.train\(\)"):
        ClientApp(client_fn=lambda context: None)
    with pytest.raises(ValueError, match="client_fn"):
        ClientApp(lambda context: None)


def test_a_mod_must_be_callable() -> None:
    with pytest.raises(TypeError, match="mod"):
        ClientApp(mods=["not a mod"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="mod"):
        ClientApp().train(mods=[42])  # type: ignore[list-item]


# -- actions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("message_type", ["train", "train.default"])
def test_the_default_action_handles_the_bare_type(message_type: str) -> None:
    trace: list[str] = []
    app = ClientApp()
    app.train()(ok_handler(trace))
    assert tag_of(app(make_message(message_type), new_context())) == "handler"
    assert app.message_types == ["train"]


def test_the_default_action_named_explicitly_is_the_same_handler() -> None:
    app = ClientApp()
    app.evaluate("default")(ok_handler([]))
    with pytest.raises(ValueError, match="registered already"):
        app.evaluate()(ok_handler([]))


def test_a_named_action_routes_its_type() -> None:
    trace: list[str] = []
    app = ClientApp()
    app.query(action="stats")(ok_handler(trace, "stats"))
    assert tag_of(app(make_message("query.stats"), new_context())) == "stats"
    reply = app(make_message("query"), new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION


# -- mods -----------------------------------------------------------------------------------------


def test_app_mods_wrap_handler_mods_first_outermost() -> None:
    trace: list[str] = []
    app = ClientApp(mods=[tracing_mod("a", trace), tracing_mod("b", trace)])
    app.train(mods=[tracing_mod("c", trace), tracing_mod("d", trace)])(ok_handler(trace))
    reply = app(make_message("train"), new_context())
    assert tag_of(reply) == "handler"
    assert trace == ["a>", "b>", "c>", "d>", "handler", "<d", "<c", "<b", "<a"]


def test_handler_mods_apply_to_their_handler_only() -> None:
    trace: list[str] = []
    app = ClientApp(mods=[tracing_mod("app", trace)])
    app.train(mods=[tracing_mod("train-only", trace)])(ok_handler(trace, "train"))
    app.evaluate()(ok_handler(trace, "evaluate"))
    app(make_message("evaluate"), new_context())
    assert trace == ["app>", "evaluate", "<app"]


def test_mods_see_and_change_the_message_and_the_reply() -> None:
    def stamp_in(message: Message, context: Context, call_next: Call) -> Message:
        message.content["in"] = ConfigRecord({"by": "mod"})
        reply = call_next(message, context)
        reply.content["out"] = ConfigRecord({"by": "mod"})
        return reply

    seen: list[bool] = []
    app = ClientApp(mods=[stamp_in])

    @app.train()
    def handler(message: Message, context: Context) -> Message:
        seen.append("in" in message.content)
        return Message(RecordDict(), reply_to=message)

    reply = app(make_message("train"), new_context())
    assert seen == [True]
    assert reply.content["out"] == ConfigRecord({"by": "mod"})


def test_a_mod_may_answer_without_calling_the_handler() -> None:
    trace: list[str] = []

    def refuse(message: Message, context: Context, call_next: Call) -> Message:
        trace.append("refuse")
        return Message(error=Error(ErrorCode.UNKNOWN, "refused by mod"), reply_to=message)

    app = ClientApp(mods=[tracing_mod("outer", trace)])
    app.train(mods=[refuse])(ok_handler(trace))
    message = make_message("train")
    reply = app(message, new_context())
    assert reply.error == Error(ErrorCode.UNKNOWN, "refused by mod")
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert trace == ["outer>", "refuse", "<outer"]  # the handler never ran


def test_a_raising_mod_gives_an_error_reply() -> None:
    trace: list[str] = []

    def broken(message: Message, context: Context, call_next: Call) -> Message:
        raise RuntimeError("mod-broke-4d2e")

    app = ClientApp(mods=[broken])
    app.train()(ok_handler(trace))
    message = make_message("train")
    reply = app(message, new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "mod-broke-4d2e" in reason_of(reply)
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert trace == []


def test_a_handlers_exception_passes_through_the_mods() -> None:
    caught: list[str] = []

    def catching(message: Message, context: Context, call_next: Call) -> Message:
        try:
            return call_next(message, context)
        except ValueError as exc:
            caught.append(str(exc))
            return Message(RecordDict({"tag": ConfigRecord({"tag": "saved"})}), reply_to=message)

    app = ClientApp(mods=[catching])

    @app.train()
    def handler(message: Message, context: Context) -> Message:
        raise ValueError("handler-failed")

    assert tag_of(app(make_message("train"), new_context())) == "saved"
    assert caught == ["handler-failed"]


def test_a_mod_returning_no_reply_gives_invalid_reply() -> None:
    def lost(message: Message, context: Context, call_next: Call) -> Message:
        call_next(message, context)
        return Message(RecordDict(), 7, "train")  # a new message, not the reply

    app = ClientApp(mods=[lost])
    app.train()(ok_handler([]))
    assert app(make_message("train"), new_context()).error.code == ErrorCode.INVALID_REPLY


def test_unknown_types_reach_no_mod() -> None:
    trace: list[str] = []
    app = ClientApp(mods=[tracing_mod("app", trace)])
    app.train()(ok_handler(trace))
    reply = app(make_message("query"), new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert trace == []


# -- lifespan -------------------------------------------------------------------------------------


def test_lifespan_runs_around_every_message_outside_the_mods() -> None:
    trace: list[str] = []
    app = ClientApp(mods=[tracing_mod("mod", trace)])
    app.train()(ok_handler(trace))

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        trace.append(f"setup node={context.node_id}")
        yield
        trace.append("teardown")

    context = new_context()
    app(make_message("train"), context)
    app(make_message("train"), context)
    once = ["setup node=7", "mod>", "handler", "<mod", "teardown"]
    assert trace == once + once


def test_lifespan_setup_is_seen_by_the_handler() -> None:
    app = ClientApp()
    seen: list[object] = []

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        context.state["resource"] = ConfigRecord({"open": True})
        yield
        context.state["resource"] = ConfigRecord({"open": False})

    @app.query()
    def handler(message: Message, context: Context) -> Message:
        record = context.state["resource"]
        assert isinstance(record, ConfigRecord)
        seen.append(record["open"])
        return Message(RecordDict(), reply_to=message)

    context = new_context()
    app(make_message("query"), context)
    assert seen == [True]
    assert context.state["resource"] == ConfigRecord({"open": False})


def test_the_decorator_returns_the_lifespan_and_refuses_a_second() -> None:
    app = ClientApp()

    def lifespan(context: Context) -> Iterator[None]:
        yield

    assert app.lifespan()(lifespan) is lifespan
    with pytest.raises(ValueError, match="lifespan"):
        app.lifespan()(lifespan)


def test_failing_setup_gives_an_error_reply_and_skips_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace: list[str] = []
    app = ClientApp()
    app.train()(ok_handler(trace))

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        raise OSError("no-gpu-91c0")
        yield  # a generator all the same

    message = make_message("train")
    with caplog.at_level(logging.WARNING, logger="corolla.clientapp"):
        reply = app(message, new_context())
        again = app(make_message("train"), new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "no-gpu-91c0" in reason_of(reply)
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert again.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert trace == []
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("lifespan raised:") == 1  # in full once, then one line
    assert "lifespan raised the same error again (2 times)" in text


def test_failing_teardown_turns_the_reply_into_an_error_reply() -> None:
    trace: list[str] = []
    app = ClientApp()
    app.train()(ok_handler(trace))

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        yield
        raise RuntimeError("flush-failed-5b77")

    reply = app(make_message("train"), new_context())
    assert trace == ["handler"]
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "flush-failed-5b77" in reason_of(reply)


def test_teardown_runs_after_a_raising_handler() -> None:
    trace: list[str] = []
    app = ClientApp()

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        trace.append("setup")
        yield
        trace.append("teardown")

    @app.train()
    def handler(message: Message, context: Context) -> Message:
        raise ValueError("bad-batch")

    reply = app(make_message("train"), new_context())
    assert "bad-batch" in reason_of(reply)
    assert trace == ["setup", "teardown"]


def test_lifespan_is_entered_for_unknown_types_too() -> None:
    trace: list[str] = []
    app = ClientApp()

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        trace.append("setup")
        yield
        trace.append("teardown")

    reply = app(make_message("query"), new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert trace == ["setup", "teardown"]


def not_a_generator(context: Context) -> None:
    return None


def returns_at_once(context: Context) -> Iterator[None]:
    return
    yield


def yields_twice(context: Context) -> Iterator[None]:
    yield
    yield


@pytest.mark.parametrize(
    ("lifespan", "reason"),
    [
        (not_a_generator, "must yield once"),
        (returns_at_once, "without yielding"),
        (yields_twice, "only once"),
    ],
)
def test_a_lifespan_must_yield_exactly_once(lifespan: object, reason: str) -> None:
    trace: list[str] = []
    app = ClientApp()
    app.train()(ok_handler(trace))
    app.lifespan()(lifespan)  # type: ignore[arg-type]
    reply = app(make_message("train"), new_context())
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reason in reason_of(reply)
    assert trace == (["handler"] if lifespan is yields_twice else [])
