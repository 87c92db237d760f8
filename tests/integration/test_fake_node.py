"""A fake SuperNode on an authenticated federation (it even holds a client certificate of the
federation's CA): it never joins, so it never gets the model and never sends a reply."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from integration_helpers import Cli

from corolla.common import nodekeys
from corolla.deploy.local import LocalFederation

pytestmark = pytest.mark.timeout(180)


def test_an_unregistered_supernode_cannot_join_or_take_part(
    federation: LocalFederation, probe_cli: Cli
) -> None:
    key = federation.workdir / "supernode-2.key"
    nodekeys.generate(key, Path(f"{key}.pub"))  # a key of its own, never registered
    fake = federation.start_supernode(2, wait=False)
    try:
        deadline = time.monotonic() + 60
        while "unknown SuperNode key" not in fake.output():
            assert time.monotonic() < deadline, fake.output()[-2000:]
            assert fake.process.poll() is None or "unknown SuperNode key" in fake.output()
            time.sleep(0.1)
        listed = probe_cli("supernode", "ls", str(probe_cli.app), "local", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        nodes = json.loads(listed.stdout)
        honest = {federation.node_id(0), federation.node_id(1)}
        assert {node["node_id"] for node in nodes} == honest
        assert all(node["online"] and node["fingerprint"] for node in nodes)
        run_id = probe_cli.submit("num-server-rounds=2")
        info = probe_cli.wait_for(run_id, "finished", timeout=120)
        assert info["sub_status"] == "completed", info
        log = probe_cli("log", str(run_id), str(probe_cli.app), "local")
        assert f"[node {federation.node_id(0)}]" in log.stdout
        fake_id = fake.ready()
        assert fake_id is None  # it never registered, so it never wrote its ready file
    finally:
        federation.supernodes.append(fake)  # stopped and reaped with the federation


def test_the_supernode_commands_manage_the_allow_list(
    federation: LocalFederation, probe_cli: Cli, tmp_path: Path
) -> None:
    app, key = str(probe_cli.app), tmp_path / "new.key"
    made = probe_cli("supernode", "keygen", str(key))
    assert made.returncode == 0, made.stderr
    again = probe_cli("supernode", "keygen", str(key))
    assert again.returncode == 2 and "not overwriting" in again.stderr
    added = probe_cli("supernode", "register", f"{key}.pub", app, "local")
    assert added.returncode == 0, added.stderr
    node_id = int(added.stdout.split()[2])  # "registered SuperNode <id> (key sha256:...)"
    twice = probe_cli("supernode", "register", f"{key}.pub", app, "local")
    assert twice.returncode == 1 and "registered already" in twice.stderr
    table = probe_cli("supernode", "ls", app, "local")
    assert str(node_id) in table.stdout and "offline" in table.stdout  # never connected
    gone = probe_cli("supernode", "unregister", str(node_id), app, "local")
    assert gone.returncode == 0, gone.stderr
    unknown = probe_cli("supernode", "unregister", str(node_id), app, "local")
    assert unknown.returncode == 3, unknown.stderr
    listed = json.loads(probe_cli("supernode", "ls", app, "local", "--format", "json").stdout)
    assert node_id not in {node["node_id"] for node in listed}
