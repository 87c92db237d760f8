"""The SuperLink's state behind one interface. Every backend passes `tests/.../state_contract`."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corolla.common.errors import CorollaError, FailedPrecondition, InvalidArgument
from corolla.common.objects import ObjectSink
from corolla.records.context import UserConfig

Clock = Callable[[], float]
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class StateLimits:
    """Bounds on what clients can make the SuperLink keep, per object and per run.

    Each is a ``flower-superlink`` flag. The object bounds are checked on an object's first
    frame, against the size it declares, before any of its data is written."""

    max_object_bytes: int = 16 * GiB  # one object: --max-object-bytes
    max_run_object_bytes: int = 64 * GiB  # a run's objects together: --max-run-object-bytes
    max_run_log_bytes: int = 32 * MiB  # a run's log (oldest lines go first): --max-run-log-bytes
    log_batch_bytes: int = 1 * MiB  # one `LinkState.get_logs` answer (one StreamLogs response)
    max_audit_events: int = 100_000  # audit trail rows kept (the oldest go first)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a positive integer, not {value!r}")


def describe_bytes(count: int) -> str:
    """``512 bytes``, ``5.1 MiB``, ``32 MiB``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


class RunStatus:
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"


class SubStatus:
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class IllegalTransition(FailedPrecondition):
    """A run status change the lifecycle does not allow (e.g. a stop racing a finish)."""


# The run lifecycle: every status change any backend accepts. ``finished`` is final; going back
# to ``pending`` re-queues a run whose ServerApp process was lost or interrupted (it resumes).
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.PENDING: frozenset({RunStatus.STARTING, RunStatus.FINISHED}),
    RunStatus.STARTING: frozenset({RunStatus.RUNNING, RunStatus.PENDING, RunStatus.FINISHED}),
    RunStatus.RUNNING: frozenset({RunStatus.PENDING, RunStatus.FINISHED}),
    RunStatus.FINISHED: frozenset(),
}


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    fab_id: str  # "publisher/name"
    fab_version: str
    fab_hash: str
    override_config: UserConfig
    run_config: UserConfig
    federation: str
    owner: str
    status: str
    sub_status: str  # "" until finished
    details: str  # human-readable reason for failed/stopped
    pending_at: float
    starting_at: float  # 0.0 until reached
    running_at: float
    finished_at: float
    federation_options: UserConfig = field(default_factory=dict)  # num-supernodes: simulation


@dataclass(frozen=True)
class NodeRecord:
    node_id: int
    fingerprint: str  # "" for a node registered without a key (SuperNode auth off)
    registered_at: float
    online: bool
    last_seen: float  # 0.0 if never seen


@dataclass(frozen=True)
class AuditEvent:
    """One Exec call as the audit trail keeps it: who, what, which run, allowed or why not."""

    at: float
    user: str  # "" when the call carried no valid credential
    action: str  # the Exec method: "StartRun", "StopRun", ...
    run_id: int = 0  # 0 when the call concerns no one run
    allowed: bool = True
    reason: str = ""  # why it was refused
    peer: str = ""
    event_id: int = 0  # set by the state


@dataclass(frozen=True)
class StoredMessage:
    """A message as the SuperLink keeps it: routing columns plus the encoded protobuf."""

    message_id: str
    run_id: int
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str  # "" for instructions (ServerApp -> node)
    message_type: str
    created_at: float
    ttl: float
    payload: bytes  # serialized corolla.proto.v1.Message
    object_ids: tuple[str, ...] = ()  # large-array objects the payload references


