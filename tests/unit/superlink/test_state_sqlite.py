"""What only the SQLite backend promises: file layout, schema versioning, WAL, hashed tokens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from corolla.common.errors import FailedPrecondition
from corolla.superlink.state import SqliteLinkState, open_state


def _new_run(state: SqliteLinkState) -> int:
    return state.create_run(
        fab_id="acme/demo", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )


def test_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    state = SqliteLinkState(path)
    try:
        _new_run(state)
    finally:
        state.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    finally:
        conn.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteLinkState(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    with pytest.raises(FailedPrecondition, match="schema version 2"):
        SqliteLinkState(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(FailedPrecondition, match="cannot open state database"):
        SqliteLinkState(path)


def test_tokens_are_not_stored_in_plain_text(tmp_path: Path) -> None:
    state = SqliteLinkState(tmp_path / "state.db")
    run_id = _new_run(state)
    tokens = [state.create_token(run_id) for _ in range(3)]
    files = [p for p in tmp_path.iterdir() if p.is_file()]  # the db, and its WAL if any
    contents = b"".join(p.read_bytes() for p in files)
    state.close()
    contents += (tmp_path / "state.db").read_bytes()  # checkpointed on close
    assert b"CREATE TABLE tokens" in contents  # we are looking at the right bytes
    for token in tokens:
        assert token.encode() not in contents
    reopened = SqliteLinkState(tmp_path / "state.db")
    try:
        assert all(reopened.run_id_for_token(token) == run_id for token in tokens)
    finally:
        reopened.close()


def test_open_state_gives_sqlite(tmp_path: Path) -> None:
    for database in [":memory:", str(tmp_path / "s.db")]:
        state = open_state(database)
        try:
            assert isinstance(state, SqliteLinkState)
            assert state.list_runs() == []
        finally:
            state.close()
