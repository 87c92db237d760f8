"""The built-in simulation backend: a pool of warm worker processes running one ClientApp.

Each worker is started once (a fresh interpreter, ``python -m corolla.simulation._worker_main``,
safe beside the parent's threads and gRPC), loads the ClientApp once, then answers tasks:
``(message bytes, context bytes)`` in, ``(reply bytes, context bytes)`` out, in the project's
protobuf wire form. Large arrays travel beside the protobufs as content-addressed objects, raw
bytes (nothing is pickled), and each worker keeps the objects it was sent in a cache the parent
manages, so a broadcast model goes to each worker once per round, not once per node.

Tasks go to workers in batches (a few per worker at a time, see `WorkerPool`), and a worker
sends each result as soon as it has it. One dispatcher thread in the parent owns the workers:
it feeds idle workers, reads results, and notices a worker that died (its socket closes). The task
that worker was running gets an error reply, the rest of its batch is queued again, and a fresh
worker takes its place. What a worker prints goes to this process's log, one line at a time,
under ``corolla.simulation.worker`` (so a ServerApp process forwards it to ``flwr log``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import IO, Any, Protocol

from corolla.common.objects import Buffer
from corolla.records import Error, ErrorCode
from corolla.simulation._resources import BackendConfig
from corolla.simulation._worker import SYS_PATH_ENV, ClientAppSource, recv_header, send_header

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds a worker may take to load the ClientApp
CLOSE_GRACE = 3.0  # seconds workers get to exit before they are terminated
OBJECT_BUDGET = 64 * 1024 * 1024  # bytes of objects each worker keeps cached
MAX_BATCH = 32  # tasks sent to a worker at once
MAX_STARTUP_FAILURES = 3  # workers dying before they are ready, in a row, before giving up
_POLL = 0.25  # the dispatcher's longest wait
_WORKER = "corolla.simulation._worker_main"

__all__ = [
    "Backend",
    "BackendConfig",
    "ClientAppSource",
    "Task",
    "TaskResult",
    "WorkerPool",
    "start_backend",
]


@dataclass(frozen=True)
class Task:
    """One message for a ClientApp: the encoded message, the objects it references (by id),
    and the encoded context of its node."""

    task_id: str
    message: bytes
    context: bytes
    objects: Mapping[str, Buffer] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskResult:
    """The reply (encoded, plus the objects it references) and the node's context after the
    call; or, when the ClientApp could not answer, only ``error``."""

    task_id: str
    reply: bytes = b""
    objects: dict[str, bytes] = field(default_factory=dict)
    context: bytes = b""
    error: Error | None = None


ResultCallback = Callable[[TaskResult], None]


class Backend(Protocol):
    """What `SimulationGrid` needs of a backend (`WorkerPool`, or Ray's `RayPool`): tasks in,
    results out through the ``on_result`` callback it was made with, on the backend's own
    thread, never inside `submit`."""

    failure: BaseException | None  # set when the backend broke: the grid's next call fails

    @property
    def num_workers(self) -> int: ...

    def pids(self) -> list[int]: ...

    def wait_ready(self, timeout: float) -> bool: ...

    def submit(self, task: Task) -> None: ...

    def cancel(self, task_id: str) -> bool: ...

    def close(self) -> None: ...


def start_backend(
    source: ClientAppSource, on_result: ResultCallback, config: BackendConfig
) -> Backend:
    """The backend ``config`` names, started."""
    if config.name == "ray":
        from corolla.simulation.ray_backend import RayPool  # Ray is an optional extra

        return RayPool(source, on_result, config)
    return WorkerPool(source, on_result, num_workers=config.num_workers, gpus=config.gpus)


worker_log = logging.getLogger("corolla.simulation.worker")


@dataclass(eq=False)  # compared by identity
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    conn: Connection
    output: threading.Thread
    started: float
    ready: bool = False
    batch: deque[Task] = field(default_factory=deque)  # sent, not yet answered, in order
    known: OrderedDict[str, int] = field(default_factory=OrderedDict)  # cached object sizes
    known_bytes: int = 0


class WorkerPool:
    """``num_workers`` warm processes running the ClientApp of ``source``.

    `submit` queues a task and returns at once; ``on_result`` is called (on the pool's
    dispatcher thread, never inside `submit`) with each task's result as it completes. A task
    whose worker dies gets a result with a ``CLIENT_APP_RAISED_EXCEPTION`` error ("ClientApp
    process exited with code N", as in a deployment); a ClientApp that cannot be loaded answers
    every task with ``LOAD_CLIENT_APP_EXCEPTION``. ``gpus[i]`` (if given) becomes worker
    ``i``'s ``CUDA_VISIBLE_DEVICES``. Use `close` (or ``with``) to end and reap every worker.
    """

    def __init__(
        self,
        source: ClientAppSource,
        on_result: ResultCallback,
        *,
        num_workers: int,
        gpus: tuple[str | None, ...] = (),
        start_timeout: float = START_TIMEOUT,
        object_budget: int = OBJECT_BUDGET,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self._source = source
        self._on_result = on_result
        self._gpus = gpus
        self._start_timeout = start_timeout
        self._budget = object_budget
        self._max_batch = max_batch
        self._lock = threading.Lock()  # guards _queue, _closed; never held while waiting
        self._queue: OrderedDict[str, Task] = OrderedDict()  # by task id, in order
        self._closed = False
        self._stopping = threading.Event()
        self._broken: Error | None = None  # set by the dispatcher: every task fails with it
        self._startup_failures = 0
        self.failure: BaseException | None = None  # the dispatcher's crash, if it crashed
        self._ready = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._workers: list[_Worker] = []
        try:
            for slot in range(num_workers):
                self._workers.append(self._spawn(slot))
        except BaseException:  # e.g. out of processes: leave none of them behind
            for worker in self._workers:
                _reap(worker, 0.0)
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._thread = threading.Thread(target=self._run, name="simulation-backend", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        """Process ids of the current workers (for diagnostics and tests)."""
        return [w.process.pid for w in list(self._workers)]

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every first-generation worker has loaded the ClientApp (or failed to)."""
        return self._ready.wait(timeout)

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._queue[task.task_id] = task
            self._wake()  # under the lock: `close` cannot have closed the pipe

    def cancel(self, task_id: str) -> bool:
        """Drop a task that no worker has taken yet; False if it is taken (or unknown)."""
        with self._lock:
            return self._queue.pop(task_id, None) is not None

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop the dispatcher, ask every worker to exit, terminate those that do not within
        ``grace`` seconds, and reap them all. Queued tasks are dropped. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
        self._stopping.set()
        self._wake()
        self._thread.join(timeout=2 * _POLL + grace)
        if self._thread.is_alive():  # stuck on a worker: end the workers, then join again
            for worker in self._workers:
                worker.process.kill()
            self._thread.join(timeout=grace)
        for worker in self._workers:
            with contextlib.suppress(OSError):
                send_header(worker.conn, {"op": "exit"})
        deadline = time.monotonic() + grace
        for worker in self._workers:
            _reap(worker, max(0.0, deadline - time.monotonic()))
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the dispatcher is awake already
            os.write(self._wake_w, b"x")

    # -- the dispatcher thread ---------------------------------------------------------------
    def _spawn(self, slot: int) -> _Worker:
        parent_end, child_end = socket.socketpair()
        env = {**os.environ, SYS_PATH_ENV: json.dumps(sys.path), "PYTHONUNBUFFERED": "1"}
        gpus = self._gpus[slot] if slot < len(self._gpus) else None
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus  # before the app imports any GPU library
        fd = child_end.fileno()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", _WORKER, "--fd", str(fd), *self._source.argv()],
                pass_fds=(fd,),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        assert process.stdout is not None
        output = threading.Thread(
            target=_relay_output,
            args=(process.stdout, slot),
            name=f"simulation-worker-{slot}-output",
            daemon=True,
        )
        output.start()
        conn = Connection(parent_end.detach())
        return _Worker(slot, process, conn, output, time.monotonic())

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._broken is not None:
                    self._fail_queued(self._broken)
                else:
                    self._feed()
                self._poll()
                self._check_starts()
        except BaseException as exc:  # reaches the grid's caller through `failure`
            log.exception("the simulation backend's dispatcher crashed")
            self.failure = exc

    def _feed(self) -> None:
        idle = [w for w in self._workers if w.ready and not w.batch]
        if not idle:
            return
        ready = sum(w.ready for w in self._workers)
        for worker in idle:
            with self._lock:
                size = max(1, min(self._max_batch, len(self._queue) // (2 * ready)))
                count = min(size, len(self._queue))
                tasks = [self._queue.popitem(last=False)[1] for _ in range(count)]
            if not tasks:
                return
            self._send(worker, tasks)

    def _send(self, worker: _Worker, tasks: list[Task]) -> None:
        """Send a batch and the objects the worker lacks; tell it which cached ones to drop."""
        needed = {oid: data for task in tasks for oid, data in task.objects.items()}
        new = [oid for oid in needed if oid not in worker.known]
        for oid in needed:
            if oid in worker.known:
                worker.known.move_to_end(oid)
            else:
                worker.known[oid] = memoryview(needed[oid]).nbytes
                worker.known_bytes += worker.known[oid]
        drop: list[str] = []
        for oid in list(worker.known):
            if worker.known_bytes <= self._budget:
                break
            if oid not in needed:
                worker.known_bytes -= worker.known.pop(oid)
                drop.append(oid)
        worker.batch.extend(tasks)
        try:
            header = {"op": "batch", "tasks": [t.task_id for t in tasks], "new": new, "drop": drop}
            send_header(worker.conn, header)
            for task in tasks:
                worker.conn.send_bytes(task.message)
                worker.conn.send_bytes(task.context)
            for oid in new:
                worker.conn.send_bytes(needed[oid])
        except OSError:
            pass  # it died: its closed socket tells, and the batch is handled there

    def _poll(self) -> None:
        waitables: dict[Any, _Worker | None] = {self._wake_r: None}
        for live in self._workers:
            waitables[live.conn] = live
        for ready in wait(list(waitables), timeout=_POLL):
            worker = waitables[ready]
            if worker is None:
                _drain(self._wake_r)
            elif worker in self._workers:  # not replaced by an earlier event of this round
                self._receive(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                self._read_one(worker)
                if not worker.batch and worker.ready:
                    break  # idle again: feed it before reading more
        except (EOFError, OSError, ValueError):  # ValueError: a garbled frame
            self._died(worker)

    def _read_one(self, worker: _Worker) -> None:
        header = recv_header(worker.conn)
        if header["op"] == "ready":
            worker.ready = True
            self._startup_failures = 0
            reason = header.get("error")
            if reason is not None and self._broken is None:
                self._broken = Error(ErrorCode.LOAD_CLIENT_APP_EXCEPTION, str(reason))
                log.error("%s", reason)
                self._ready.set()  # nothing left to wait for: every task fails with the reason
            if all(w.ready for w in self._workers):
                self._ready.set()
            return
        task = worker.batch.popleft()
        if header.get("task") != task.task_id:
            raise ValueError(f"worker answered task {header.get('task')}, not {task.task_id}")
        if header["op"] == "done":
            reply = worker.conn.recv_bytes()
            context = worker.conn.recv_bytes()
            objects = {oid: worker.conn.recv_bytes() for oid in header["objects"]}
            result = TaskResult(task.task_id, reply, objects, context)
        else:
            error = Error(int(header["code"]), str(header["reason"]))
            result = TaskResult(task.task_id, error=error)
        self._on_result(result)

    def _died(self, worker: _Worker) -> None:
        try:  # results it sent before dying still count
            while worker.conn.poll():
                self._read_one(worker)
        except (EOFError, OSError, ValueError):
            pass
        code = _reap(worker, 1.0)
        reason = f"ClientApp process exited with code {code}"
        if worker.batch:
            culprit = worker.batch.popleft()
            log.warning(
                "simulation worker %d: %s handling %s", worker.slot, reason, culprit.task_id
            )
            with self._lock:
                for task in reversed(worker.batch):  # back to the front, in their order
                    self._queue[task.task_id] = task
                    self._queue.move_to_end(task.task_id, last=False)
            error = Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
            self._on_result(TaskResult(culprit.task_id, error=error))
        elif not worker.ready:
            self._startup_failures += 1
            log.warning("simulation worker %d: %s before it was ready", worker.slot, reason)
            if self._startup_failures >= MAX_STARTUP_FAILURES and self._broken is None:
                self._broken = Error(
                    ErrorCode.LOAD_CLIENT_APP_EXCEPTION, f"{reason} before it was ready"
                )
                self._ready.set()
        if self._broken is not None:  # the app cannot load: a new worker would fail again
            self._workers = [w for w in self._workers if w is not worker]
        elif not self._stopping.is_set():
            self._workers[worker.slot] = self._spawn(worker.slot)

    def _check_starts(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if not worker.ready and now - worker.started > self._start_timeout:
                log.warning(
                    "simulation worker %d did not load the ClientApp within %g s",
                    worker.slot,
                    self._start_timeout,
                )
                worker.process.kill()

    def _fail_queued(self, error: Error) -> None:
        with self._lock:
            tasks = list(self._queue.values())
            self._queue.clear()
        for task in tasks:
            self._on_result(TaskResult(task.task_id, error=error))


def _reap(worker: _Worker, timeout: float) -> int | None:
    """Wait for ``worker``'s process; terminate, then kill it if it does not end in time.
    Returns its exit code (negative: the signal that ended it)."""
    worker.conn.close()
    process = worker.process
    for stop in (None, process.terminate, process.kill):
        if stop is not None:
            stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout if stop is None else 1.0)
            break
    worker.output.join(1.0)  # its output ends with it
    return process.returncode


def _relay_output(stream: IO[bytes], slot: int) -> None:
    """Log each line a worker prints (its ClientApp's prints and logs) until it exits."""
    with stream:
        for line in stream:
            text = line.decode(errors="replace").rstrip()
            if text:
                worker_log.info("[worker %d] %s", slot, text)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
