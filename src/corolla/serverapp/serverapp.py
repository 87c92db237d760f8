"""`ServerApp`: the user's ``main(grid, context)`` that drives a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corolla.clientapp.clientapp import LifespanFn, lifespan_of
from corolla.common.errors import InvalidArgument
from corolla.records import Context
from corolla.serverapp.grid import Grid

MainFn = Callable[[Grid, Context], None]

_LEGACY = ("server", "config", "strategy", "client_manager", "server_fn")


class ServerApp:
    """Register the run's entry point with ``@app.main()``; it receives ``(grid, context)``.

    ``@app.lifespan()`` registers a generator function of the context that yields once: the
    part before the ``yield`` runs before ``main``, the rest after it (also when ``main``
    raises). An exception in either part ends the run as one in ``main`` would.

    ``server``, ``config``, ``strategy``, ``client_manager`` and ``server_fn`` belong to
    Flower's legacy API (``start_server`` and ``ServerAppComponents``), which Corolla does not
    provide: passing any of them is a `ValueError`.
    """

    def __init__(
        self,
        server: Any | None = None,
        config: Any | None = None,
        strategy: Any | None = None,
        client_manager: Any | None = None,
        server_fn: Callable[[Context], Any] | None = None,
    ) -> None:
        given = [
            name
            for name, value in zip(
                _LEGACY, (server, config, strategy, client_manager, server_fn), strict=True
            )
            if value is not None
        ]
        if given:
            raise InvalidArgument(
                f"ServerApp({', '.join(f'{name}=...' for name in given)}) is Flower's legacy "
                "server API, which Corolla does not provide: write the run's loop in a function "
                "decorated with @app.main() (e.g. FedAvg().start(grid, initial_arrays, ...))"
            )
        self._main: MainFn | None = None
        self._lifespan: LifespanFn | None = None

    def main(self) -> Callable[[MainFn], MainFn]:
        def decorator(fn: MainFn) -> MainFn:
            if self._main is not None:
                raise ValueError("this ServerApp has a main function already")
            self._main = fn
            return fn

        return decorator

    def lifespan(self) -> Callable[[LifespanFn], LifespanFn]:
        """Register a generator function ``(context)`` that yields once, around ``main``."""

        def decorator(fn: LifespanFn) -> LifespanFn:
            if self._lifespan is not None:
                raise ValueError("this ServerApp has a lifespan function already")
            self._lifespan = fn
            return fn

        return decorator

    def __call__(self, grid: Grid, context: Context) -> None:
        if self._main is None:
            raise TypeError("ServerApp has no main function: decorate one with @app.main()")
        with lifespan_of(self._lifespan, context):
            self._main(grid, context)
