"""The child side of the simulation backend: load the ClientApp once, then answer batches.

A worker is ``python -m corolla.simulation._worker_main --fd N`` with one end of a socket pair as
file descriptor N (the parent is `corolla.simulation.backend.WorkerPool`). Every frame on it is
a length-prefixed byte string (`multiprocessing.connection.Connection.send_bytes`): a JSON
header, then the raw frames it announces. Nothing is pickled.

- worker -> parent, once: ``{"op": "ready", "error": null | reason}``;
- parent -> worker: ``{"op": "batch", "tasks": [ids], "new": [object ids], "drop": [ids]}``,
  then two frames per task (message, context: protobuf bytes), then one frame per new object
  (raw array bytes the worker keeps in its cache until told to drop them); or ``{"op": "exit"}``;
- worker -> parent, per task as it completes: ``{"op": "done", "task": id, "objects": [ids]}``
  then the reply, the context and one frame per object; or ``{"op": "failed", "task": id,
  "code": int, "reason": str}`` when the task could not be run through the ClientApp at all.

The ClientApp travels as a reference, never as an object: ``module:attribute`` imported from
the app directory, or from a script file (a `run_simulation` called from ``__main__``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

from corolla.clientapp import ClientApp
from corolla.clientapp.clientapp import short_traceback
from corolla.common.errors import AppError, InvalidArgument
from corolla.common.objects import Buffer
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import ErrorCode
from corolla.records.wire import decode_messages, encode_messages
from corolla.simulation.contexts import context_from_bytes, context_to_bytes

SYS_PATH_ENV = "COROLLA_SIMULATION_SYS_PATH"  # the parent's sys.path, as a JSON list
_SCRIPT_MODULE = "__corolla_simulation_script__"  # a script's module, imported by a worker
_PARENT_CHECK = 1.0  # seconds between the worker's looks at whether its parent is alive


@dataclass(frozen=True)
class ClientAppSource:
    """Where a worker process gets its ClientApp from: ``module:attribute``, imported with
    ``app_dir`` first on ``sys.path`` (an installed FAB), or ``attribute`` of the Python file
    ``script`` (imported as a module, so its ``if __name__ == "__main__":`` part does not run)."""

    reference: str
    app_dir: str = ""
    script: str = ""

    @classmethod
    def from_reference(cls, reference: str, app_dir: Path | str | None = None) -> ClientAppSource:
        module, _, attribute = reference.partition(":")
        if not module or not attribute:
            raise InvalidArgument(f"invalid ClientApp reference {reference!r} (module:attribute)")
        return cls(reference=reference, app_dir=str(app_dir or ""))

    @classmethod
    def from_app_dir(cls, app_dir: Path) -> ClientAppSource:
        """The ClientApp an app's ``pyproject.toml`` names (``[tool.flwr.app.components]``)."""
        from corolla.fab import load_app_config

        return cls.from_reference(load_app_config(app_dir).clientapp, app_dir)

    @classmethod
    def from_app(cls, app: ClientApp) -> ClientAppSource:
        """Where ``app`` can be imported from: the module-level name it is bound to."""
        if not isinstance(app, ClientApp):
            raise InvalidArgument(f"expected a ClientApp, got {type(app).__name__}")
        script_source: ClientAppSource | None = None
        main_module = sys.modules.get("__main__")
        for name, module in list(sys.modules.items()):
            attribute = _bound_name(module, app)
            if attribute is None:
                continue
            if module is not main_module:  # (multiprocessing aliases it as __mp_main__)
                return cls(reference=f"{name}:{attribute}")  # a module wins over the script
            script = getattr(module, "__file__", None)
            if script:
                script_source = cls(reference=f"{_SCRIPT_MODULE}:{attribute}", script=script)
        if script_source is not None:
            return script_source
        raise InvalidArgument(
            "the ClientApp must be importable by the simulation's worker processes: bind it to "
            "a module-level name (app = ClientApp() at the top of a module or script), or pass "
            "ClientAppSource.from_reference('module:attribute', app_dir)"
        )

    def load(self) -> ClientApp:
        module_name, _, attribute = self.reference.partition(":")
        if self.script:
            module = _import_script(Path(self.script), module_name)
            app = getattr(module, attribute, None)
            if not isinstance(app, ClientApp):
                raise InvalidArgument(f"{self.script} has no ClientApp named {attribute!r}")
            return app
        from corolla.runtime.loader import load_component

        directory = Path(self.app_dir) if self.app_dir else Path.cwd()
        return load_component(directory, self.reference, ClientApp)

    def argv(self) -> list[str]:
        """This source as the worker's command-line arguments."""
        return ["--reference", self.reference, "--app-dir", self.app_dir, "--script", self.script]


