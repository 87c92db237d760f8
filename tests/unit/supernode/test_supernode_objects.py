"""The SuperNode's object files: written as they arrive, private, released, removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from corolla.common.errors import NotFound
from corolla.runtime.localobjects import LocalObjects
from corolla.supernode.objects import OBJECTS_PREFIX, NodeObjects, RunObjects


def land(objects: RunObjects, object_id: str, data: bytes) -> None:
    sink = objects.sink(object_id, len(data))
    for offset in range(0, len(data), 3):
        sink.write(memoryview(data[offset : offset + 3]))
    sink.commit()


def test_an_object_is_known_once_its_sink_commits_and_reads_back_in_chunks() -> None:
    node = NodeObjects()
    run = node.for_run(1)
    sink = run.sink("a" * 64, 5)
    sink.write(memoryview(b"hel"))
    assert "a" * 64 not in run and run.missing(["a" * 64]) == ["a" * 64]
    sink.write(memoryview(b"lo"))
    sink.commit()
    assert "a" * 64 in run and run.size("a" * 64) == 5
    assert b"".join(run.read("a" * 64, 2)) == b"hello"
    node.close()


def test_a_discarded_sink_leaves_no_file_and_no_object() -> None:
    node = NodeObjects()
    run = node.for_run(1)
    sink = run.sink("b" * 64, 4)
    sink.write(memoryview(b"ab"))
    sink.discard()
    assert run.ids() == []
    assert [p for p in node.root.rglob("*") if p.is_file()] == []
    node.close()


def test_a_released_object_stays_readable_through_a_file_opened_before() -> None:
    node = NodeObjects()
    run = node.for_run(1)
    land(run, "c" * 64, b"payload")
    opened = run.open("c" * 64)
    run.release(["c" * 64])
    with pytest.raises(NotFound):
        run.open("c" * 64)
    assert [p for p in node.root.rglob("*") if p.is_file()] == []
    assert opened.size == 7
    assert b"".join(opened.chunks(3)) == b"payload"
    assert b"".join(opened.chunks(100)) == b"payload"  # every call starts from the beginning
    opened.close()
    node.close()


def test_ids_never_name_paths_and_everything_is_private() -> None:
    node = NodeObjects()
    run = node.for_run(7)
    land(run, "../../escape", b"x")
    files = [p for p in node.root.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].parent.parent == node.root
    assert stat.S_IMODE(node.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    node.close()


def test_clearing_a_run_removes_its_directory_and_closing_removes_the_root() -> None:
    node = NodeObjects()
    one, two = node.for_run(1), node.for_run(2)
    land(one, "d" * 64, b"1")
    land(two, "d" * 64, b"1")
    one.clear()
    assert one.ids() == [] and two.ids() == ["d" * 64]
    assert sorted(p.name for p in node.root.iterdir()) == ["run-2"]
    node.close()
    assert not node.root.exists()


def test_a_file_the_runs_own_app_process_placed_is_taken_in_when_asked_for() -> None:
    node = NodeObjects()
    run = node.for_run(1)
    LocalObjects(run.directory).place({"e" * 64: b"reply bytes"})
    assert run.ids() == []  # not known until asked for
    assert run.missing(["e" * 64, "f" * 64]) == ["f" * 64]
    assert run.size("e" * 64) == 11 and b"".join(run.read("e" * 64, 4)) == b"reply bytes"
    node.close()


def test_a_new_node_sweeps_the_directory_a_killed_node_left(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its PID is now dead, as a node's killed with SIGKILL
    left = tmp_path / f"{OBJECTS_PREFIX}{child.pid}-abc123"
    (left / "run-1").mkdir(parents=True)
    node = NodeObjects(tmp_path)
    assert not left.exists()
    assert node.root.name.startswith(f"{OBJECTS_PREFIX}{os.getpid()}-")
    assert stat.S_IMODE(node.root.stat().st_mode) == 0o700
    node.close()
