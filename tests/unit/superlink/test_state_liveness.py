"""Heartbeats kept in memory (`Liveness`, SQLite): answers come from memory, the database gets
them in batches, and nothing that reads them there, nor a reopened state, sees stale ones."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corolla.superlink.state import HEARTBEAT_PATIENCE, SqliteLinkState, _liveness
from corolla.superlink.state._liveness import FLUSH_INTERVAL, Beat, Liveness


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_heartbeats_are_batched_by_the_ticker() -> None:
    ticker = Ticker()
    liveness = Liveness([(1, Beat(5.0, 10.0, 0.0))], ticker=ticker)
    assert liveness.beat(1, Beat(5.0, 20.0, 7.0))
    assert not liveness.beat(2, Beat(5.0, 20.0, 7.0))  # never registered
    assert liveness.online(1, now=15.0) and not liveness.online(2, now=15.0)
    assert not liveness.due()  # too soon for a batch
    ticker.now += FLUSH_INTERVAL
    assert liveness.due()
    assert liveness.take() == [(1, Beat(5.0, 20.0, 7.0))]
    assert not liveness.due() and liveness.take() == []
    liveness.forget(1)
    assert liveness.online_ids(now=0.0) == []


def test_one_caller_claims_a_due_batch() -> None:
    ticker = Ticker()
    liveness = Liveness([(1, Beat(5.0, 10.0, 0.0))], ticker=ticker)
    liveness.beat(1, Beat(5.0, 20.0, 7.0))
    assert not liveness.claim()  # not due yet
    ticker.now += FLUSH_INTERVAL
    assert liveness.claim()
    assert not liveness.claim() and not liveness.due()  # the others beat in memory only
    liveness.unclaim()  # its write failed: the next caller claims it
    assert liveness.claim()
    assert liveness.take() == [(1, Beat(5.0, 20.0, 7.0))]
    liveness.beat(1, Beat(5.0, 30.0, 8.0))
    assert not liveness.claim()  # a new batch, due an interval after the last
    ticker.now += FLUSH_INTERVAL
    assert liveness.claim()


def test_heartbeats_taken_without_blocking_reach_the_database_when_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_liveness, "FLUSH_INTERVAL", 0.0)  # due as soon as one is unwritten
    now = [1000.0]
    database = tmp_path / "state.db"
    state = SqliteLinkState(database, clock=lambda: now[0])
    try:
        node_id = state.create_node(5.0)
        now[0] += 20
        assert state.heartbeat_nowait(node_id, 5.0)  # in memory, a batch due or not
        assert state.heartbeat_nowait(node_id, 5.0)
        assert row(database, node_id) == (1000.0 + 5 * HEARTBEAT_PATIENCE, 1000.0)  # not yet
        state.write_heartbeats()
        assert row(database, node_id) == (1020.0 + 5 * HEARTBEAT_PATIENCE, 1020.0)
    finally:
        state.close()


def row(database: Path, node_id: int) -> tuple[float, float]:
    with sqlite3.connect(database) as conn:
        found = conn.execute(
            "SELECT online_until, last_seen FROM nodes WHERE node_id = ?", (node_id,)
        ).fetchone()
    return tuple(found)


def test_the_database_gets_the_last_heartbeats_before_it_is_read_and_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_liveness, "FLUSH_INTERVAL", 3600.0)  # no batch falls due by itself
    now = [1000.0]
    database = tmp_path / "state.db"
    state = SqliteLinkState(database, clock=lambda: now[0])
    node = state.create_node(10.0)
    now[0] += 50
    state.heartbeat(node, 10.0)  # in memory: the row still has the registration's
    assert row(database, node) == (1000.0 + 10 * HEARTBEAT_PATIENCE, 1000.0)
    assert state.is_online(node) and state.online_node_ids() == [node]
    (listed,) = state.list_nodes()  # reads the table: the heartbeat is written first
    assert listed.online and listed.last_seen == 1050.0
    assert row(database, node) == (1050.0 + 10 * HEARTBEAT_PATIENCE, 1050.0)
    now[0] += 5
    state.heartbeat(node, 10.0)
    state.close()  # the last ones too
    assert row(database, node) == (1055.0 + 10 * HEARTBEAT_PATIENCE, 1055.0)
    reopened = SqliteLinkState(database, clock=lambda: now[0])
    try:
        assert reopened.is_online(node)
        now[0] += 10 * HEARTBEAT_PATIENCE + 1
        assert not reopened.is_online(node)
    finally:
        reopened.close()
