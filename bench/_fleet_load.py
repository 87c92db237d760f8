"""Load generator of `bench/fleet_scale.py`: N simulated SuperNodes on the real Fleet RPCs.

One process, one asyncio loop (`grpc.aio`), the generated Fleet stubs. The N nodes share C
connections, ``--nodes-per-channel`` nodes on each (a real SuperNode has a connection of its
own; C connections keep the SuperLink's socket count and this process's CPU in bounds, and
change nothing in what the SuperLink does per call). Each node, as `corolla.supernode` does:

- registers (``CreateNode``, at most ``--register-concurrency`` at once), asking for its old
  id again when the SuperLink says it does not know it (NOT_FOUND on a heartbeat or pull);
- heartbeats every ``--heartbeat-interval`` seconds, the first one at a random point of the
  first interval (so that N nodes do not heartbeat at once), timing each from its sending to
  its answer: on the node's open stream, or as a ``Heartbeat`` call while it has none;
- ``--pull-mode stream`` (the SuperNode's default): keeps one ``Connect`` stream open (deadline
  1 h), acknowledging on it what comes down within ``--ack-delay`` seconds (the SuperNode's
  `ACK_DELAY`) or with its reply, whichever goes first; ``--pull-mode poll``: long-polls
  ``PullMessages`` (``--wait`` seconds, deadline wait + 5 s), acknowledging in each pull
  (``ack_message_ids``) the instructions the previous pull brought;
- answers each instruction once (an id that comes again is counted as a duplicate, not
  answered) with the reply a ClientApp would give: a metric record ``{"answered": 1}``, built
  with the records' own reply rules (`Message(content, reply_to=...)`), pushed up its open
  stream (``--pull-mode stream``, as a SuperNode's outbox does) or with ``PushMessages``;
- backs off (`corolla.common.backoff.Backoff`: 0.5 s doubling to 10 s) and retries after any
  other failed call; a reply is retried as the SuperNode's outbox does (while the SuperLink is
  away, until the TTL runs out; NOT_FOUND or RESOURCE_EXHAUSTED up to 5 attempts; anything
  else drops it).

Every call is counted by kind, every failure by kind and status code. Once all N nodes are
registered it writes ``--ready-file``. After ``--duration`` seconds, on SIGTERM/SIGINT, or when
its parent is gone, it cancels what is in flight (cancelled calls are not failures), writes
``--stats-file`` (JSON: counts, heartbeat latencies and the loop's lag as quantiles and as
``[time, seconds]`` samples, instructions received, duplicates, replies pushed or dropped, CPU
seconds) and exits 0. A bug in a node's loop stops everything and exits 1 with its traceback.

    python bench/_fleet_load.py --fleet 127.0.0.1:9092 --nodes 1000 \
        --ready-file ready.json --stats-file stats.json [--duration 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import grpc
import grpc.aio

from corolla.common.backoff import Backoff
from corolla.common.collector import SurvivorFreezer
from corolla.common.config import write_ready_file
from corolla.common.grpc import MAX_MESSAGE_BYTES, keepalive_seconds
from corolla.common.protocol import MAX_ACKS
from corolla.common.transfer import NODE_ID_KEY
from corolla.proto.v1 import fleet_pb2 as fpb
from corolla.proto.v1 import fleet_pb2_grpc
from corolla.proto.v1 import message_pb2 as mpb
from corolla.records import Message, MetricRecord, RecordDict
from corolla.records.message import restore_message
from corolla.records.serde import message_to_proto, metadata_from_proto
from corolla.supernode.connection import ACK_DELAY

Req = TypeVar("Req")
Resp = TypeVar("Resp")

POLL_MARGIN = 5.0  # a long poll's deadline is its wait plus this (as `supernode/connection.py`)
STREAM_SECONDS = 3600.0  # a stream's deadline (as `supernode/connection.py`)
RPC_TIMEOUT = 30.0
MAX_MESSAGES = 64
REFUSED_ATTEMPTS = 5  # a reply refused with NOT_FOUND or RESOURCE_EXHAUSTED (as the outbox)
AWAY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED})
LAG_TICK = 0.1  # seconds between the loop-lag probe's wake-ups
PARENT_CHECK = 0.5
CANCEL_GRACE = 10.0


@dataclass(frozen=True)
class LoadConfig:
    fleet: str
    nodes: int
    nodes_per_channel: int
    heartbeat_interval: float
    wait: float
    pull_mode: str
    ack_delay: float
    register_concurrency: int
    duration: float
    ready_file: Path
    stats_file: Path
    seed: int


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    registered: int = 0  # nodes registered at least once
    registration_seconds: float = 0.0  # until all were
    reregistered: int = 0  # registrations after a NOT_FOUND
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "<kind> <STATUS>"
    error_details: dict[str, str] = field(default_factory=dict)
    heartbeats: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds)
    received: int = 0  # instructions, each counted once
    received_at: list[float] = field(default_factory=list)  # when each came (time.time)
    replied_at: list[float] = field(default_factory=list)  # when each reply was stored
    duplicates: int = 0  # instructions delivered again after the first time
    replies_ok: int = 0
    replies_already_stored: int = 0  # ALREADY_EXISTS on a retry: an earlier attempt stored it
    replies_dropped: int = 0
    lags: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds late)

    def failed(self, kind: str, code: grpc.StatusCode, details: str = "") -> None:
        what = f"{kind} {code.name}"
        self.errors[what] += 1
        self.error_details.setdefault(what, details)  # the first one's

    def to_json(self, cpu_seconds: float) -> dict[str, Any]:
        latencies = [seconds for _, seconds in self.heartbeats]
        return {
            "started": self.started,
            "stopped": time.time(),
            "cpu_seconds": cpu_seconds,
            "registered": self.registered,
            "registration_seconds": self.registration_seconds,
            "reregistered": self.reregistered,
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "error_details": self.error_details,
            "heartbeat_latency": quantiles(latencies),
            "heartbeats": [[round(t, 3), round(s, 6)] for t, s in self.heartbeats],
            "received": self.received,
            "received_at": [round(t, 3) for t in self.received_at],
            "replied_at": [round(t, 3) for t in self.replied_at],
            "duplicates": self.duplicates,
            "replies_ok": self.replies_ok,
            "replies_already_stored": self.replies_already_stored,
            "replies_dropped": self.replies_dropped,
            "loop_lag": quantiles([seconds for _, seconds in self.lags]),
            "lags": [[round(t, 3), round(s, 6)] for t, s in self.lags],
        }


def quantiles(values: list[float]) -> dict[str, float | int]:
    """Count, p50/p95/p99 (nearest rank) and max of ``values``, in seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "count": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1],
    }


