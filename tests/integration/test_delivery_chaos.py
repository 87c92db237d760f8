"""No instruction lost, none answered twice, while the SuperNodes' connections are cut at random.

Three real SuperNodes reach a real SuperLink through `ChaosProxy`: their connections die after
a random lifetime (killing long polls mid-flight) and data they carry is dropped at random
(requests that never arrive, answers the SuperLink sent that never reach the node). The probe
app counts, on each node, the train messages its ClientApp handled (``calls``): every round must
get a usable reply from every node, and in round R every node must report R calls, so no
instruction was lost and none was handled twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_proxy import ChaosProxy
from integration_helpers import APPS, Cli

from corolla.deploy.local import LocalFederation, app_for_federation

pytestmark = pytest.mark.timeout(300)

NODES, ROUNDS = 3, 4


@pytest.fixture
def chaotic(tmp_path: Path) -> Iterator[tuple[LocalFederation, ChaosProxy, Cli]]:
    fed = LocalFederation(tmp_path / "fed", num_nodes=0)
    proxy: ChaosProxy | None = None
    try:
        fed.start()
        proxy = ChaosProxy(fed.fleet, seed=1234, drop=0.02, lifetime=(0.5, 3.0)).start()
        fed.num_nodes, fed.fleet = NODES, proxy.address  # the nodes dial the proxy
        for index in range(NODES):
            fed.supernodes.append(fed.start_supernode(index))
        app = app_for_federation(APPS / "probe", tmp_path / "probe", fed.exec)
        yield fed, proxy, Cli(fed, app)
    finally:
        fed.stop()
        if proxy is not None:
            proxy.stop()


def test_every_instruction_is_answered_exactly_once_through_cut_connections(
    chaotic: tuple[LocalFederation, ChaosProxy, Cli],
) -> None:
    _, proxy, cli = chaotic
    run_id = cli.submit(f"num-server-rounds={ROUNDS} min-nodes={NODES} checkpoint=false")
    info = cli.wait_for(run_id, "finished", timeout=240)
    log = cli("log", str(run_id), str(cli.app), "local").stdout
    assert info["sub_status"] == "completed", (info, log)
    for server_round in range(1, ROUNDS + 1):
        for phase in ("train", "evaluate"):
            ok = re.search(rf"\[ROUND {server_round}\] {phase}: (\d+) of (\d+) replies ok", log)
            assert ok and ok.groups() == (str(NODES), str(NODES)), (server_round, phase, log)
        # Every node handled exactly R train messages by round R: none lost, none twice.
        calls = rf"^probe round={server_round} calls={server_round}(\.0)?$"
        assert re.search(calls, log, re.MULTILINE), (server_round, log)
    assert f"probe final={ROUNDS}.0" in log
    # The chaos did happen: connections cut while calls were in flight, data dropped.
    assert proxy.cuts.expired > 0 and proxy.cuts.dropped > 0, proxy.cuts
