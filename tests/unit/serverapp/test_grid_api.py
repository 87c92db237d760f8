"""The `Grid` contract as Flower has it: its abstract methods, `create_message` defaults
(`DEFAULT_TTL`), what `push_messages` refuses, `send_and_receive` and its timeout (on an
injected clock), and `run` (a `Run` description) on InProcessGrid and the deployment's grid."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable

import pytest

import corolla.serverapp.grid as grid_module
from corolla.clientapp import ClientApp
from corolla.common.errors import InvalidArgument
from corolla.proto.v1 import run_pb2 as rpb
from corolla.records import DEFAULT_TTL, Context, Error, ErrorCode, Message, RecordDict
from corolla.records.serde import user_config_to_proto
from corolla.runtime.grid import GrpcGrid
from corolla.serverapp import Grid
from corolla.serverapp._run import NodeInfo, Run, RunStatus, timestamp
from corolla.simulation import InProcessGrid

FLOWER_ABSTRACT = {
    "create_message",
    "get_node_ids",
    "pull_messages",
    "push_messages",
    "run",
    "send_and_receive",
    "set_run",
}


class FakeClock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(grid_module, "_monotonic", fake.monotonic)
    monkeypatch.setattr(grid_module, "_sleep", fake.sleep)
    return fake


class FlowerStyleGrid(Grid):
    """Implements exactly Flower's abstract methods. Nodes 4 and 9; a node answers from the
    ``answer_from``-th pull on, unless it is ``silent``."""

    def __init__(self, *, answer_from: int = 1, silent: Iterable[int] = ()) -> None:
        self._run = Run.create_empty(21)
        self._answer_from = answer_from
        self._silent = set(silent)
        self._pushed: dict[str, Message] = {}
        self.pulls = 0

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

    def get_node_ids(self) -> list[int]:
        return [4, 9]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        batch = grid_module.check_outgoing(messages)
        self._pushed.update((m.metadata.message_id, m) for m in batch)
        return [m.metadata.message_id for m in batch]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        if self.pulls < self._answer_from:
            return []
        replies = []
        for mid in list(message_ids):
            message = self._pushed.get(mid)
            if message is not None and message.metadata.dst_node_id not in self._silent:
                del self._pushed[mid]
                replies.append(Message(RecordDict(), reply_to=message))
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return super().send_and_receive(messages, timeout=timeout)


def to_all(grid: Grid) -> list[Message]:
    return [grid.create_message(RecordDict(), "train", n, "1") for n in grid.get_node_ids()]


# -- the abstract contract ------------------------------------------------------------------------


def test_the_abstract_methods_are_flowers() -> None:
    assert Grid.__abstractmethods__ == FLOWER_ABSTRACT


def test_a_grid_must_implement_flowers_abstract_methods() -> None:
    namespace = {k: v for k, v in vars(FlowerStyleGrid).items() if k != "set_run"}
    without_set_run = type("WithoutSetRun", (Grid,), namespace)
    with pytest.raises(TypeError, match="set_run"):
        without_set_run()


def test_signatures_are_flowers() -> None:
    create = inspect.signature(Grid.create_message).parameters
    assert [(p.name, p.default) for p in create.values()] == [
        ("self", inspect.Parameter.empty),
        ("content", inspect.Parameter.empty),
        ("message_type", inspect.Parameter.empty),
        ("dst_node_id", inspect.Parameter.empty),
        ("group_id", inspect.Parameter.empty),
        ("ttl", None),
    ]
    timeout = inspect.signature(Grid.send_and_receive).parameters["timeout"]
    assert (timeout.kind, timeout.default) == (inspect.Parameter.KEYWORD_ONLY, None)
    assert list(inspect.signature(Grid.set_run).parameters) == ["self", "run"]
    assert list(inspect.signature(Grid.get_nodes).parameters) == ["self"]
    assert isinstance(inspect.getattr_static(Grid, "run"), property)


def test_run_id_and_get_nodes_derive_from_run_and_get_node_ids() -> None:
    grid = FlowerStyleGrid()
    assert grid.run_id == 21
    grid.set_run(Run.create_empty(22))
    assert grid.run_id == 22
    assert grid.get_nodes() == [NodeInfo(node_id=4), NodeInfo(node_id=9)]


# -- create_message -------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [FlowerStyleGrid(), InProcessGrid(ClientApp(), 2, run_id=21)])
def test_create_message_defaults(grid: Grid) -> None:
    message = grid.create_message(RecordDict(), "train", 2, "round-3")
    md = message.metadata
    assert DEFAULT_TTL == 12 * 3600.0  # Flower's default: 12 hours = 43200 s
    assert md.ttl == 43200.0
    assert (md.run_id, md.dst_node_id, md.group_id, md.message_type) == (21, 2, "round-3", "train")
    assert md.message_id and md.reply_to_message_id == ""
    assert grid.create_message(RecordDict(), "query.stats", 2, "g", ttl=30).metadata.ttl == 30.0
    with pytest.raises(ValueError, match="message_type"):
        grid.create_message(RecordDict(), "fit", 2, "g")


# -- push_messages validation ---------------------------------------------------------------------


def counting_grid() -> tuple[InProcessGrid, list[int]]:
    seen: list[int] = []
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        seen.append(message.metadata.run_id)
        return Message(RecordDict(), reply_to=message)

    return InProcessGrid(app, num_nodes=2, run_id=21), seen


def broken(change: str) -> Message:
    message = Message(RecordDict(), 1, "train")
    if change == "reply":
        return Message(RecordDict(), reply_to=message)
    if change == "error":
        return Message(error=Error(ErrorCode.UNKNOWN, "x"), reply_to=message)
    md = message.metadata
    if change == "ttl":
        md.ttl = 0.0
    elif change == "type":
        md.message_type = ""
    elif change == "dst":
        md.dst_node_id = "1"  # type: ignore[assignment]
    elif change == "id":
        md.message_id = ""
    elif change == "unknown-node":
        md.dst_node_id = 99
    return message


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("reply", "a reply cannot be pushed"),
        ("error", "a reply cannot be pushed"),
        ("ttl", "ttl must be positive"),
        ("type", "message_type"),
        ("dst", "dst_node_id"),
        ("id", "no message_id"),
        ("unknown-node", "unknown destination node 99"),
    ],
)
def test_push_refuses_what_cannot_be_sent_and_sends_none_of_the_batch(
    change: str, reason: str
) -> None:
    grid, seen = counting_grid()
    good = grid.create_message(RecordDict(), "train", 2, "g")
    with pytest.raises(ValueError, match=reason) as raised:
        grid.push_messages([good, broken(change)])
    assert isinstance(raised.value, InvalidArgument)
    assert seen == []  # the valid message before it was not sent either
    assert grid.pull_messages([good.metadata.message_id]) == []


def test_push_takes_messages_only() -> None:
    grid, _ = counting_grid()
    with pytest.raises(TypeError, match="Messages"):
        grid.push_messages([RecordDict()])  # type: ignore[list-item]


def test_push_stamps_this_run_on_a_message_of_another() -> None:
    grid, seen = counting_grid()
    message = Message(RecordDict(), 1, "train")
    message.metadata.run_id = 999
    grid.push_messages([message])
    assert message.metadata.run_id == 21
    assert seen == [21]


def test_pushing_nothing_returns_no_ids() -> None:
    grid, _ = counting_grid()
    assert grid.push_messages([]) == []
    assert grid.send_and_receive([]) == []


# -- send_and_receive -----------------------------------------------------------------------------


def test_send_and_receive_without_timeout_waits_for_every_reply(clock: FakeClock) -> None:
    grid = FlowerStyleGrid(answer_from=3)
    messages = to_all(grid)
    replies = grid.send_and_receive(messages)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == sorted(
        m.metadata.message_id for m in messages
    )
    # two empty pulls, each followed by a backoff pause: 1 ms, then twice that
    assert clock.slept == pytest.approx([0.001, 0.002])


def test_send_and_receive_returns_what_came_when_the_timeout_passes(clock: FakeClock) -> None:
    grid = FlowerStyleGrid(silent={9})
    messages = to_all(grid)
    replies = grid.send_and_receive(messages, timeout=0.2)
    assert [r.metadata.reply_to_message_id for r in replies] == [messages[0].metadata.message_id]
    # pauses double from 1 ms up to 50 ms: 1+2+4+8+16+32+50+50 = 163 ms, then the 37 ms left
    assert clock.slept[:9] == pytest.approx(
        [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.037]
    )
    assert clock.now - 1000.0 == pytest.approx(0.2)


def test_a_zero_timeout_pulls_once_without_waiting(clock: FakeClock) -> None:
    grid = FlowerStyleGrid(answer_from=2)
    assert grid.send_and_receive(to_all(grid), timeout=0) == []
    assert (grid.pulls, clock.slept) == (1, [])


# -- run ------------------------------------------------------------------------------------------


def test_run_has_flowers_fields() -> None:
    assert [f.name for f in dataclasses.fields(Run)] == [
        "run_id",
        "fab_id",
        "fab_version",
        "fab_hash",
        "override_config",
        "pending_at",
        "starting_at",
        "running_at",
        "finished_at",
        "status",
        "flwr_aid",
        "federation",
    ]
    empty = Run.create_empty(4)
    assert (empty.run_id, empty.fab_id, empty.override_config) == (4, "", {})
    assert empty.status == RunStatus(status="", sub_status="", details="")


def test_run_on_an_in_process_grid() -> None:
    grid = InProcessGrid(ClientApp(), num_nodes=2, run_id=12, run_config={"lr": 0.1})
    run = grid.run
    assert (run.run_id, run.override_config) == (12, {"lr": 0.1})
    assert run.status == RunStatus(status="running", sub_status="", details="")
    assert (run.fab_id, run.fab_version, run.fab_hash) == ("", "", "")
    run.override_config["lr"] = 9.0  # a copy: the grid's stays
    assert grid.run.override_config == {"lr": 0.1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.fab_id = "x"  # type: ignore[misc]


def test_set_run_describes_the_same_run_only() -> None:
    grid = InProcessGrid(ClientApp(), num_nodes=1, run_id=12)
    grid.set_run(dataclasses.replace(Run.create_empty(12), fab_id="acme/app", fab_version="1.0"))
    assert (grid.run.fab_id, grid.run.fab_version, grid.run_id) == ("acme/app", "1.0", 12)
    with pytest.raises(ValueError, match="serves run 12, not run 13"):
        grid.set_run(Run.create_empty(13))
    with pytest.raises(TypeError, match="Run"):
        grid.set_run(12)  # type: ignore[arg-type]


class FakeStub:
    def __init__(self, run: rpb.Run) -> None:
        self.run = run
        self.calls = 0

    def GetRun(self, request: rpb.GetRunRequest, timeout: float) -> rpb.GetRunResponse:
        assert (request.run_id, request.token) == (self.run.run_id, "app-token")
        self.calls += 1
        return rpb.GetRunResponse(run=self.run)


class FakeLink:
    def __init__(self, stub: FakeStub) -> None:
        self.stub = stub

    def call(self, what: str, attempt: object) -> object:
        assert callable(attempt)
        return attempt()


def deployed_run() -> rpb.Run:
    return rpb.Run(
        run_id=33,
        fab_id="acme/digits",
        fab_version="2.1.0",
        fab_hash="ab" * 32,
        override_config=user_config_to_proto({"lr": 0.5}),
        status=rpb.RunStatus(status="running"),
        pending_at=86400.0,  # one day after the epoch
        starting_at=86400.5,
        running_at=86401.0,
        owner="alice",
        federation="local",
    )


def test_the_deployment_grid_asks_the_superlink_once() -> None:
    stub = FakeStub(deployed_run())
    grid = GrpcGrid(None, "app-token", 33, client=FakeLink(stub))  # type: ignore[arg-type]
    run = grid.run
    assert (run.run_id, run.fab_id, run.fab_version, run.fab_hash) == (
        33,
        "acme/digits",
        "2.1.0",
        "ab" * 32,
    )
    assert run.override_config == {"lr": 0.5}
    assert run.status == RunStatus(status="running", sub_status="", details="")
    assert (run.pending_at, run.starting_at, run.running_at, run.finished_at) == (
        "1970-01-02T00:00:00+00:00",
        "1970-01-02T00:00:00.500000+00:00",
        "1970-01-02T00:00:01+00:00",
        "",
    )
    assert (run.flwr_aid, run.federation) == ("alice", "local")
    assert grid.run == run and stub.calls == 1


def test_the_deployment_grid_uses_the_run_it_was_given() -> None:
    stub = FakeStub(deployed_run())
    given = dataclasses.replace(Run.create_empty(33), fab_id="acme/given")
    grid = GrpcGrid(None, "t", 33, client=FakeLink(stub), run=given)  # type: ignore[arg-type]
    assert grid.run.fab_id == "acme/given" and stub.calls == 0
    assert grid.push_messages([]) == []  # no call to the SuperLink either
    with pytest.raises(ValueError, match="a reply cannot be pushed"):
        grid.push_messages([broken("reply")])


def test_timestamps_are_iso_in_utc() -> None:
    assert timestamp(0.0) == ""
    assert timestamp(3600.25) == "1970-01-01T01:00:00.250000+00:00"
