"""FAB bounds: size, unpacked size, entries, compression ratio; and the zip bomb at submit."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corolla.common.config import UsageError
from corolla.common.errors import AppError, InvalidArgument
from corolla.fab import FabLimits, inspect_fab, install_fab
from corolla.fab.limits import ENV, GiB, KiB, MiB, parse_size
from corolla.runtime.loader import install
from corolla.superlink.config import command, parse_config
from corolla.superlink.runs import Runs, check_fab
from corolla.superlink.state import SqliteLinkState

PYPROJECT = b"""
[project]
name = "bomb"
version = "1.0.0"

[tool.flwr.app]
publisher = "acme"

[tool.flwr.app.components]
serverapp = "pkg.server_app:app"
clientapp = "pkg.server_app:app"
"""


def fab_of(files: dict[str, bytes]) -> bytes:
    """A well-formed FAB (manifest first) of ``files``; identical contents hashed once."""
    files = {"pyproject.toml": PYPROJECT, "pkg/server_app.py": b"app = 1\n", **files}
    digests: dict[int, str] = {}
    entries = []
    for path, data in sorted(files.items()):
        digest = digests.setdefault(id(data), hashlib.sha256(data).hexdigest())
        entries.append({"path": path, "sha256": digest, "size": len(data)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(".corolla/manifest.json", json.dumps({"files": entries, "version": 1}))
        for path, data in files.items():
            zf.writestr(path, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """0.55 MB that unpack to 481 MiB: 481 files of 1 MiB of zeros, each under the per-file
    ratio check's floor, all within the default unpacked limit of 1 GiB."""
    zeros = bytes(MiB)
    data = fab_of({f"data/zeros-{i:03}.bin": zeros for i in range(481)})
    assert len(data) < 600_000
    return data


def test_parse_size() -> None:
    assert parse_size("1048576") == MiB
    assert parse_size("200MiB") == parse_size("200M") == parse_size("200 mib") == 200 * MiB
    assert parse_size("1GiB") == parse_size("1G") == GiB
    assert parse_size("512KiB") == parse_size("512kb") == 512 * KiB
    for bad in ("0", "-1", "1.5GiB", "lots", "", "1TiB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_defaults_and_environment() -> None:
    limits = FabLimits()
    assert (limits.max_fab_bytes, limits.max_unpacked_bytes) == (200 * MiB, GiB)
    assert (limits.max_entries, limits.max_ratio) == (10_000, 200)
    custom = FabLimits(max_fab_bytes=5, max_unpacked_bytes=6, max_entries=7, max_ratio=8)
    assert FabLimits.from_env(custom.to_env()) == custom
    assert FabLimits.from_env({}) == limits
    assert FabLimits.from_env({"COROLLA_MAX_FAB_UNPACKED_BYTES": "2GiB"}).max_unpacked_bytes == (
        2 * GiB
    )
    with pytest.raises(InvalidArgument, match="COROLLA_MAX_FAB_ENTRIES"):
        FabLimits.from_env({"COROLLA_MAX_FAB_ENTRIES": "many"})
    with pytest.raises(InvalidArgument):
        FabLimits(max_ratio=0)


def test_the_superlink_options_are_the_limits_and_their_variables() -> None:
    options = {option.flag: option for option in command().options}
    flags = {
        "max_fab_bytes": "--max-fab-bytes",
        "max_unpacked_bytes": "--max-fab-unpacked-bytes",
        "max_entries": "--max-fab-entries",
        "max_ratio": "--max-fab-compression-ratio",
    }
    for field, flag in flags.items():
        assert options[flag].env_var == ENV[field]  # one name, read by the app processes too
        assert options[flag].default == getattr(FabLimits(), field)
    base = ["--insecure", "--database", ":memory:"]
    assert parse_config(base, environ={}).fab_limits == FabLimits()
    config = parse_config(
        [*base, "--max-fab-bytes", "10MiB", "--max-fab-unpacked-bytes", "1G"],
        environ={"COROLLA_MAX_FAB_ENTRIES": "50", "COROLLA_MAX_FAB_COMPRESSION_RATIO": "20"},
    )
    assert config.fab_limits == FabLimits(10 * MiB, GiB, 50, 20)
    with pytest.raises(UsageError, match="--max-fab-bytes"):
        parse_config([*base, "--max-fab-bytes", "big"], environ={})


@pytest.fixture
def no_writes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Every file opened for writing (and every temporary directory) while the test runs."""
    written: list[Any] = []
    real_open, real_mkdtemp = os.open, tempfile.mkdtemp

    def spy_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            written.append(path)
        return real_open(path, flags, *args, **kwargs)

    def spy_mkdtemp(*args: Any, **kwargs: Any) -> str:
        written.append(("mkdtemp", args, kwargs))
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)
    yield written


def test_a_zip_bomb_is_refused_at_submit_without_writing(bomb: bytes, no_writes: list[Any]) -> None:
    fab_hash = hashlib.sha256(bomb).hexdigest()
    state = SqliteLinkState(":memory:")
    try:
        with pytest.raises(InvalidArgument) as info:
            Runs(state).submit(bomb, fab_hash, {}, "local")
        assert state.active_runs() == []
    finally:
        state.close()
    message = str(info.value)
    assert "unpacks to 481.1 MiB" in message
    assert "over the compression-ratio limit of 200 (zip bomb?)" in message
    assert no_writes == []


def test_the_unpacked_size_is_bounded_when_the_ratio_is_not(
    bomb: bytes, no_writes: list[Any]
) -> None:
    limits = FabLimits(max_ratio=10_000, max_unpacked_bytes=100 * MiB)
    with pytest.raises(InvalidArgument, match=r"more than the limit of 100\.0 MiB"):
        check_fab(bomb, hashlib.sha256(bomb).hexdigest(), limits)
    assert no_writes == []


def test_a_good_fab_is_checked_without_writing(no_writes: list[Any]) -> None:
    data = fab_of({"data/random.bin": os.urandom(2 * MiB)})
    assert check_fab(data, hashlib.sha256(data).hexdigest()).name == "bomb"
    assert inspect_fab(data).publisher == "acme"
    assert no_writes == []


def test_the_runs_use_the_superlink_limits(bomb: bytes) -> None:
    data = fab_of({})
    state = SqliteLinkState(":memory:")
    try:
        with pytest.raises(InvalidArgument, match="more than the limit of 100 bytes"):
            Runs(state, fab_limits=FabLimits(max_fab_bytes=100)).submit(
                data, hashlib.sha256(data).hexdigest(), {}, "local"
            )
    finally:
        state.close()


def test_installs_bound_what_they_write(bomb: bytes, tmp_path: Path) -> None:
    fab_hash = hashlib.sha256(bomb).hexdigest()
    with pytest.raises(InvalidArgument, match="compression-ratio"):
        install_fab(bomb, fab_hash, tmp_path / "apps")
    assert not (tmp_path / "apps").exists()  # refused on the headers: not even a directory


def test_app_processes_install_with_the_limits_of_their_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fab_of({})
    monkeypatch.setenv("COROLLA_MAX_FAB_ENTRIES", "2")
    with pytest.raises(AppError, match="more than the limit of 2"):
        install(data, hashlib.sha256(data).hexdigest(), tmp_path / "apps")
