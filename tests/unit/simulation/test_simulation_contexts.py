"""`ContextStore`: contexts of many nodes as encoded bytes on disk, removed on close."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corolla.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from corolla.common.errors import FailedPrecondition
from corolla.simulation.contexts import (
    SCRATCH_PREFIX,
    ContextStore,
    context_from_bytes,
    context_to_bytes,
)

pytestmark = pytest.mark.timeout(60)


def context(node_id: int) -> Context:
    return Context(
        run_id=3,
        node_id=node_id,
        node_config={"partition-id": node_id - 1, "num-partitions": 10_000},
        state=RecordDict(
            {
                "counter": ConfigRecord({"n": node_id % 7}),
                "model": ArrayRecord({"w": np.full(4, node_id, dtype=np.float32)}),
                "m": MetricRecord({"loss": 1.0 / node_id}),
            }
        ),
        run_config={"lr": 0.1},
    )


def test_ten_thousand_contexts_round_trip(tmp_path: Path) -> None:
    with ContextStore(tmp_path) as store:
        store.put_many([(n, context_to_bytes(context(n))) for n in range(1, 10_001)])
        store.put(5, context_to_bytes(context(50)))  # replaces
        assert len(store) == 10_000
        for node_id in (1, 2, 777, 9_999, 10_000):
            data = store.get(node_id)
            assert data is not None
            assert context_from_bytes(data) == context(node_id)
        assert context_from_bytes(store.get(5) or b"") == context(50)
        assert store.get(10_001) is None


def test_large_arrays_stay_inside_the_encoding(tmp_path: Path) -> None:
    big = Context(run_id=1, node_id=1, state=RecordDict({"a": ArrayRecord({"w": np.ones(70_000)})}))
    assert context_from_bytes(context_to_bytes(big)) == big


def test_close_removes_the_database_and_refuses_more_use(tmp_path: Path) -> None:
    store = ContextStore(tmp_path)
    store.put(1, context_to_bytes(context(1)))
    assert (store.path / "contexts.sqlite").exists()
    store.close()
    store.close()
    assert not store.path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FailedPrecondition):
        store.get(1)


def test_a_new_store_sweeps_the_directory_a_killed_process_left(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its PID is now dead, as a simulation's killed with SIGKILL
    left = tmp_path / f"{SCRATCH_PREFIX}{child.pid}-abc123"
    left.mkdir()
    (left / "contexts.sqlite").write_bytes(b"stale")
    with ContextStore(tmp_path) as store:
        assert not left.exists()
        assert store.path.name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
        assert list(tmp_path.iterdir()) == [store.path]
