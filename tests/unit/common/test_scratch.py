"""Scratch directories: private, named after their PID; a sweep removes only dead ones' dirs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from corolla.common.scratch import make_scratch, pid_alive, sweep_scratch

PREFIX = "corolla-test-scratch-"


def dead_pid() -> int:
    """The PID of a child process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_new_directory_is_private_and_carries_the_pid(tmp_path: Path) -> None:
    path = make_scratch(PREFIX, tmp_path)
    assert path.parent == tmp_path and path.is_dir()
    assert path.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_a_directory_of_a_dead_pid_is_removed_when_a_new_one_is_made(tmp_path: Path) -> None:
    pid = dead_pid()
    assert not pid_alive(pid)
    left = tmp_path / f"{PREFIX}{pid}-abc123"
    (left / "run-1").mkdir(parents=True)
    (left / "run-1" / "object").write_bytes(b"x" * 10)
    made = make_scratch(PREFIX, tmp_path)
    assert not left.exists()
    assert list(tmp_path.iterdir()) == [made]


def test_liveness_is_injectable(tmp_path: Path) -> None:
    gone = tmp_path / f"{PREFIX}4242-abc"
    kept = tmp_path / f"{PREFIX}4343-abc"
    gone.mkdir()
    kept.mkdir()
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: pid == 4343) == [gone]
    assert not gone.exists() and kept.exists()


def test_a_directory_of_a_live_pid_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / f"{PREFIX}{os.getpid()}-abc"
    mine.mkdir()
    # even if liveness says otherwise: the sweeper's own PID is alive by definition
    assert sweep_scratch(PREFIX, tmp_path) == []
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert mine.exists()


@pytest.mark.parametrize(
    "name",
    [
        "other-prefix-4242-abc",  # another prefix
        f"{PREFIX}abc123",  # the old form, no PID
        f"{PREFIX}12x-abc",  # not a number
        f"{PREFIX}4242",  # no separator after the PID
        f"{PREFIX}-abc",  # empty PID
        f"{PREFIX}0-abc",  # 0 would address the process group
        f"{PREFIX}\u0664\u0662-abc",  # non-ASCII digits
    ],
)
def test_a_name_that_does_not_parse_is_kept(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert (tmp_path / name).exists()


def test_a_plain_file_with_the_prefix_is_left_alone(tmp_path: Path) -> None:
    plain = tmp_path / f"{PREFIX}4242-abc"
    plain.write_bytes(b"not a directory")
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert plain.read_bytes() == b"not a directory"


def test_a_symlink_is_neither_removed_nor_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_bytes(b"keep")
    link = tmp_path / f"{PREFIX}4242-abc"
    link.symlink_to(target, target_is_directory=True)
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert link.is_symlink() and (target / "precious").read_bytes() == b"keep"


def test_a_directory_of_another_user_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / f"{PREFIX}4242-abc"
    theirs.mkdir()
    monkeypatch.setattr(os, "getuid", lambda: theirs.stat().st_uid + 1)
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert theirs.exists()


def test_a_missing_parent_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_scratch(PREFIX, tmp_path / "absent", alive=lambda pid: False) == []


def test_a_directory_that_cannot_be_removed_does_not_fail_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / f"{PREFIX}4242-abc").mkdir()

    def vanished(path: str) -> None:
        raise FileNotFoundError(path)  # another sweeper removed it first

    monkeypatch.setattr("corolla.common.scratch.shutil.rmtree", vanished)
    assert sweep_scratch(PREFIX, tmp_path, alive=lambda pid: False) == []
    assert make_scratch(PREFIX, tmp_path, alive=lambda pid: False).is_dir()


def test_liveness_of_real_processes() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
