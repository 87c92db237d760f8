"""The Ray simulation backend (the ``corolla[simulation]`` extra): ClientApps in Ray actors.

`RayPool` is a `Backend` like `WorkerPool`: one dispatcher thread in this process keeps the
queue, gives each idle actor one task, waits on the outstanding calls (``ray.wait``, short
timeouts) and hands each result to ``on_result``. Each actor loads the ClientApp once. Every
distinct object a task references (a broadcast model) is put into Ray's object store once and
shared by reference, until no queued or running task needs it. Ray is imported lazily, so
``import corolla.simulation`` stays Ray-free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from corolla.common.backoff import retry
from corolla.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from corolla.records import Error, ErrorCode
from corolla.simulation._resources import BackendConfig
from corolla.simulation._worker import ClientAppSource
from corolla.simulation.backend import ResultCallback, Task, TaskResult

log = logging.getLogger(__name__)

_POLL = 0.1  # the dispatcher's longest wait
_JOIN = 5.0  # seconds `close` waits for the dispatcher
_INIT_DEFAULTS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": node IP 127.0.0.1, loopback only
_USAGE_ENV = "RAY_USAGE_STATS_ENABLED"  # "0": Ray reports no usage statistics (it does by default)
_START_ATTEMPTS = 3  # Ray's local start sometimes times out on a loaded machine
_EXTRA = "the Ray backend needs the 'simulation' extra: pip install 'corolla[simulation]'"


def _ray(local: bool) -> Any:  # Any: Ray ships no complete type stubs
    """Ray, imported. For a local instance, before Ray's first import: bind loopback only
    (Ray's own switch: without it, its servers listen on every interface)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    os.environ.setdefault(_USAGE_ENV, "0")  # nothing phones home
    try:
        import ray
    except ImportError as exc:
        raise FailedPrecondition(_EXTRA) from exc
    return ray


def start_ray(init_args: dict[str, Any], sleep: Callable[[float], object] = time.sleep) -> Any:
    """Ray, initialized with ``init_args`` over Corolla's defaults (a local instance unless
    they hold an ``address``). Ray's own node start gives up when its raylet has not
    registered within 30 s, which a loaded machine sometimes takes: a start that fails is
    shut down and tried again, up to three times in all."""
    ray = _ray(local="address" not in init_args)

    def start() -> None:
        try:
            ray.init(**{**_INIT_DEFAULTS, **init_args})
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"Ray refused init-args {init_args}: {exc}") from exc
        except Exception as exc:  # Ray raises bare Exception (and ConnectionError) here
            ray.shutdown()
            raise Unavailable(f"Ray did not start: {exc}") from exc

    def on_retry(attempt: int, error: Exception, delay: float) -> None:
        log.warning(
            "%s; trying again in %.1f s (attempt %d of %d)",
            error,
            delay,
            attempt + 1,
            _START_ATTEMPTS,
        )

    retry(start, attempts=_START_ATTEMPTS, on_retry=on_retry, sleep=sleep)
    return ray


def stop_ray(ray: Any, started: set[int], *, grace: float = 10.0) -> None:
    """Shut Ray down, then end those of the processes ``started`` (our children that came with
    a local instance: `ray_children`) still running: Ray's shutdown leaves its head processes
    (gcs_server, dashboard, monitors) behind now and then on a busy machine. SIGTERM, up to
    ``grace`` seconds, then SIGKILL; each is reaped."""
    ray.shutdown()
    left = _children() & started
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        left = {pid for pid in left if not _reaped(pid)}
        if left:
            time.sleep(0.05)
    for pid in left:
        log.warning("Ray process %d did not end on SIGTERM; killing it", pid)
        _signal(pid, signal.SIGKILL)
        _reaped(pid, block=True)


def ray_children(start: Callable[[], object]) -> set[int]:
    """Run ``start`` (a local Ray's start) and return the child processes it left running."""
    before = _children()
    start()
    return _children() - before


