"""The state's files are private whatever the umask, and ids the database cannot hold (SQLite
or PostgreSQL) are invalid arguments (not internal errors)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_server import database_for

from corolla.common.errors import InvalidArgument
from corolla.superlink.state import LinkState, SqliteLinkState, StoredMessage
from corolla.superlink.state.postgres import PostgresLinkState

pytestmark = pytest.mark.timeout(60)

# Run with umask 0 in a child: the test process's own umask stays as it is.
_MAKE_STATE = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from corolla.superlink.state import SqliteLinkState

    database = Path(sys.argv[1])
    state = SqliteLinkState(database)
    run_id = state.create_run(
        fab_id="a/b", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )
    state.store_object(run_id, "model", b"w" * 1000)
    sink = state.open_object(run_id, "coming", 10)
    sink.write(memoryview(b"12345"))
    state.append_logs(run_id, ["hello"])
    paths = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    objects = Path(f"{database}.objects")
    paths += [objects, *objects.iterdir()]
    print(json.dumps({p.name: os.stat(p).st_mode for p in paths if p.exists()}))
    sink.discard()
    state.close()
    """
)


def test_state_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    done = subprocess.run(
        [sys.executable, "-c", _MAKE_STATE, str(database)],
        capture_output=True,
        text=True,
        timeout=30,
        umask=0,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modes: dict[str, int] = json.loads(done.stdout)
    names = set(modes)
    assert {"state.db", "state.db-wal", "state.db-shm", "state.db.objects"} <= names
    assert any(name.startswith(".tmp-") for name in names)  # an object being received
    assert len(names) == 6  # and the stored one
    for name, mode in modes.items():
        expected = 0o700 if stat.S_ISDIR(mode) else 0o600
        assert stat.S_IMODE(mode) == expected, f"{name}: {oct(mode)}"
    (tmp_path / "loose.db").touch(mode=0o644)  # made before: tightened on open
    SqliteLinkState(tmp_path / "loose.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "loose.db").st_mode) == 0o600


HUGE = 2**64 - 1


def _message(run_id: int, dst: int) -> StoredMessage:
    return StoredMessage("m1", run_id, 0, dst, "", "train", 1.0, 60.0, b"")


CALLS: dict[str, Callable[[LinkState, int, int], object]] = {
    "get_run(huge)": lambda s, run, node: s.get_run(HUGE),
    "update_run_status(huge)": lambda s, run, node: s.update_run_status(HUGE, "starting"),
    "append_logs(huge)": lambda s, run, node: s.append_logs(HUGE, ["x"]),
    "get_logs(huge)": lambda s, run, node: s.get_logs(HUGE),
    "get_logs(after=huge)": lambda s, run, node: s.get_logs(run, after=HUGE),
    "store_object(huge)": lambda s, run, node: s.store_object(HUGE, "o", b"x"),
    "open_object(huge)": lambda s, run, node: s.open_object(HUGE, "o", 1),
    "delete_run_objects(huge)": lambda s, run, node: s.delete_run_objects(HUGE),
    "create_token(huge)": lambda s, run, node: s.create_token(HUGE),
    "create_node(requested=huge)": lambda s, run, node: s.create_node(10.0, HUGE),
    "heartbeat(huge)": lambda s, run, node: s.heartbeat(HUGE, 10.0),
    "delete_node(huge)": lambda s, run, node: s.delete_node(HUGE),
    "pull_instructions(huge)": lambda s, run, node: s.pull_instructions(HUGE, 1),
    "store_instructions(run huge)": lambda s, run, node: s.store_instructions(
        [_message(HUGE, node)]
    ),
}


@pytest.fixture(params=["sqlite", "postgres"])
def any_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LinkState]:
    if request.param == "sqlite":
        state: LinkState = SqliteLinkState(":memory:")
    else:
        state = PostgresLinkState(database_for(tmp_path), tmp_path / "objects")
    yield state
    state.close()


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_id_out_of_range_is_an_invalid_argument(any_state: LinkState, call: str) -> None:
    state = any_state
    run_id = state.create_run(
        fab_id="a/b", fab_version="1", fab_hash="h", override_config={}, run_config={}
    )
    node_id = state.create_node(10.0)
    with pytest.raises(InvalidArgument, match=r"out of range|not in \["):
        CALLS[call](state, run_id, node_id)
    assert state.get_run(run_id).run_id == run_id  # the state still works