class LinkState(ABC):
    """Runs, nodes, messages, objects, FABs, contexts, logs and app tokens of one SuperLink.

    Thread-safe. Waits (``wait=`` arguments) block until data exists or the time is up; every
    write that can satisfy a waiter wakes it. Unknown ids raise `NotFound`; invalid input raises
    `InvalidArgument` (an id out of the 64-bit signed range too); an illegal status transition
    raises `FailedPrecondition`. What clients can make it store is bounded by ``limits``.
    """

    clock: Clock = time.time
    limits: StateLimits = StateLimits()

    # -- runs ----------------------------------------------------------------------------------

    @property
    def object_directory(self) -> Path | None:
        """Where stored objects are files (named by the sha256 hex of their id, complete and
        checked), if they are; None for a backend that keeps them elsewhere."""
        return None

    def staging_directory(self, run_id: int, *, create: bool = False) -> Path | None:
        """A private directory (made if ``create``, removed when the run finishes) where the
        run's own app process may put objects for `adopt_file`; None if there is none, or
        for a backend that cannot take files in."""
        return None

    def adopt_file(self, run_id: int, object_id: str, path: Path) -> None:
        """Store the object whose bytes are the file at ``path`` (a complete file, checked
        here against the id: `InvalidArgument` if it does not match), with `open_object`'s
        checks; the file is moved into the store, or deleted. `NotFound` without the file."""
        raise FailedPrecondition("this state takes no files in: push the object")

    @abstractmethod
    def create_run(
        self,
        *,
        fab_id: str,
        fab_version: str,
        fab_hash: str,
        override_config: UserConfig,
        run_config: UserConfig,
        federation: str = "",
        owner: str = "",
        federation_options: UserConfig | None = None,
    ) -> int:
        """A new run in status ``pending``; returns its id (random, positive, < 2**63)."""

    @abstractmethod
    def get_run(self, run_id: int) -> RunRecord: ...

    @abstractmethod
    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""

    @abstractmethod
    def active_runs(self) -> list[RunRecord]:
        """Runs not finished, oldest first (cheap however many finished runs are stored)."""

    @abstractmethod
    def update_run_status(
        self,
        run_id: int,
        status: str,
        sub_status: str = "",
        details: str = "",
        *,
        expected: str | None = None,
    ) -> RunRecord:
        """Change a run's status along `TRANSITIONS` (anything else: `IllegalTransition`).
        ``finished`` needs a sub_status. With ``expected``, the change happens only if the run
        is still in that status (else `IllegalTransition`). Sets the matching timestamp from
        ``clock``; going back to ``pending`` clears the later timestamps and voids the run's
        app tokens."""

    @abstractmethod
    def annotate_run(self, run_id: int, details: str) -> RunRecord:
        """Set the human-readable ``details`` of an unfinished run without changing its status
        (e.g. why it is still pending). A finished run's details never change
        (`FailedPrecondition`)."""

    @abstractmethod
    def wait_for_status_change(self, run_id: int, known: str, wait: float) -> RunRecord:
        """Return the run once its status differs from ``known`` or after ``wait`` seconds."""

    # -- FABs ----------------------------------------------------------------------------------
    @abstractmethod
    def store_fab(self, fab_hash: str, content: bytes) -> None:
        """Idempotent."""

    @abstractmethod
    def get_fab(self, fab_hash: str) -> bytes: ...

    # -- nodes ---------------------------------------------------------------------------------
    @abstractmethod
    def create_node(self, heartbeat_interval: float, requested_node_id: int = 0) -> int:
        """Register a node (online now). A nonzero ``requested_node_id`` re-registers that id."""

    @abstractmethod
    def delete_node(self, node_id: int) -> None: ...

    @abstractmethod
    def heartbeat(self, node_id: int, heartbeat_interval: float) -> None:
        """Mark the node online until ``now + heartbeat_interval * HEARTBEAT_PATIENCE``."""

    def heartbeat_nowait(self, node_id: int, heartbeat_interval: float) -> bool:
        """`heartbeat`, if the backend can take it without blocking (callable on an event
        loop): True once taken; False if `heartbeat` must be called instead (nothing done).
        A caller whose heartbeats are taken so calls `write_heartbeats` now and then."""
        return False

    def write_heartbeats(self) -> None:
        """Write to the database the heartbeats `heartbeat_nowait` took, if a batch of them is
        due (blocking; a few times a second at most is enough)."""
        return None  # by default it takes none

    @abstractmethod
    def online_node_ids(self) -> list[int]:
        """Nodes whose heartbeat has not run out (by ``clock``), sorted."""

    @abstractmethod
    def is_online(self, node_id: int) -> bool:
        """True if the node is registered and its heartbeat has not run out (by ``clock``);
        its cost does not grow with the number of nodes."""

    @abstractmethod
    def register_node_key(self, public_key: bytes, fingerprint: str) -> int:
        """Put a SuperNode public key (DER) on the allow-list, bound to a new node id, which is
        returned. `AlreadyExists` if the key is registered already."""

    @abstractmethod
    def unregister_node(self, node_id: int) -> None:
        """Remove a node's key from the allow-list and the node itself (`NotFound` if neither
        exists); its pending instructions are then lost (`NODE_UNAVAILABLE` replies)."""

    @abstractmethod
    def node_key(self, fingerprint: str) -> tuple[int, bytes]:
        """``(node_id, public_key)`` registered under ``fingerprint``; `NotFound` if none."""

    @abstractmethod
    def list_nodes(self) -> list[NodeRecord]:
        """Registered keys (with their node, online or not) and key-less nodes, by id."""

    @abstractmethod
    def node_serves_run(self, node_id: int, run_id: int) -> bool:
        """True once an instruction of the run was addressed to the node."""

    @abstractmethod
    def node_object_ids(self, node_id: int, run_id: int, object_ids: list[str]) -> set[str]:
        """Those of ``object_ids`` referenced by stored instructions of the run to the node."""

    @abstractmethod
    def run_object_ids(self, run_id: int, object_ids: list[str]) -> set[str]:
        """Those of ``object_ids`` the run stored or references."""

    # -- messages ------------------------------------------------------------------------------
    @abstractmethod
    def store_instructions(self, messages: list[StoredMessage]) -> None:
        """ServerApp -> nodes. Each ``dst_node_id`` must be a registered node (else
        InvalidArgument, nothing stored) and every object a message references must be stored
        (else FailedPrecondition). Storing a message again (same id, same content: a retried
        call) is a no-op; the same id with other content is refused."""

    @abstractmethod
    def pull_instructions(self, node_id: int, limit: int, wait: float = 0.0) -> list[StoredMessage]:
        """Up to ``limit`` unexpired instructions for the node that it has neither acknowledged
        (`ack_instructions`) nor answered, oldest first; they count as delivered from then on
        (a reply may answer them). A pull consumes nothing: an instruction comes again with
        every later pull until the node acknowledges or answers it, so an answer that never
        reached the node loses no instruction. Waits up to ``wait`` seconds for the first."""

    def ended_runs(self, run_ids: list[int]) -> list[int] | None:
        """Those of ``run_ids`` that are finished or unknown, if the backend can tell without
        blocking (callable on an event loop); None if it cannot."""
        return None

    def may_have_instructions(self, node_id: int) -> bool:
        """False only if a pull for the node would return nothing now. Never blocks (callable
        on an event loop); a backend that cannot tell cheaply says True."""
        return True

    @abstractmethod
    def take_instructions(
        self, pulls: Mapping[int, Sequence[str]], limit: int
    ) -> dict[int, list[StoredMessage]]:
        """Many nodes' pulls at once, in one transaction (the nodes woken together): for each
        node of ``pulls``, acknowledges its ids (`ack_instructions`), then its instructions as
        `pull_instructions` gives them. A node that is not registered is left out."""

    @abstractmethod
    def ack_instructions(self, node_id: int, message_ids: list[str]) -> None:
        """The node has these delivered instructions: later pulls leave them out. Ids of other
        nodes' instructions, undelivered, answered or unknown ones are ignored (an ack may come
        late, or twice)."""

    @abstractmethod
    def store_replies(self, node_id: int, replies: list[StoredMessage]) -> None:
        """Node -> ServerApp. Each reply's ``reply_to_message_id`` must name an instruction
        delivered to this node and not yet answered (else InvalidArgument/NotFound). Idempotent
        by message id: a reply stored already (same id, same content: a retried push), also one
        the ServerApp has acknowledged since, is not stored again; the same id with other
        content is refused (`AlreadyExists`), all of the call's replies with it."""

    @abstractmethod
    def store_replies_many(
        self, pushes: Sequence[tuple[int, list[StoredMessage]]]
    ) -> list[CorollaError | None]:
        """Many nodes' `store_replies` (``(node_id, replies)`` each) in one transaction, each
        on its own: per push, None if stored, or the error `store_replies` would raise (that
        push stores nothing; the others are not affected)."""

    @abstractmethod
    def pull_replies(
        self, run_id: int, message_ids: list[str], wait: float = 0.0
    ) -> list[StoredMessage]:
        """Replies to the given instruction ids that exist now. They stay stored (a caller
        whose answer was lost gets them again) until `ack_replies`. Waits up to ``wait``
        seconds for the first."""

    @abstractmethod
    def ack_replies(self, run_id: int, reply_ids: list[str]) -> None:
        """The ServerApp has these replies: delete them with their instructions, and the
        objects no other message of the run, nor its checkpoint, references (the run stops
        using them; those no other run uses are deleted). So a run keeps the objects of the
        rounds in flight, not of every round it ran."""

    @abstractmethod
    def lost_instructions(self, run_id: int, message_ids: list[str]) -> list[StoredMessage]:
        """Instructions among ``message_ids`` that will never be answered: their node is offline
        or their TTL ran out. They are removed, so each is reported once (their objects as
        with `ack_replies`)."""

    @abstractmethod
    def wake_all(self) -> None:
        """Wake every waiter (used on shutdown and when a run ends)."""

    @abstractmethod
    def add_listener(self, listener: Callable[[Hashable], None]) -> None:
        """Call ``listener(key)`` after every change a wait could be waiting for, from the
        thread that made it: ``("node", node_id)`` (instructions stored for the node, or the
        node removed), ``("replies", run_id)``, ``("run", run_id)``, and ``"all"`` from
        `wake_all`. For waiters that are not threads (coroutines); a listener must be quick
        and never block, nor call the state."""

    # -- objects (large array payloads, content-addressed) --------------------------------------
    @abstractmethod
    def open_object(self, run_id: int, object_id: str, size: int) -> ObjectSink[None]:
        """Begin storing an object of ``size`` bytes for the run, its data to come in pieces.

        Checked before any data: the run exists (`NotFound`) and is not finished
        (`FailedPrecondition`); ``size`` is within ``limits.max_object_bytes`` and the run's
        stored objects, with those being pushed, stay within ``limits.max_run_object_bytes``
        (`ResourceExhausted`). ``write`` the data, then ``commit`` (the object is readable from
        then on; `FailedPrecondition` if the run finished meanwhile) or ``discard`` (nothing is
        left behind). The backend holds no whole object in memory unless it keeps objects in
        memory anyway. An object that exists already is not stored again (its data is
        ignored); ``commit`` then only records that the run uses it. The caller verifies the
        id against the data."""

    @abstractmethod
    def store_object(self, run_id: int, object_id: str, data: bytes | memoryview) -> None:
        """`open_object`, ``write`` and ``commit`` in one call (same checks). Idempotent:
        storing an id that exists is a no-op. The caller has verified the id."""

    @abstractmethod
    def missing_objects(self, object_ids: list[str]) -> list[str]: ...

    @abstractmethod
    def object_size(self, object_id: str) -> int: ...

    @abstractmethod
    def read_object(self, object_id: str, chunk_size: int) -> Iterator[bytes]:
        """The object's bytes in chunks, without loading it whole into memory."""

    @abstractmethod
    def delete_run_objects(self, run_id: int) -> int:
        """Delete the objects the run stored or referenced that no other run uses; returns how
        many. Finishing a run does this by itself, and opening a durable state does it for the
        runs that finished before (a crash in between); an unfinished run's objects (its
        checkpoint's too) stay."""

    # -- contexts, logs, tokens ----------------------------------------------------------------
    @abstractmethod
    def set_context(self, run_id: int, context: bytes) -> None:
        """The ServerApp's encoded Context (corolla.proto.v1.Context) for the run."""

    @abstractmethod
    def get_context(self, run_id: int) -> bytes | None: ...

    @abstractmethod
    def append_logs(self, run_id: int, lines: list[str]) -> None:
        """Add lines after the run's last. Once the run's lines take more than
        ``limits.max_run_log_bytes`` (UTF-8), the oldest are dropped and one marker line
        (``[corolla] N earlier log lines (...) dropped: ...``) stands at the index of the last
        dropped line, so readers keep their place: one past the dropped lines goes on, one
        before them reads the marker next. A line that is not valid text: `InvalidArgument`.
        The cost of an append does not grow with the log."""

    @abstractmethod
    def get_logs(
        self, run_id: int, after: int = 0, max_bytes: int | None = None
    ) -> tuple[list[str], int]:
        """Lines with index >= ``after``, oldest first, as many as fit in ``max_bytes``
        (default ``limits.log_batch_bytes``; one line at least, however long), and the index
        to continue from. No lines: the reader has them all, for now."""

    @abstractmethod
    def set_checkpoint(
        self, run_id: int, server_round: int, payload: bytes, object_ids: list[str]
    ) -> None:
        """Keep the run's checkpoint (replacing the last one); its objects must be stored.
        The replaced checkpoint's objects go as with `ack_replies`."""

    @abstractmethod
    def get_checkpoint(self, run_id: int) -> tuple[int, bytes] | None:
        """``(server_round, payload)`` of the run's last checkpoint, or None."""

    @abstractmethod
    def create_token(self, run_id: int) -> str:
        """A new secret token for an app process of the run (urlsafe, 32 random bytes)."""

    @abstractmethod
    def run_id_for_token(self, token: str) -> int:
        """The run a token belongs to; `Unauthenticated` for an unknown token."""

    # -- audit trail ---------------------------------------------------------------------------
    @abstractmethod
    def record_audit(self, event: AuditEvent) -> None:
        """Append ``event``; beyond ``limits.max_audit_events`` the oldest events go."""

    @abstractmethod
    def list_audit(
        self, *, user: str = "", run_id: int = 0, since: float = 0.0, limit: int = 100
    ) -> list[AuditEvent]:
        """Events newest first, filtered by user, run and time (``""``/``0``: any)."""

    @abstractmethod
    def close(self) -> None: ...


HEARTBEAT_PATIENCE = 2.5  # a node is offline after missing this many heartbeat intervals