def _children() -> set[int]:
    """This process's direct children (Linux: from /proc)."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.add(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reaped(pid: int, *, block: bool = False) -> bool:
    """Whether child ``pid`` has ended (and is reaped now); Ray may have reaped it first."""
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _fitting(cluster: dict[str, float], config: BackendConfig) -> int:
    """``config.num_workers`` (0: unbounded), capped by what the cluster holds; at least 1."""
    fits = [int(float(cluster.get("CPU", 1)) // config.num_cpus)]
    if config.num_gpus > float(cluster.get("GPU", 0)):
        raise InvalidArgument(
            f"client-resources asks for num-gpus={config.num_gpus:g} per ClientApp, but the "
            f"Ray cluster has {float(cluster.get('GPU', 0)):g} GPUs"
        )
    if config.num_gpus > 0:
        fits.append(int(float(cluster.get("GPU", 0)) // config.num_gpus))
    if config.num_workers:
        fits.append(config.num_workers)
    return max(1, min(fits))


class _Actor:
    """The body of one Ray actor: the ClientApp, loaded once, answering one task per call."""

    def __init__(self, reference: str, app_dir: str, script: str, path: list[str]) -> None:
        for entry in reversed(path):  # the driver's sys.path: the app's modules import alike
            if entry not in sys.path:
                sys.path.insert(0, entry)
        self._app: Any = None
        self._error: str | None = None
        try:
            self._app = ClientAppSource(reference, app_dir, script).load()
        except Exception as exc:
            from corolla.clientapp.clientapp import short_traceback
            from corolla.common.errors import AppError

            detail = str(exc) if isinstance(exc, AppError) else short_traceback(exc)
            self._error = f"ClientApp cannot be loaded: {detail}"

    def ready(self) -> str | None:
        return self._error

    def run(
        self, message: bytes, context: bytes, ids: list[str], *objects: bytes
    ) -> tuple[bytes, bytes, dict[str, bytes]] | tuple[int, str]:
        from corolla.clientapp.clientapp import short_traceback
        from corolla.simulation._worker import run_task

        try:
            return run_task(self._app, message, context, dict(zip(ids, objects, strict=True)))
        except Exception as exc:  # the deployed runtime's process would die here
            return int(ErrorCode.CLIENT_APP_RAISED_EXCEPTION), short_traceback(exc)


class RayPool:
    """``config.num_workers`` Ray actors (0: as many as the cluster's CPUs hold at
    ``config.num_cpus`` each) running the ClientApp of ``source``; see `WorkerPool` for the
    contract. Starts a local Ray instance unless Ray is initialized already (or
    ``init_args`` has the ``address`` of a cluster); `close` shuts down only what it started."""

    def __init__(
        self, source: ClientAppSource, on_result: ResultCallback, config: BackendConfig
    ) -> None:
        ray = _ray(local="address" not in config.init_args)
        self._ray = ray
        self._source = source
        self._on_result = on_result
        self._config = config
        self._owns_ray = not ray.is_initialized()
        self._ray_processes: set[int] = set()  # a local Ray's, to end at close
        if self._owns_ray:
            local = "address" not in config.init_args
            started = ray_children(lambda: start_ray(config.init_args))
            self._ray_processes = started if local else set()
        self._lock = threading.Lock()  # guards _queue, _closed; never held while waiting
        self._queue: OrderedDict[str, Task] = OrderedDict()
        self._closed = False
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._broken: Error | None = None
        self.failure: BaseException | None = None
        self._refs: dict[str, Any] = {}  # object id -> its ObjectRef in Ray's store
        self._running: dict[Any, tuple[int, Task]] = {}  # call ref -> (actor slot, task)
        try:
            count = _fitting(ray.cluster_resources(), config)
            self._actor_class = ray.remote(num_cpus=config.num_cpus, num_gpus=config.num_gpus)(
                _Actor
            )
            self._actors: list[Any] = [self._spawn() for _ in range(count)]
        except BaseException:
            self._shutdown()
            raise
        self._thread = threading.Thread(target=self._run, name="simulation-ray", daemon=True)
        self._thread.start()

    @property
    def num_workers(self) -> int:
        return len(self._actors)

    def pids(self) -> list[int]:
        """Empty: Ray's actors are Ray's processes (possibly on other machines)."""
        return []

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def submit(self, task: Task) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the Ray pool is closed")
            self._queue[task.task_id] = task

    def cancel(self, task_id: str) -> bool:
        with self._lock:
            return self._queue.pop(task_id, None) is not None

    def close(self) -> None:
        """Stop the dispatcher, kill the actors, and end Ray if this pool started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
        self._stopping.set()
        self._thread.join(_JOIN)
        self._shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spawn(self) -> Any:
        s = self._source
        return self._actor_class.remote(s.reference, s.app_dir, s.script, list(sys.path))

    def _shutdown(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor)
            except Exception:  # already dead, or Ray is gone
                log.debug("could not kill a Ray actor", exc_info=True)
        self._running.clear()
        self._refs.clear()
        if self._owns_ray:
            stop_ray(self._ray, self._ray_processes)

    # -- the dispatcher thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._check_load()
            while not self._stopping.is_set():
                if self._broken is not None:
                    self._fail_queued(self._broken)
                    time.sleep(_POLL)
                    continue
                self._feed()
                self._collect()
        except BaseException as exc:  # reaches the grid's caller through `failure`
            log.exception("the Ray backend's dispatcher crashed")
            self.failure = exc
        finally:
            self._ready.set()

    def _check_load(self) -> None:
        """Wait for every actor to load the ClientApp; the first failure breaks the pool."""
        pending = {actor.ready.remote(): actor for actor in self._actors}
        while pending and not self._stopping.is_set():
            done, _ = self._ray.wait(list(pending), num_returns=1, timeout=_POLL)
            for ref in done:
                del pending[ref]
                try:
                    reason = self._ray.get(ref)
                except self._ray.exceptions.RayActorError as exc:
                    reason = f"ClientApp process exited before it was ready: {exc}"
                if reason is not None and self._broken is None:
                    log.error("%s", reason)
                    self._broken = Error(ErrorCode.LOAD_CLIENT_APP_EXCEPTION, str(reason))
        self._ready.set()

    def _feed(self) -> None:
        busy = {slot for slot, _ in self._running.values()}
        for slot, actor in enumerate(self._actors):
            if slot in busy:
                continue
            with self._lock:
                if not self._queue:
                    break
                task = self._queue.popitem(last=False)[1]
            ids = list(task.objects)
            refs = [self._object_ref(oid, task) for oid in ids]
            call = actor.run.remote(task.message, task.context, ids, *refs)
            self._running[call] = (slot, task)

    def _object_ref(self, object_id: str, task: Task) -> Any:
        ref = self._refs.get(object_id)
        if ref is None:
            ref = self._refs[object_id] = self._ray.put(bytes(task.objects[object_id]))
        return ref

    def _collect(self) -> None:
        if not self._running:
            time.sleep(_POLL / 4)  # nothing out: look at the queue again soon
            return
        done, _ = self._ray.wait(list(self._running), num_returns=1, timeout=_POLL)
        for call in done:
            slot, task = self._running.pop(call)
            self._on_result(self._result(slot, task, call))
        if done:
            self._drop_unneeded_refs()

    def _result(self, slot: int, task: Task, call: Any) -> TaskResult:
        try:
            value = self._ray.get(call)
        except self._ray.exceptions.RayActorError as exc:
            log.warning("Ray actor %d died handling %s: %s", slot, task.task_id, exc)
            self._actors[slot] = self._spawn()  # a fresh one takes its place
            reason = "ClientApp process exited (its Ray actor died)"
            return TaskResult(
                task.task_id, error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason)
            )
        if len(value) == 2:
            code, reason = value
            return TaskResult(task.task_id, error=Error(int(code), str(reason)))
        reply, context, objects = value
        return TaskResult(task.task_id, reply, dict(objects), context)

    def _drop_unneeded_refs(self) -> None:
        with self._lock:
            tasks = [*self._queue.values(), *(task for _, task in self._running.values())]
        needed = {oid for task in tasks for oid in task.objects}
        for oid in [oid for oid in self._refs if oid not in needed]:
            del self._refs[oid]  # Ray frees the stored copy once no reference is left

    def _fail_queued(self, error: Error) -> None:
        with self._lock:
            tasks = list(self._queue.values())
            self._queue.clear()
        for task in tasks:
            self._on_result(TaskResult(task.task_id, error=error))