REPLY_CONTENT = RecordDict({"metrics": MetricRecord({"answered": 1})})


def reply_to(instruction: mpb.Message) -> mpb.Message:
    """A ClientApp's reply to ``instruction``, by the records' rules: source and destination
    swapped, run, group and type inherited, what is left of the TTL, a fresh message id."""
    received = restore_message(metadata_from_proto(instruction.metadata), content=RecordDict())
    return message_to_proto(Message(REPLY_CONTENT, reply_to=received))


class Fleet:
    """What the simulated nodes share: the config, the stats, the registration slots."""

    def __init__(self, config: LoadConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self.register_slots = asyncio.Semaphore(config.register_concurrency)
        self.all_registered = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.stop = asyncio.Event()

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` as a task; one that raises stops the load generator (``failure``)."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if self.failure is None:
                self.failure = exc
            self.stop.set()

    def node_registered(self) -> None:
        self.stats.registered += 1
        if self.stats.registered == self.config.nodes:
            self.stats.registration_seconds = time.time() - self.stats.started
            self.all_registered.set()


class FleetCalls(Protocol):
    """The Fleet calls the nodes make, as the generated stub has them on a `grpc.aio` channel
    (its type hints describe a synchronous channel)."""

    CreateNode: grpc.aio.UnaryUnaryMultiCallable[fpb.CreateNodeRequest, fpb.CreateNodeResponse]
    Heartbeat: grpc.aio.UnaryUnaryMultiCallable[fpb.HeartbeatRequest, fpb.HeartbeatResponse]
    PullMessages: grpc.aio.UnaryUnaryMultiCallable[
        fpb.FleetPullMessagesRequest, fpb.FleetPullMessagesResponse
    ]
    PushMessages: grpc.aio.UnaryUnaryMultiCallable[
        fpb.FleetPushMessagesRequest, fpb.FleetPushMessagesResponse
    ]
    Connect: grpc.aio.StreamStreamMultiCallable[fpb.NodeUp, fpb.NodeDown]


def fleet_calls(channel: grpc.aio.Channel) -> FleetCalls:
    return cast(FleetCalls, fleet_pb2_grpc.FleetStub(channel))


class SimulatedNode:
    def __init__(self, fleet: Fleet, stub: FleetCalls, rng: random.Random) -> None:
        self._fleet = fleet
        self._stats = fleet.stats
        self._config = fleet.config
        self._stub = stub
        self._rng = rng
        self._node_id = 0
        self._registering = asyncio.Lock()
        self._seen: set[str] = set()  # instruction ids received
        self._stream: NodeStream | None = None  # the open stream (pull mode stream)
        self._active: set[int] = set()  # runs it got instructions of, as a SuperNode's apps

    async def _call(
        self,
        kind: str,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float,
    ) -> Resp | grpc.StatusCode:
        """The response, or the status code of the failure (counted)."""
        self._stats.calls[kind] += 1
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._stats.failed(kind, exc.code(), exc.details() or "")
            return exc.code()

    async def run(self) -> None:
        await self._register()
        self._fleet.node_registered()
        self._fleet.spawn(self._heartbeats())
        if self._config.pull_mode == "poll":
            await self._pulls()
        else:
            await self._streams()

    async def _register(self, stale: int = 0) -> int:
        """The node id, registering (again, if ``stale`` is the id the SuperLink lost)."""
        async with self._registering:
            if stale and self._node_id == stale:
                self._node_id = 0
                self._stats.reregistered += 1
            if self._node_id:
                return self._node_id
            backoff = Backoff()
            request = fpb.CreateNodeRequest(
                heartbeat_interval=self._config.heartbeat_interval, requested_node_id=stale
            )
            while True:
                async with self._fleet.register_slots:
                    created = await self._call(
                        "CreateNode", self._stub.CreateNode, request, RPC_TIMEOUT
                    )
                if not isinstance(created, grpc.StatusCode):
                    self._node_id = created.node_id
                    return self._node_id
                await asyncio.sleep(backoff.next_delay())

    async def _heartbeats(self) -> None:
        interval = self._config.heartbeat_interval
        await asyncio.sleep(self._rng.uniform(0, interval))
        backoff = Backoff()
        while True:
            node_id = self._node_id or await self._register()
            start = time.perf_counter()
            stream = self._stream
            if stream is not None and await stream.beat(interval, self._stats):
                self._stats.heartbeats.append((time.time(), time.perf_counter() - start))
                backoff.reset()
                await asyncio.sleep(interval)
                continue
            request = fpb.HeartbeatRequest(node_id=node_id, heartbeat_interval=interval)
            start = time.perf_counter()
            beat = await self._call("Heartbeat", self._stub.Heartbeat, request, RPC_TIMEOUT)
            if not isinstance(beat, grpc.StatusCode):
                self._stats.heartbeats.append((time.time(), time.perf_counter() - start))
                backoff.reset()
                await asyncio.sleep(interval)
            elif beat == grpc.StatusCode.NOT_FOUND:
                await self._register(stale=node_id)
            else:
                await asyncio.sleep(backoff.next_delay())

    async def _pulls(self) -> None:
        wait = self._config.wait
        backoff = Backoff()
        acks: list[str] = []  # what the last successful pull brought
        active = self._active
        while True:
            node_id = self._node_id or await self._register()
            request = fpb.FleetPullMessagesRequest(
                node_id=node_id,
                wait_seconds=wait,
                max_messages=MAX_MESSAGES,
                ack_message_ids=acks,
                active_run_ids=sorted(active),
            )
            pulled = await self._call(
                "PullMessages", self._stub.PullMessages, request, wait + POLL_MARGIN
            )
            if isinstance(pulled, grpc.StatusCode):
                if pulled == grpc.StatusCode.NOT_FOUND:
                    await self._register(stale=node_id)
                else:
                    await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            active.difference_update(pulled.finished_run_ids)
            acks = [message.metadata.message_id for message in pulled.messages]
            self._take(node_id, list(pulled.messages))

    async def _streams(self) -> None:
        """As a SuperNode's stream loop: open the stream, its first heartbeat sent; acknowledge
        what comes down at once, answer each instruction once; open another when it ends."""
        interval = self._config.heartbeat_interval
        backoff = Backoff()
        while True:
            node_id = self._node_id or await self._register()
            self._stats.calls["Connect"] += 1
            call = self._stub.Connect(
                metadata=[(NODE_ID_KEY, str(node_id))], timeout=STREAM_SECONDS
            )
            stream = NodeStream(call, self._config.ack_delay)
            try:
                await stream.send(
                    fpb.NodeUp(
                        beat=stream.number(),
                        heartbeat_interval=interval,
                        active_run_ids=sorted(self._active),
                    )
                )
                self._stream = stream
                while (down := await call.read()) is not grpc.aio.EOF:
                    backoff.reset()
                    down = cast(fpb.NodeDown, down)
                    if down.push:
                        stream.pushed(down.push, down.push_status)
                    if down.beat:
                        stream.answered(down.beat)
                    self._active.difference_update(down.finished_run_ids)
                    if down.messages:
                        stream.ack([message.metadata.message_id for message in down.messages])
                        self._take(node_id, list(down.messages))
                code = None
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self._stats.failed("Connect", code, exc.details() or "")
            finally:
                self._stream = None
                stream.close()
                call.cancel()
            if code == grpc.StatusCode.NOT_FOUND:
                await self._register(stale=node_id)
            elif code is not None:
                await asyncio.sleep(backoff.next_delay())

    def _take(self, node_id: int, messages: list[mpb.Message]) -> None:
        """Count what came (once; again: a duplicate) and answer what is new."""
        self._active.update(message.metadata.run_id for message in messages)
        fresh = []
        for message in messages:
            if message.metadata.message_id in self._seen:
                self._stats.duplicates += 1
            else:
                self._seen.add(message.metadata.message_id)
                fresh.append(message)
        if fresh:
            self._stats.received += len(fresh)
            self._stats.received_at.extend([time.time()] * len(fresh))
            self._fleet.spawn(self._answer(node_id, fresh))

    async def _answer(self, node_id: int, instructions: list[mpb.Message]) -> None:
        """Push the replies, retried as the SuperNode's outbox retries them."""
        replies = [reply_to(instruction) for instruction in instructions]
        expires_at = time.time() + min(reply.metadata.ttl for reply in replies)
        request = fpb.FleetPushMessagesRequest(node_id=node_id, messages=replies)
        backoff = Backoff()
        attempts = 0
        while True:
            attempts += 1
            stream = self._stream
            pushed: Any = None
            if stream is not None:  # up the open stream, as a SuperNode's outbox sends them
                pushed = await stream.push(replies, self._stats)
            if pushed is None:  # no stream, or it ended before the answer: as a call
                pushed = await self._call(
                    "PushMessages", self._stub.PushMessages, request, RPC_TIMEOUT
                )
            if not isinstance(pushed, grpc.StatusCode):
                self._stats.replies_ok += len(replies)
                self._stats.replied_at.extend([time.time()] * len(replies))
                return
            code = pushed
            if code == grpc.StatusCode.ALREADY_EXISTS and attempts > 1:
                # The push is one transaction: an earlier attempt stored them all, its answer
                # was lost.
                self._stats.replies_already_stored += len(replies)
                return
            away = code in AWAY and time.time() < expires_at
            if not away and not (code in REFUSED and attempts < REFUSED_ATTEMPTS):
                self._stats.replies_dropped += len(replies)
                return
            await asyncio.sleep(backoff.next_delay())


class NodeStream:
    """A node's open Connect stream: one write at a time; heartbeats wait for their answer;
    acknowledgements go up with a reply, or ``ack_delay`` seconds after the first of them (as
    `corolla.supernode.connection.NodeStream`)."""

    def __init__(
        self, call: grpc.aio.StreamStreamCall[fpb.NodeUp, fpb.NodeDown], ack_delay: float
    ) -> None:
        self._call = call
        self._ack_delay = ack_delay
        self._acks: dict[str, None] = {}  # held back, in order
        self._ack_timer: asyncio.TimerHandle | None = None
        self._sending_acks: set[asyncio.Future[None]] = set()
        self._writing = asyncio.Lock()
        self._next = 1
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._next_push = 1
        self._pushes: dict[int, asyncio.Future[fpb.PushStatus]] = {}

    def number(self) -> int:
        number, self._next = self._next, self._next + 1
        return number

    async def send(self, up: fpb.NodeUp) -> None:
        async with self._writing:
            await self._call.write(up)

    def ack(self, message_ids: list[str]) -> None:
        self._acks.update(dict.fromkeys(message_ids))
        if self._ack_delay <= 0:
            self._send_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(
                self._ack_delay, self._send_acks
            )

    def _send_acks(self) -> None:
        self._ack_timer = None
        ids, self._acks = list(self._acks), {}
        for start in range(0, len(ids), MAX_ACKS):
            up = fpb.NodeUp(ack_message_ids=ids[start : start + MAX_ACKS])
            task = asyncio.ensure_future(self._send_quietly(up))
            self._sending_acks.add(task)
            task.add_done_callback(self._sending_acks.discard)

    async def _send_quietly(self, up: fpb.NodeUp) -> None:
        """Send it unless the stream ended (its reader counts how)."""
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, StreamEnded):
            await self.send(up)

    def _riding(self, replies: list[mpb.Message]) -> list[str]:
        """The acknowledgements a push of ``replies`` carries (theirs are implied)."""
        for reply in replies:
            self._acks.pop(reply.metadata.reply_to_message_id, None)
        ids = list(self._acks)[:MAX_ACKS]
        for message_id in ids:
            del self._acks[message_id]
        return ids

    async def beat(self, interval: float, stats: Stats) -> bool:
        """True once its answer came; False if the stream ended first (or the answer did not
        come within RPC_TIMEOUT: the stream is cut)."""
        number = self.number()
        answer = self._waiting[number] = asyncio.get_running_loop().create_future()
        stats.calls["Heartbeat (stream)"] += 1
        try:
            await self.send(fpb.NodeUp(beat=number, heartbeat_interval=interval))
            await asyncio.wait_for(answer, RPC_TIMEOUT)
            return True
        except TimeoutError:
            stats.errors["Heartbeat (stream) DEADLINE_EXCEEDED"] += 1
            self._call.cancel()
            return False
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return False  # the stream ended (its reader counts how)
        except StreamEnded:
            return False
        finally:
            self._waiting.pop(number, None)

    async def push(
        self, replies: list[mpb.Message], stats: Stats
    ) -> fpb.FleetPushMessagesResponse | grpc.StatusCode | None:
        """Replies up the stream: a response once stored, the status code of a refusal, or
        None if the stream ended first (send them as a call)."""
        number = self._next_push
        self._next_push += 1
        answer = self._pushes[number] = asyncio.get_running_loop().create_future()
        stats.calls["PushMessages (stream)"] += 1
        try:
            riding = self._riding(replies)
            await self.send(fpb.NodeUp(push=number, replies=replies, ack_message_ids=riding))
            status: fpb.PushStatus = await asyncio.wait_for(answer, RPC_TIMEOUT)
        except TimeoutError:
            stats.failed("PushMessages (stream)", grpc.StatusCode.DEADLINE_EXCEEDED)
            return grpc.StatusCode.DEADLINE_EXCEEDED
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, StreamEnded):
            return None
        finally:
            self._pushes.pop(number, None)
        if status.code == 0:
            return fpb.FleetPushMessagesResponse()
        code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
        stats.failed("PushMessages (stream)", code, status.message)
        return code

    def pushed(self, number: int, status: fpb.PushStatus) -> None:
        if (answer := self._pushes.get(number)) is not None and not answer.done():
            answer.set_result(status)

    def answered(self, number: int) -> None:
        if (answer := self._waiting.get(number)) is not None and not answer.done():
            answer.set_result(None)

    def close(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        for task in self._sending_acks:
            task.cancel()
        for answer in [*self._waiting.values(), *self._pushes.values()]:
            if not answer.done():
                answer.set_exception(StreamEnded())


class StreamEnded(Exception):
    """The stream a heartbeat waited on ended before its answer came."""


def channel_options() -> list[tuple[str, Any]]:
    """A SuperNode's channel settings (`common/grpc.py`), and a connection of its own."""
    interval_ms = max(1, round(keepalive_seconds() * 1000))
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", max(interval_ms, 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Channels with equal settings would share one TCP connection: not here.
        ("grpc.use_local_subchannel_pool", 1),
    ]


async def watch_lag(stats: Stats) -> None:
    """How late the loop wakes up: past a few ms, measured latencies include our own delay."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(LAG_TICK)
        stats.lags.append((time.time(), time.perf_counter() - start - LAG_TICK))


async def watch_parent(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK)
    stop.set()


async def write_ready(fleet: Fleet) -> None:
    await fleet.all_registered.wait()
    stats = fleet.stats
    ready = {
        "pid": os.getpid(),
        "nodes": stats.registered,
        "registration_seconds": stats.registration_seconds,
    }
    write_ready_file(fleet.config.ready_file, ready)


async def generate(config: LoadConfig) -> Stats:
    stats = Stats()
    fleet = Fleet(config, stats)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, fleet.stop.set)
    count = math.ceil(config.nodes / config.nodes_per_channel)
    channels = [
        grpc.aio.insecure_channel(config.fleet, options=channel_options()) for _ in range(count)
    ]
    stubs = [fleet_calls(channel) for channel in channels]
    rng = random.Random(config.seed)
    try:
        for index in range(config.nodes):
            node = SimulatedNode(fleet, stubs[index // config.nodes_per_channel], rng)
            fleet.spawn(node.run())
        for watcher in (watch_lag(stats), watch_parent(fleet.stop), write_ready(fleet)):
            fleet.spawn(watcher)
        with contextlib.suppress(TimeoutError):  # the time is up
            await asyncio.wait_for(fleet.stop.wait(), config.duration)
    finally:
        pending = list(fleet.tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE)
        for channel in channels:
            await channel.close(grace=None)
    if fleet.failure is not None:
        raise fleet.failure
    return stats


def parse(argv: list[str] | None = None) -> LoadConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleet", required=True, help="the SuperLink's Fleet API (host:port)")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--nodes-per-channel", type=int, default=20)
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="seconds")
    parser.add_argument("--wait", type=float, default=10.0, help="long-poll wait, seconds")
    parser.add_argument(
        "--pull-mode",
        choices=("stream", "poll"),
        default="stream",
        help="stream: one Connect stream per node (the SuperNode's default); poll: long polls",
    )
    parser.add_argument(
        "--ack-delay",
        type=float,
        default=ACK_DELAY,
        help="seconds an acknowledgement waits to go up with the reply (0: at once)",
    )
    parser.add_argument("--register-concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, then stop")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--stats-file", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="of the heartbeats' spread")
    args = parser.parse_args(argv)
    for name in ("nodes", "nodes_per_channel", "register_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return LoadConfig(**vars(args))


def main() -> None:
    config = parse()
    collector = SurvivorFreezer()  # as the SuperLink: no second-long pauses of our own
    collector.start()
    stats = asyncio.run(generate(config))
    collector.stop()
    write_ready_file(config.stats_file, stats.to_json(time.process_time()))


if __name__ == "__main__":
    main()