def _bound_name(module: ModuleType | None, app: ClientApp) -> str | None:
    try:
        items = list(vars(module).items())
    except TypeError:  # not a module with a __dict__
        return None
    return next((name for name, value in items if value is app and not name.startswith("_")), None)


def _import_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgument(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- framing: a JSON header, then raw frames ---------------------------------------------------


def send_header(conn: Connection, header: Mapping[str, Any]) -> None:
    conn.send_bytes(json.dumps(header).encode())


def recv_header(conn: Connection) -> dict[str, Any]:
    header = json.loads(conn.recv_bytes())
    if not isinstance(header, dict) or "op" not in header:
        raise ValueError(f"malformed frame header {header!r}")
    return header


def run_task(
    app: ClientApp, message: bytes, context: bytes, objects: Mapping[str, Buffer]
) -> tuple[bytes, bytes, dict[str, bytes]]:
    """One message through the ClientApp: the encoded reply, the node's encoded context after
    the call, and the reply's objects. A raising handler gives an error reply, as deployed; an
    exception here means the message could not be run at all."""
    (decoded,) = decode_messages(
        [mpb.Message.FromString(message)], lambda ids: {i: objects[i] for i in ids}
    )
    node_context = context_from_bytes(context)
    reply = app(decoded, node_context)
    protos, reply_objects = encode_messages([reply])
    payload = {oid: bytes(data) for oid, data in reply_objects.items()}
    return protos[0].SerializeToString(), context_to_bytes(node_context), payload


# -- the worker process ------------------------------------------------------------------------


def serve(conn: Connection, source: ClientAppSource) -> None:
    """Load the ClientApp, say so, then answer batches until told to exit or the parent goes."""
    try:
        app = source.load()
    except Exception as exc:
        detail = str(exc) if isinstance(exc, AppError) else short_traceback(exc)
        send_header(conn, {"op": "ready", "error": f"ClientApp cannot be loaded: {detail}"})
        return
    send_header(conn, {"op": "ready", "error": None})
    cache: dict[str, Buffer] = {}
    while True:
        try:
            header = recv_header(conn)
            if header["op"] != "batch":
                return
            tasks = [(task, conn.recv_bytes(), conn.recv_bytes()) for task in header["tasks"]]
            for object_id in header["drop"]:
                cache.pop(object_id, None)
            for object_id in header["new"]:
                cache[object_id] = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent is gone
        for task_id, message, context in tasks:
            _answer(conn, app, cache, task_id, message, context)


def _answer(
    conn: Connection,
    app: ClientApp,
    cache: Mapping[str, Buffer],
    task_id: str,
    message: bytes,
    context: bytes,
) -> None:
    try:
        reply, new_context, objects = run_task(app, message, context, cache)
    except Exception as exc:  # the deployed runtime's process would die here
        code = int(ErrorCode.CLIENT_APP_RAISED_EXCEPTION)
        send_header(
            conn, {"op": "failed", "task": task_id, "code": code, "reason": short_traceback(exc)}
        )
        return
    send_header(conn, {"op": "done", "task": task_id, "objects": list(objects)})
    conn.send_bytes(reply)
    conn.send_bytes(new_context)
    for data in objects.values():
        conn.send_bytes(data)


def _exit_with_parent() -> None:
    """End this process soon after its parent dies, even in the middle of an app call."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_PARENT_CHECK)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="corolla-simulation-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--app-dir", default="")
    parser.add_argument("--script", default="")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent()
    for entry in reversed(json.loads(os.environ.pop(SYS_PATH_ENV, "[]"))):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = ClientAppSource(args.reference, args.app_dir, args.script)
    conn = Connection(args.fd)
    try:
        serve(conn, source)
    finally:
        conn.close()
