"""`ServerApp` with Flower's signature (the legacy parameters refused) and ``@app.lifespan()``
around ``main``: set-up before, tear-down after (also when ``main`` raises)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from corolla.clientapp import ClientApp
from corolla.records import ConfigRecord, Context
from corolla.serverapp import Grid, ServerApp
from corolla.simulation import InProcessGrid


def grid() -> Grid:
    return InProcessGrid(ClientApp(), num_nodes=1)


def traced_app(trace: list[str]) -> ServerApp:
    app = ServerApp()

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        trace.append(f"setup run={context.run_id}")
        yield
        trace.append("teardown")

    return app


def test_signature_is_flowers() -> None:
    params = list(inspect.signature(ServerApp.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in params] == [
        ("server", None),
        ("config", None),
        ("strategy", None),
        ("client_manager", None),
        ("server_fn", None),
    ]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    assert list(inspect.signature(ServerApp.lifespan).parameters) == ["self"]


@pytest.mark.parametrize("name", ["server", "config", "strategy", "client_manager", "server_fn"])
def test_legacy_parameters_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}=.*@app\.main\(\)"):
        ServerApp(**{name: object()})  # type: ignore[arg-type]


def test_legacy_refusal_names_every_parameter_given() -> None:
    with pytest.raises(ValueError, match=r"ServerApp\(config=\.\.\., strategy=\.\.\.\)"):
        ServerApp(config=object(), strategy=object())


def test_lifespan_runs_around_main() -> None:
    trace: list[str] = []
    app = traced_app(trace)

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        trace.append("main")

    app(grid(), Context(run_id=5, node_id=0))
    assert trace == ["setup run=5", "main", "teardown"]


def test_main_sees_what_setup_put_in_the_context() -> None:
    app = ServerApp()
    seen: list[object] = []

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        context.state["db"] = ConfigRecord({"connected": True})
        yield
        del context.state["db"]

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        seen.append(context.state["db"])

    context = Context(run_id=1, node_id=0)
    app(grid(), context)
    assert seen == [ConfigRecord({"connected": True})]
    assert "db" not in context.state


def test_teardown_runs_when_main_raises_and_mains_error_propagates() -> None:
    trace: list[str] = []
    app = traced_app(trace)

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        raise KeyError("round-2-failed")

    with pytest.raises(KeyError, match="round-2-failed"):
        app(grid(), Context(run_id=5, node_id=0))
    assert trace == ["setup run=5", "teardown"]


def test_failing_setup_skips_main() -> None:
    trace: list[str] = []
    app = ServerApp()

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        raise ConnectionError("no-tracking-server")
        yield

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        trace.append("main")

    with pytest.raises(ConnectionError, match="no-tracking-server"):
        app(grid(), Context(run_id=1, node_id=0))
    assert trace == []


def test_failing_teardown_raises_after_main() -> None:
    trace: list[str] = []
    app = ServerApp()

    @app.lifespan()
    def lifespan(context: Context) -> Iterator[None]:
        yield
        raise OSError("upload-failed")

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        trace.append("main")

    with pytest.raises(OSError, match="upload-failed"):
        app(grid(), Context(run_id=1, node_id=0))
    assert trace == ["main"]


def test_a_lifespan_must_yield_exactly_once() -> None:
    def twice(context: Context) -> Iterator[None]:
        yield
        yield

    def never(context: Context) -> None:
        return None

    for lifespan, reason in ((twice, "only once"), (never, "must yield once")):
        app = ServerApp()
        app.lifespan()(lifespan)  # type: ignore[arg-type]
        app.main()(lambda grid, context: None)
        with pytest.raises(RuntimeError, match=reason):
            app(grid(), Context(run_id=1, node_id=0))


def test_no_main_is_a_type_error_before_the_lifespan_starts() -> None:
    trace: list[str] = []
    app = traced_app(trace)
    with pytest.raises(TypeError, match="main"):
        app(grid(), Context(run_id=1, node_id=0))
    assert trace == []


def test_one_lifespan_per_app() -> None:
    app = traced_app([])
    with pytest.raises(ValueError, match="lifespan"):
        app.lifespan()(lambda context: iter([None]))
