"""What only the SQLite backend promises: file layout, schema versioning, WAL, hashed tokens."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from corolla.common.errors import FailedPrecondition
from corolla.superlink.state import SqliteLinkState, open_state
from corolla.superlink.state._schema import SCHEMA_VERSION


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
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        assert rows == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteLinkState(path).close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(FailedPrecondition, match=f"schema version {SCHEMA_VERSION + 1}"):
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


def test_version_1_database_is_migrated_and_keeps_its_objects(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = SqliteLinkState(path)
    run_id = _new_run(state)
    state.close()
    conn = sqlite3.connect(path)
    with conn:  # turn it back into a version-1 database holding one blob object
        conn.execute("ALTER TABLE objects DROP COLUMN in_file")
        conn.execute("UPDATE schema_version SET version = 1")
        conn.execute(
            "INSERT INTO objects (object_id, run_id, size, data) VALUES ('old', ?, 3, x'010203')",
            (run_id,),
        )
    conn.close()
    state = SqliteLinkState(path)
    try:
        assert b"".join(state.read_object("old", 2)) == b"\x01\x02\x03"
        state.store_object(run_id, "new", b"abcdef")
        assert b"".join(state.read_object("new", 4)) == b"abcdef"
    finally:
        state.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_file_database_keeps_payloads_in_files_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = SqliteLinkState(path)
    files = tmp_path / "state.db.objects"
    try:
        run_id = _new_run(state)
        payload = os.urandom(1 << 20)
        state.store_object(run_id, "model", payload)
        assert [p.stat().st_size for p in files.iterdir()] == [len(payload)]
        wal = tmp_path / "state.db-wal"
        for db_file in (path, wal):  # not copied into the database or its log
            assert payload[:4096] not in (db_file.read_bytes() if db_file.exists() else b"")
        assert b"".join(state.read_object("model", 65536)) == payload
        assert state.delete_run_objects(run_id) == 1
        assert list(files.iterdir()) == []
    finally:
        state.close()


def test_orphaned_object_files_are_removed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    state = SqliteLinkState(path)
    run_id = _new_run(state)
    state.store_object(run_id, "kept", b"k" * 10)
    state.close()
    files = tmp_path / "state.db.objects"
    (files / "left-by-a-crash").write_bytes(b"x")
    (files / ".tmp-123").write_bytes(b"half")
    state = SqliteLinkState(path)
    try:
        assert len(list(files.iterdir())) == 1
        assert b"".join(state.read_object("kept", 4)) == b"k" * 10
    finally:
        state.close()


def test_version_5_database_is_migrated_and_its_runs_have_no_federation_options(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    state = SqliteLinkState(path)
    run_id = _new_run(state)
    state.close()
    conn = sqlite3.connect(path)
    with conn:  # turn it back into a version-5 database: runs without federation options
        conn.execute("ALTER TABLE runs DROP COLUMN federation_options")
        conn.execute("UPDATE schema_version SET version = 5")
    conn.close()
    state = SqliteLinkState(path)
    try:
        assert state.get_run(run_id).federation_options == {}
        new = state.create_run(
            fab_id="acme/demo",
            fab_version="1",
            fab_hash="h",
            override_config={},
            run_config={},
            federation_options={"options.num-supernodes": 3},
        )
        assert state.get_run(new).federation_options == {"options.num-supernodes": 3}
    finally:
        state.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()
