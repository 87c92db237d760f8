"""What only the PostgreSQL state has (the contract suite covers the rest): several states (as
several SuperLinks would) on one database and one object directory, its schema version, its
pool, and how it reports a server it cannot use."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgres_server import database_for

from corolla.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from corolla.common.objectfiles import file_name
from corolla.superlink.state import RunStatus, StoredMessage, SubStatus, open_state
from corolla.superlink.state.postgres import PostgresLinkState, describe

pytestmark = pytest.mark.timeout(60)
INTERVAL = 10.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    return database_for(tmp_path)


@pytest.fixture
def opened(url: str, tmp_path: Path) -> Iterator[list[PostgresLinkState]]:
    """States opened by a test (``opened.append``), closed after it."""
    states: list[PostgresLinkState] = []
    yield states
    for state in states:
        state.close()


def new_run(state: PostgresLinkState) -> int:
    return state.create_run(
        fab_id="a/b", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )


def instruction(run_id: int, node_id: int) -> StoredMessage:
    return StoredMessage(uuid.uuid4().hex, run_id, 0, node_id, "", "train", time.time(), 60, b"")


def reply(msg: StoredMessage) -> StoredMessage:
    return StoredMessage(
        uuid.uuid4().hex,
        msg.run_id,
        msg.dst_node_id,
        0,
        msg.message_id,
        "train",
        time.time(),
        60,
        b"",
    )


def test_two_states_on_one_database_share_it(
    url: str, tmp_path: Path, opened: list[PostgresLinkState]
) -> None:
    one = PostgresLinkState(url, tmp_path / "objects")
    other = PostgresLinkState(url, tmp_path / "objects")
    opened += [one, other]
    run_id, node = new_run(one), other.create_node(INTERVAL)
    one.store_object(run_id, "model", b"weights")
    assert b"".join(other.read_object("model", 3)) == b"weights"  # the file, the row
    msg = instruction(run_id, node)
    one.store_instructions([msg])
    assert other.pull_instructions(node, limit=5) == [msg]
    results: list[object] = []
    barrier = threading.Barrier(2)

    def answer(state: PostgresLinkState) -> None:
        barrier.wait(timeout=10)
        try:
            state.store_replies(node, [reply(msg)])
            results.append("stored")
        except InvalidArgument:
            results.append("refused")

    threads = [threading.Thread(target=answer, args=(state,)) for state in (one, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(results) == ["refused", "stored"]  # the database decides, not a lock of ours
    assert len(one.pull_replies(run_id, [msg.message_id])) == 1


def test_a_newer_schema_is_refused(url: str, tmp_path: Path) -> None:
    PostgresLinkState(url, tmp_path / "objects").close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(FailedPrecondition, match="schema version 99, newer"):
        PostgresLinkState(url, tmp_path / "objects")


def test_a_server_it_cannot_reach_is_unavailable_and_no_password_shows(tmp_path: Path) -> None:
    url = f"postgresql://corolla:s3cret@/state?host={tmp_path / 'no-server'}&connect_timeout=2"
    with pytest.raises(Unavailable, match=r"state database postgresql://corolla@.*/state") as err:
        PostgresLinkState(url, tmp_path / "objects")
    assert "s3cret" not in str(err.value)
    assert "s3cret" not in describe(url)
    with pytest.raises(InvalidArgument, match="not a PostgreSQL connection URL"):
        describe("postgresql://host/db?no_such_option=1")


def test_waits_hold_no_connection(
    url: str, tmp_path: Path, opened: list[PostgresLinkState]
) -> None:
    state = PostgresLinkState(url, tmp_path / "objects", pool_size=2)
    opened.append(state)
    run_id, nodes = new_run(state), [state.create_node(INTERVAL) for _ in range(6)]
    got: list[list[StoredMessage]] = []
    waiters = [
        threading.Thread(target=lambda n=n: got.append(state.pull_instructions(n, 5, wait=10)))
        for n in nodes
    ]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)  # six waiters, two connections: the waits hold none of them
    start = time.monotonic()
    assert state.get_run(run_id).status == RunStatus.PENDING
    state.store_instructions([instruction(run_id, n) for n in nodes])
    for waiter in waiters:
        waiter.join(timeout=5)
    assert time.monotonic() - start < 3
    assert sorted(len(batch) for batch in got) == [1] * 6


def test_a_shared_object_directory_keeps_what_others_may_be_writing(
    url: str, tmp_path: Path, opened: list[PostgresLinkState]
) -> None:
    objects = tmp_path / "objects"
    first = PostgresLinkState(url, objects)
    opened.append(first)
    active, done = new_run(first), new_run(first)
    first.update_run_status(done, RunStatus.FINISHED, SubStatus.COMPLETED)
    staged = first.staging_directory(active, create=True)
    assert staged is not None
    (objects.with_name("objects.staging") / f"run-{done}").mkdir()  # left by a crash
    coming, left = objects / file_name("coming"), objects / file_name("left-over")
    coming.write_bytes(b"another SuperLink's object, its row not yet committed")
    left.write_bytes(b"a crash's")
    old = time.time() - 7200
    os.utime(left, (old, old))
    opened.append(PostgresLinkState(url, objects))  # a second SuperLink starts
    assert coming.exists() and not left.exists()
    assert staged.is_dir() and not (staged.parent / f"run-{done}").exists()


def test_open_state_picks_the_backend_by_the_database(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = open_state(url, object_dir=tmp_path / "objects")
    try:
        assert isinstance(state, PostgresLinkState)
    finally:
        state.close()
    with pytest.raises(InvalidArgument, match="directory for its objects"):
        open_state(url)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FailedPrecondition, match=r"pip install 'corolla\[postgres\]'"):
        open_state(url, object_dir=tmp_path / "objects")
