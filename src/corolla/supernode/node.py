"""The SuperNode: registers with the SuperLink, pulls work, runs ClientApp processes.

Threads: ``fleet-pull`` (registration, and the node's open stream: `Fleet.Connect`; or the
PullMessages long poll with ``--pull-mode poll``), ``heartbeat`` (on the stream while it is open),
``outbox`` (replies and logs up to the SuperLink), one ``intake-run-N`` per run with pulled
messages to take in (`Intake`), the ClientAppIo server's pool, and either
one watcher per app process (isolation ``subprocess``, `Supervisor`, and ``spare-clientapp``
keeping a spare app process ready for the next run, `corolla.common.spare`) or the
``app-watchdog`` of the attached external app processes (isolation ``process``,
`ExternalApps`). A failed call is
logged and retried (`corolla.common.backoff.retry`); an unexpected exception in a worker stops
the node and is reported by `failure`. With ``node_id_file`` the node asks for its old id
again after a restart; with ``ready_file`` it says when it first registered (`identity`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from corolla.common.appio import new_secret, warn_if_exposed
from corolla.common.backoff import retry
from corolla.common.compression import MIN_SAVING, NONE
from corolla.common.config import write_ready_file
from corolla.common.errors import (
    CorollaError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from corolla.common.grpc import bind, create_server
from corolla.common.spare import SparePool
from corolla.common.tls import INSECURE, security
from corolla.supernode.clientappio import ClientAppIoServicer, add_clientappio
from corolla.supernode.config import SuperNodeConfig, local_address
from corolla.supernode.connection import FleetConnection, NodeStream
from corolla.supernode.deliveries import Deliveries
from corolla.supernode.domain import Envelope
from corolla.supernode.external import ExternalApps
from corolla.supernode.identity import NodeIdFile
from corolla.supernode.intake import Fetcher, Intake
from corolla.supernode.launcher import clientapp_spares
from corolla.supernode.objects import NodeObjects
from corolla.supernode.outbox import Outbox
from corolla.supernode.runs import RunTable
from corolla.supernode.supervisor import Supervisor

_T = TypeVar("_T")
log = logging.getLogger(__name__)

MAX_MESSAGES = 64  # per PullMessages call


class _Lost:
    """The SuperLink does not know the node (NOT_FOUND): register again."""


LOST = _Lost()


class SuperNode:
    def __init__(self, config: SuperNodeConfig) -> None:
        self.config = config
        external = config.isolation == "process"
        if external and not config.appio_secret:
            raise InvalidArgument("isolation process needs an AppIo secret")
        if not config.insecure and config.clientappio_tls is None:
            raise InvalidArgument("without insecure, the ClientAppIo API needs TLS material")
        self._conn = FleetConnection(
            config.superlink,
            insecure=config.insecure,
            root_certificates=config.root_certificates,
            client_tls=config.client_tls,
            auth_key=config.auth_private_key,
            compression=config.compression,
        )
        self._objects = NodeObjects()  # payloads on disk, out of this process's memory
        self._runs = RunTable(attachable=external, objects=self._objects)
        self._stop = threading.Event()
        self._stopped = False
        self._registration = threading.Lock()
        self._node_id = 0
        self._requested = 0  # the id to ask for at the first registration (node id file)
        self._id_file = (
            NodeIdFile(config.node_id_file, config.superlink) if config.node_id_file else None
        )
        self._ready = False
        self._interval = config.heartbeat_interval
        self._stream: NodeStream | None = None  # the open stream (pull mode stream)
        self._outbox = Outbox(self._conn, lambda: self._node_id, self._stream_of)
        self._server = create_server()
        # In isolation subprocess nobody knows the secret: RequestRun is refused to everyone.
        secret = config.appio_secret if external and config.appio_secret else new_secret()
        servicer = ClientAppIoServicer(
            self._runs, self._outbox, secret, compression=config.compression
        )
        add_clientappio(self._server, servicer)
        tls = config.clientappio_tls
        self.clientappio_port = bind(
            self._server, config.clientappio_address, tls.credentials() if tls else None
        )
        self.clientappio_address = local_address(config.clientappio_address, self.clientappio_port)
        self._children_address = ""  # a plaintext loopback port for our own children, if any
        self._threads = [
            threading.Thread(target=self._guard(self._pull_loop), name="fleet-pull"),
            threading.Thread(target=self._guard(self._heartbeat_loop), name="heartbeat"),
            threading.Thread(target=self._guard(self._outbox.run), name="outbox"),
        ]
        self._spares: SparePool | None = None  # isolation subprocess: the spare app process
        self._apps = self._app_runner(external)
        fetcher = Fetcher(
            self._conn,
            self._runs,
            self._outbox,
            node_config=config.node_config,
            stop=self._stop,
            ready=self._apps.ensure_process,
        )
        self._intake = Intake(fetcher.take_in, self._guard)
        self.failure: BaseException | None = None

    def _app_runner(self, external: bool) -> Supervisor | ExternalApps:
        """Who runs the ClientApps: attached external processes, or our own children."""
        if external:
            apps = ExternalApps(
                self._runs,
                self._outbox,
                app_address=self.clientappio_address,
                attach_timeout=self.config.app_attach_timeout,
                heartbeat_timeout=self.config.app_heartbeat_timeout,
            )
            watchdog = threading.Thread(target=self._guard(apps.watch), name="app-watchdog")
            self._threads.append(watchdog)
            return apps
        tls = self.config.clientappio_tls
        children, app_tls = self.clientappio_address, None
        if tls is not None and tls.mutual:
            # Every port demands a client certificate: the children get the CA and one.
            if self.config.app_tls is None:
                raise InvalidArgument("mutual TLS on ClientAppIo: its app processes need app_tls")
            app_tls = self.config.app_tls
        elif tls is not None:
            # Our own children reach us on a plaintext loopback-only port (their tokens never
            # leave this machine) instead of needing the certificate.
            children = f"127.0.0.1:{bind(self._server, '127.0.0.1:0', None)}"
            self._children_address = children
        app_env = self.config.app_env
        if self.config.spare_app_process:
            self._spares = clientapp_spares(children, app_tls, app_env, self._guard)
        return Supervisor(
            self._runs,
            self._outbox,
            children,
            self._guard,
            app_tls,
            app_env=app_env,
            spares=self._spares,
        )

    @property
    def node_id(self) -> int:
        """This node's id at the SuperLink (0 until registered)."""
        return self._node_id

    def start(self) -> None:
        self._server.start()
        config = self.config
        tls = config.clientappio_tls is not None
        children = (
            f", its app processes on {self._children_address} ({INSECURE}, loopback only)"
            if self._children_address
            else ""
        )
        fleet = INSECURE if config.insecure else "TLS"
        log.info(
            "SuperNode ready: ClientAppIo API listening on %s (%s)%s; Fleet API at %s (%s%s); "
            "isolation %s",
            f"{config.clientappio_address.rpartition(':')[0]}:{self.clientappio_port}",
            security(config.clientappio_tls),
            children,
            config.superlink,
            fleet,
            " with a client certificate" if config.client_tls else "",
            config.isolation,
        )
        warn_if_exposed(config.clientappio_address, tls, "ClientAppIo")
        if config.compression != NONE:
            log.info(
                "compression %s: object chunks pushed to the SuperLink and sent to ClientApps "
                "are compressed where the receiver accepts it and that saves at least %.0f %%",
                config.compression,
                100 * MIN_SAVING,
            )
        if self._id_file is not None:
            self._requested = self._id_file.claim()
        for thread in self._threads:
            thread.start()
        if self._spares is not None:  # once the API serves: the spare's run may come soon
            self._spares.start()

    def request_stop(self) -> None:
        """Ask the node to stop (safe from a signal handler); `stop` does the work."""
        self._stop.set()

    def wait(self, timeout: float) -> bool:
        """True once a stop was requested (or a worker failed)."""
        return self._stop.wait(timeout)

    def stop(self, grace: float = 2.0) -> None:
        """Stop gracefully: app processes first (reaped, the spare too), then pending replies,
        then the API."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._conn.cancel_pending()
        self._intake.stop()
        self._apps.stop_all()
        if self._spares is not None:
            self._spares.close()
        self._stay_online(grace)
        self._outbox.close(grace)
        for thread in self._threads:
            if thread.ident is not None:  # started
                thread.join(grace + 1)
        if self._node_id:
            try:
                self._conn.delete_node(self._node_id)
            except CorollaError as exc:
                log.info("could not sign off node %d at the SuperLink: %s", self._node_id, exc)
        self._server.stop(grace).wait(grace + 1)
        self._conn.close()
        self._objects.close()
        if self._id_file is not None:
            self._id_file.release()
        log.info("SuperNode stopped")

    def _stay_online(self, grace: float) -> None:
        """The heartbeat loop has stopped, but the replies of the stopped app processes are
        still to be sent: one last heartbeat keeps the node online for ``grace`` s more."""
        if not self._node_id:
            return
        try:
            self._conn.heartbeat(self._node_id, max(self._interval, grace), [], final=True)
        except CorollaError as exc:
            log.info("last heartbeat of node %d failed: %s", self._node_id, exc)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                log.exception("SuperNode worker %s failed", threading.current_thread().name)
                self.failure = exc
                self._stop.set()

        return run

    # -- registration ---------------------------------------------------------------------------

    def _registered(self, stale: int = 0) -> int:
        """The node id, registering first if needed (``stale``: an id the SuperLink lost).

        Retries with capped exponential backoff until it succeeds; 0 when the node stops.
        """
        with self._registration:
            if stale and self._node_id == stale:
                log.warning("the SuperLink lost node %d; registering again", stale)
                self._node_id = 0
            if self._node_id or self._stop.is_set():
                return self._node_id
            requested = stale or self._requested

            def warn(attempt: int, exc: CorollaError, delay: float) -> None:
                log.warning(
                    "cannot register with the SuperLink at %s (attempt %d): %s; retrying in %.1f s",
                    self._conn.address,
                    attempt,
                    exc,
                    delay,
                )

            try:
                node_id, interval = retry(
                    lambda: self._conn.create_node(self._interval, requested),
                    retry_on=(CorollaError,),
                    stop=self._stop,
                    on_retry=warn,
                )
            except CorollaError:  # retried until the node stops
                return 0
            self._announce(node_id)  # kept in the node id file before anything uses it
            self._node_id, self._interval = node_id, interval
            log.info("registered as node %d with the SuperLink at %s", node_id, self._conn.address)
            return self._node_id

    def _announce(self, node_id: int) -> None:
        """Keep the id (node id file) and, the first time, say the node is ready."""
        self._requested = node_id
        if self._id_file is not None:
            self._id_file.save(node_id)
        if self._ready or self.config.ready_file is None:
            return
        self._ready = True
        ready = {"node_id": node_id, "clientappio": self.clientappio_address, "pid": os.getpid()}
        try:
            write_ready_file(self.config.ready_file, ready)
        except OSError as exc:
            log.warning("cannot write ready file %s: %s", self.config.ready_file, exc)

    def _keep_calling(
        self,
        what: str,
        call: Callable[[int], _T],
        handle: Callable[[int, _T], None],
        pause: float = 0.0,
    ) -> None:
        """Call the SuperLink as the registered node until the node stops: NOT_FOUND registers
        again, other failures back off (capped, with jitter)."""

        def warn(attempt: int, exc: CorollaError, delay: float) -> None:
            log.warning("%s failed: %s; retrying in %.1f s", what, exc, delay)

        while not self._stop.is_set():
            node_id = self._registered()
            if not node_id:
                return

            def attempt(node_id: int = node_id) -> _T | _Lost:
                try:
                    return call(node_id)
                except NotFound:
                    return LOST

            try:
                result = retry(attempt, retry_on=(CorollaError,), stop=self._stop, on_retry=warn)
            except CorollaError:  # retried until the node stops
                return
            if isinstance(result, _Lost):
                self._registered(stale=node_id)
                continue
            handle(node_id, result)
            if pause:
                self._stop.wait(pause)

    def _finish_runs(self, run_ids: list[int]) -> None:
        for run_id in run_ids:
            self._apps.finish_run(run_id)

    def _stream_of(self, node_id: int) -> NodeStream | None:
        """The stream open now, if it is ``node_id``'s (not one of an id the node had)."""
        stream = self._stream
        return stream if stream is not None and stream.node_id == node_id else None

    def _heartbeat_loop(self) -> None:
        def beat(node_id: int) -> list[int]:
            if (stream := self._stream_of(node_id)) is not None:
                try:  # on the open stream
                    return stream.beat(self._interval, self._runs.run_ids())
                except Unavailable as exc:  # it ended, or hangs (it is cut): stay online
                    log.info("heartbeat on the stream failed (%s); sent as a call instead", exc)
            return self._conn.heartbeat(node_id, self._interval, self._runs.run_ids())

        self._keep_calling(
            "heartbeat",
            beat,
            lambda node_id, finished: self._finish_runs(finished),
            pause=self._interval,
        )

    # -- work -----------------------------------------------------------------------------------

    def _pull_loop(self) -> None:
        if self.config.pull_mode == "poll":
            self._poll_loop()
        else:
            self._stream_loop()

    def _stream_loop(self) -> None:
        """Work comes down the node's open stream; what it brings is acknowledged with its
        reply, or on its own if the reply takes longer (`NodeStream.ack`)."""
        deliveries = Deliveries()

        def follow(node_id: int) -> None:
            stream = self._conn.connect(node_id, self._interval, self._runs.run_ids())
            self._stream = stream
            try:
                for down in stream:
                    self._finish_runs(down.finished_run_ids)
                    if down.messages:
                        stream.ack([message.message_id for message in down.messages])
                        self._take_in(node_id, deliveries.received(down.messages))
            finally:
                self._stream = None
                stream.cancel()

        self._keep_calling("the stream to the SuperLink", follow, lambda node_id, _: None)

    def _take_in(self, node_id: int, messages: list[Envelope]) -> None:
        for message in messages:
            log.info("run %d: received message %s", message.run_id, message.message_id)
            self._intake.submit(node_id, message)

    def _poll_loop(self) -> None:
        deliveries = Deliveries()

        def pull(node_id: int) -> tuple[list[Envelope], list[int]]:
            return self._conn.pull_messages(
                node_id,
                self.config.max_wait,
                MAX_MESSAGES,
                self._runs.active_run_ids(),
                deliveries.acks(),
            )

        def take(node_id: int, pulled: tuple[list[Envelope], list[int]]) -> None:
            messages, finished = pulled
            self._finish_runs(finished)
            self._take_in(node_id, deliveries.received(messages))

        self._keep_calling("pulling messages", pull, take)
