"""Large array buffers made in the daemon's directory (`corolla.records._spool`), and handed
over by a hard link instead of a copy."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest

from corolla.common.objectfiles import file_name
from corolla.records import Array, _spool
from corolla.runtime.localobjects import LocalObjects

BIG = _spool.MIN_BYTES // 4 + 1  # float32 elements: just over the threshold


def spool_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(".spool-"))


def test_outside_a_spool_arrays_are_made_in_memory(tmp_path: Path) -> None:
    array = Array(np.ones(BIG, dtype=np.float32))
    assert _spool.file_of(array.data) is None
    assert _spool.allocate(_spool.MIN_BYTES) is None


def test_a_large_array_is_made_in_a_private_file_of_the_spool(tmp_path: Path) -> None:
    values = np.arange(BIG, dtype=np.float32)
    with _spool.using(tmp_path):
        array = Array(values)
    [path] = spool_files(tmp_path)
    assert _spool.file_of(array.data) == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == values.tobytes()
    values += 1  # the array is a copy: later edits of the source do not reach it
    np.testing.assert_array_equal(array.numpy(), np.arange(BIG, dtype=np.float32))
    assert memoryview(array.data).readonly


def test_the_file_goes_with_the_last_reference_to_the_array(tmp_path: Path) -> None:
    with _spool.using(tmp_path):
        array = Array(np.ones(BIG, dtype=np.float32))
    data = array.data
    del array
    gc.collect()
    assert spool_files(tmp_path)  # the buffer is still held
    del data
    gc.collect()
    assert spool_files(tmp_path) == []


def test_small_arrays_and_unusable_directories_stay_in_memory(tmp_path: Path) -> None:
    with _spool.using(tmp_path):
        small = Array(np.ones(16, dtype=np.float32))
    with _spool.using(tmp_path / "gone"):
        large = Array(np.ones(BIG, dtype=np.float32))
    assert _spool.file_of(small.data) is None
    assert _spool.file_of(large.data) is None
    np.testing.assert_array_equal(large.numpy(), np.ones(BIG, dtype=np.float32))
    assert spool_files(tmp_path) == []


def test_a_slice_of_a_spooled_buffer_is_not_taken_for_the_whole(tmp_path: Path) -> None:
    with _spool.using(tmp_path):
        buffer = _spool.allocate(2 * _spool.MIN_BYTES)
    assert buffer is not None
    assert _spool.file_of(buffer) is not None
    assert _spool.file_of(buffer.toreadonly()) is not None
    assert _spool.file_of(buffer[_spool.MIN_BYTES :]) is None
    assert _spool.file_of(buffer[: _spool.MIN_BYTES]) is None


def test_zeros_is_a_writable_zeroed_array_in_the_spool(tmp_path: Path) -> None:
    with _spool.using(tmp_path):
        mean = _spool.zeros((BIG,), np.dtype("<f4"))
    assert mean.flags.writeable and not mean.any()
    mean[:] = 2.0
    assert _spool.file_of(mean.reshape(-1).data.toreadonly()) is not None
    assert spool_files(tmp_path)[0].read_bytes() == mean.tobytes()
    assert not _spool.zeros((3,), np.dtype("<f4")).any()  # outside: plain memory


def test_placing_a_spooled_object_links_its_file(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon"
    daemon.mkdir()
    with _spool.using(daemon):
        spooled = Array(np.arange(BIG, dtype=np.float32))
    in_memory = Array(np.arange(BIG, dtype=np.float64))
    LocalObjects(daemon).place({spooled.data_id: spooled.data, in_memory.data_id: in_memory.data})
    linked = daemon / file_name(spooled.data_id)
    written = daemon / file_name(in_memory.data_id)
    assert os.path.samefile(linked, spool_files(daemon)[0])  # the same file, no copy
    assert linked.read_bytes() == bytes(spooled.data)
    assert written.read_bytes() == bytes(in_memory.data)
    del spooled
    gc.collect()
    assert linked.read_bytes() == np.arange(BIG, dtype=np.float32).tobytes()  # the daemon's
    assert spool_files(daemon) == []


@pytest.mark.parametrize("dtype", ["float32", "int64", "complex64"])
def test_spooled_arrays_keep_their_values(tmp_path: Path, dtype: str) -> None:
    values = (np.arange(BIG) % 97).astype(dtype).reshape(-1, 1)
    with _spool.using(tmp_path):
        array = Array(values)
    assert (array.dtype, array.shape) == (dtype, values.shape)
    np.testing.assert_array_equal(array.numpy(), values)
