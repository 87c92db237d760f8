"""`ServerApp`: the user's ``main(grid, context)`` that drives a run."""

from __future__ import annotations

from collections.abc import Callable

from corolla.records import Context
from corolla.serverapp.grid import Grid

MainFn = Callable[[Grid, Context], None]


class ServerApp:
    """Register the run's entry point with ``@app.main()``; it receives ``(grid, context)``."""

    def __init__(self) -> None:
        self._main: MainFn | None = None

    def main(self) -> Callable[[MainFn], MainFn]:
        def decorator(fn: MainFn) -> MainFn:
            if self._main is not None:
                raise ValueError("this ServerApp has a main function already")
            self._main = fn
            return fn

        return decorator

    def __call__(self, grid: Grid, context: Context) -> None:
        if self._main is None:
            raise TypeError("ServerApp has no main function: decorate one with @app.main()")
        self._main(grid, context)
