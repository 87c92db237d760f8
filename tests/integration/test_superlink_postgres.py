"""A SuperLink whose state is in PostgreSQL (a real server, `postgres_server`) runs a real run
to completion, and a SuperLink started again on the same database still knows it."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest
from integration_helpers import APPS, Cli, started_run_id
from postgres_server import database_for

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(180)


def test_a_run_completes_with_its_state_in_postgresql(tmp_path: Path) -> None:
    url, objects = database_for(tmp_path), tmp_path / "objects"
    fed = LocalFederation(
        tmp_path / "fed", num_nodes=2, database=url, superlink_args=["--object-dir", str(objects)]
    )
    try:
        fed.start()
        cli = Cli(fed, app_for_federation(APPS / "probe", tmp_path / "probe", fed.exec))
        # 300,000 float64 parameters (2.4 MB): the model travels as objects, files in `objects`.
        result = cli(
            "run", str(cli.app), "local", "--stream", "--run-config", "params=300000 marker='pg'"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "probe final=2.0 size=300000 all-equal=True" in result.stdout
        run_id = started_run_id(result.stdout)
        assert cli.run_info(run_id)["sub_status"] == "completed"
        with psycopg.connect(url) as conn:  # the state is in PostgreSQL, not in an SQLite file
            row = conn.execute("SELECT status, sub_status FROM runs WHERE run_id = %s", (run_id,))
            assert row.fetchone() == ("finished", "completed")
            logs = conn.execute("SELECT COUNT(*) FROM logs WHERE run_id = %s", (run_id,))
            assert logs.fetchone()[0] > 0  # type: ignore[index]  # one row: COUNT(*)
        assert objects.is_dir() and not list(fed.workdir.glob("*.db"))

        assert fed.superlink is not None
        fed.superlink.process.send_signal(signal.SIGTERM)
        assert fed.superlink.process.wait(timeout=30) == 0
        fed.start_superlink()  # the same database, the same ports
        assert {int(r["run_id"]): r["sub_status"] for r in cli.runs()} == {run_id: "completed"}
        log = cli("log", str(run_id), str(cli.app), "local")
        assert "probe marker=pg" in log.stdout
    finally:
        fed.stop()
