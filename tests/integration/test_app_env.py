"""App process hygiene with real daemons: the environment app processes see, private files and
installs, a zip bomb refused at submit."""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from integration_helpers import APPS, Cli, started_run_id

from corolla.common.appio import SECRET_ENV, TOKEN_ENV
from corolla.deploy.local import LocalFederation, app_for_federation
from corolla.proto.v1 import exec_pb2, run_pb2
from corolla.proto.v1.exec_pb2_grpc import ExecStub

pytestmark = pytest.mark.timeout(180)

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "hunter2",
    SECRET_ENV: "not-for-app-processes-" + "x" * 16,
    "PROBE_BLOCKED": "only on the daemons",
}


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LocalFederation]:
    fed = LocalFederation(
        tmp_path / "fed",
        num_nodes=1,
        extra_env={**SECRETS, "PROBE_PASSED": "yes", "PROBE_NODE_ONLY": "yes"},
        superlink_args=["--app-env", "PROBE_PASSED"],
        supernode_args=["--app-env", "PROBE_PASSED", "--app-env", "PROBE_NODE_ONLY"],
    )
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()


def names(output: str, side: str) -> set[str]:
    match = re.search(rf"probe {side} env-names=(\S+)", output)
    assert match, output
    return set(match.group(1).split(","))


def test_app_processes_see_only_allowed_variables(
    federation: LocalFederation, tmp_path: Path
) -> None:
    cli = Cli(federation, app_for_federation(APPS / "probe", tmp_path / "probe", federation.exec))
    result = cli(
        "run", str(cli.app), "local", "--stream", "--run-config",
        "env-names=true min-nodes=1 num-server-rounds=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    log = cli("log", str(started_run_id(result.stdout)), str(cli.app), "local").stdout
    server, client = names(log, "server"), names(log, "client")
    for seen in (server, client):
        assert {"PATH", "COROLLA_HOME", TOKEN_ENV, "PROBE_PASSED"} <= seen
        assert not seen & set(SECRETS)
    assert "PROBE_NODE_ONLY" in client and "PROBE_NODE_ONLY" not in server
    assert "COROLLA_MAX_FAB_BYTES" in server  # the SuperLink's limits, for the install

    # What the SuperLink and the apps leave on disk is their user's alone.
    output_dir = federation.workdir / "serverapp-output"
    assert stat.S_IMODE(output_dir.stat().st_mode) == 0o700
    apps = federation.workdir / "home" / "apps"
    assert stat.S_IMODE(apps.stat().st_mode) == 0o700
    (install,) = [p for p in apps.iterdir() if not p.name.startswith(".")]
    marker = json.loads((install / ".corolla" / "installed.json").read_text())
    assert marker["fab_hash"] == install.name


def test_a_zip_bomb_is_refused_at_submit(federation: LocalFederation) -> None:
    zeros = bytes(1024 * 1024)
    sha = hashlib.sha256(zeros).hexdigest()
    files = [f"data/zeros-{i:03}.bin" for i in range(481)]
    manifest = {"files": [{"path": p, "sha256": sha, "size": len(zeros)} for p in files]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(".corolla/manifest.json", json.dumps({**manifest, "version": 1}))
        for path in files:
            zf.writestr(path, zeros)
    bomb = buf.getvalue()
    assert len(bomb) < 600_000
    with federation.channel(federation.exec) as channel:
        stub = ExecStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.StartRun(
                exec_pb2.StartRunRequest(
                    fab=run_pb2.Fab(hash=hashlib.sha256(bomb).hexdigest(), content=bomb)
                ),
                timeout=30,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "compression-ratio limit of 200 (zip bomb?)" in (info.value.details() or "")
        assert list(stub.ListRuns(exec_pb2.ListRunsRequest(), timeout=10).runs) == []
