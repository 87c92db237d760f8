"""Faults injected one at a time into a real federation (processes on loopback), each checked
on the run's outcome and on what ``flwr ls`` / ``flwr log`` tell its user.

The probe app adds 1 to a 10-parameter model every round, so ``probe final=N.0`` proves that
N rounds were aggregated (a resumed run must not lose or repeat one), and ``probe round=R``
lines prove every round's metrics reached the Result.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import APPS, Cli, alive, children_of, is_spare, spares_of

from corolla.cli.exec_client import ExecClient
from corolla.deploy.local import LocalFederation, app_for_federation, terminate
from corolla.fab.build import build_fab_bytes

pytestmark = pytest.mark.timeout(180)

FAST_NODES = ["--heartbeat-interval", "0.5"]
CLIENTAPP = "corolla.runtime.clientapp"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def app_pids(parent: int, module: str) -> list[int]:
    """The app processes serving runs (not the daemon's spare, waiting for the next run)."""
    return [
        pid
        for pid in children_of(parent)
        if module in cmdline(pid) and alive(pid) and not is_spare(pid)
    ]


def wait_until(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def reap_orphans(pids: list[int]) -> None:
    """Processes our daemons started and a crash orphaned: they must end by themselves."""
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:  # a leftover is a failure, but never left running
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"process {pid} ({cmdline(pid)}) outlived its run")


class Fed:
    """A federation and the probe app's CLI bound to it."""

    def __init__(self, tmp: Path, **kwargs: object) -> None:
        self.tmp = tmp
        self.fed = LocalFederation(tmp / "fed", supernode_args=FAST_NODES, **kwargs)  # type: ignore[arg-type]
        self.fed.start()
        app = app_for_federation(APPS / "probe", tmp / "probe", self.fed.exec)
        self.cli = Cli(self.fed, app)

    def log(self, run_id: int) -> str:
        result = self.cli("log", str(run_id), str(self.cli.app), "local")
        assert result.returncode == 0, result.stderr
        return result.stdout

    def wait_log(self, run_id: int, text: str, timeout: float = 60) -> None:
        what = f"{text!r} in the log of run {run_id}"
        wait_until(what, lambda: text in self.log(run_id), timeout)

    @property
    def link_pid(self) -> int:
        assert self.fed.superlink is not None
        return self.fed.superlink.process.pid

    def serverapp_pids(self) -> list[int]:
        return app_pids(self.link_pid, "corolla.runtime.serverapp")


@pytest.fixture
def make_fed(tmp_path: Path) -> Iterator[object]:
    made: list[Fed] = []

    def make(**kwargs: object) -> Fed:
        made.append(Fed(tmp_path / f"f{len(made)}", **kwargs))
        return made[-1]

    yield make
    for fed in made:
        fed.fed.stop()


def test_superlink_killed_mid_round_resumes_on_restart(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    run_id = f.cli.submit("num-server-rounds=6 round-sleep=0.5")
    f.wait_log(run_id, "[ROUND 2/6]")
    serverapp = f.serverapp_pids()
    assert serverapp, "the run's ServerApp process should be running"
    link = f.fed.superlink
    assert link is not None
    spare = spares_of(link.process.pid)
    assert spare, "the SuperLink should keep a spare ServerApp process"
    link.process.send_signal(signal.SIGKILL)
    link.process.wait(timeout=10)
    time.sleep(1.0)  # an outage: the ServerApp and the SuperNodes retry meanwhile
    f.fed.start_superlink()  # same database, same ports
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "probe final=6.0" in log  # no round lost, none repeated
    for server_round in range(1, 7):
        assert f"probe round={server_round} " in log
    reap_orphans(serverapp)  # the ServerApp the dead SuperLink started finished and exited
    reap_orphans(spare)  # its spare saw EOF on its pipe and exited


def test_superlink_killed_in_isolation_process_is_a_pause(make_fed: object) -> None:
    """The operator's flwr-serverapp is alive throughout: its calls retry, the run goes on."""
    f: Fed = make_fed(isolation="process")  # type: ignore[operator]
    run_id = f.cli.submit("num-server-rounds=5 round-sleep=0.5")
    f.wait_log(run_id, "[ROUND 2/5]")
    link = f.fed.superlink
    assert link is not None
    link.process.send_signal(signal.SIGKILL)
    link.process.wait(timeout=10)
    time.sleep(1.0)
    f.fed.start_superlink()
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "stopped responding" not in log
    assert "probe final=5.0" in log


def test_serverapp_killed_resumes_from_its_checkpoint(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    run_id = f.cli.submit("num-server-rounds=8 round-sleep=0.5")
    f.wait_log(run_id, "[ROUND 3/8]")  # round 2 finished: its checkpoint is stored
    killed = f.serverapp_pids()
    assert killed, "the run's ServerApp process should be running"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "resumed from round" in str(info["details"])  # flwr ls says so
    assert "killed by signal SIGKILL" in log and "resumes from round" in log
    assert "probe final=8.0" in log  # no round lost, none repeated
    for server_round in range(1, 9):
        assert f"probe round={server_round} " in log


def test_serverapp_killed_without_checkpoint_fails_with_the_reason(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    run_id = f.cli.submit("num-server-rounds=8 round-sleep=0.5 checkpoint=false")
    f.wait_log(run_id, "[ROUND 2/8]")
    killed = f.serverapp_pids()
    assert killed, "the run's ServerApp process should be running"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    info = f.cli.wait_for(run_id, "finished", timeout=60)
    assert info["sub_status"] == "failed"
    assert "ServerApp process was killed by signal SIGKILL" in str(info["details"])
    assert "run failed: ServerApp process was killed by signal SIGKILL" in f.log(run_id)


def test_supernode_killed_and_restarted_keeps_its_id_and_the_run_completes(
    make_fed: object,
) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    # Rounds long enough that the run is still on when the node is seen serving it (with a
    # spare ClientApp process ready, nothing else slows its start).
    run_id = f.cli.submit("num-server-rounds=3 round-sleep=2.0")
    f.wait_log(run_id, "[ROUND 1/3]")
    node = f.fed.supernodes[0]
    wait_until("node 0's ClientApp", lambda: app_pids(node.process.pid, CLIENTAPP))
    clientapps = app_pids(node.process.pid, CLIENTAPP) + spares_of(node.process.pid)
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(timeout=10)
    f.fed.supernodes[0] = f.fed.start_supernode(0)
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "probe final=3.0" in log
    node_ids = {line.split("]")[0] for line in log.splitlines() if line.startswith("[node ")}
    assert len(node_ids) == 2, node_ids  # the restarted node came back under its old id
    reap_orphans(clientapps)


def test_clientapp_killed_gets_an_error_reply_and_the_run_goes_on(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    hold = f.tmp / "hold-once"
    run_id = f.cli.submit(f"num-server-rounds=2 hold-once-file='{hold}'")
    f.wait_log(run_id, "probe client holding pid=")  # a train message is held, however slow
    match = re.search(r"probe client holding pid=(\d+)", f.log(run_id))
    assert match
    os.kill(int(match.group(1)), signal.SIGKILL)  # killed while it holds the message
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "ClientApp process exited with code -9" in log  # why that node's reply failed


def test_all_clientapps_raising_fails_the_run_and_stream_exits_1(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    result = f.cli(
        "run", str(f.cli.app), "local", "--stream", "--run-config",
        "num-server-rounds=3 client-raise-all=true",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "round 1 train: 0 of 2 replies usable" in result.stdout + result.stderr
    # The strategy shows the traceback of the identical failures once, not once per node. (A
    # ClientApp's own log of its exception, "[node N] ...", may or may not reach the stream
    # before the run ends: it is not counted.)
    server_side = "\n".join(
        line for line in result.stdout.splitlines() if not line.startswith("[node ")
    )
    assert server_side.count("Traceback (most recent call last)") == 1, result.stdout
    assert "same error on 2 nodes" in result.stdout
    runs = f.cli.runs()
    assert runs[-1]["sub_status"] == "failed"
    assert "round 1 train: 0 of 2 replies usable" in str(runs[-1]["details"])


def test_flwr_stop_at_each_lifecycle_state(make_fed: object) -> None:
    f: Fed = make_fed(superlink_args=["--max-concurrent-runs", "1"])  # type: ignore[operator]
    running = f.cli.submit("num-server-rounds=100000 round-sleep=0.2")  # until stopped
    queued = f.cli.submit("num-server-rounds=1")
    f.cli.wait_for(running, "running")
    assert f.cli.run_info(queued)["status"] == "pending"
    assert "queued" in str(f.cli.run_info(queued)["details"])
    for run_id in (queued, running):  # pending, then running
        result = f.cli("stop", str(run_id), str(f.cli.app), "local")
        assert result.returncode == 0, result.stderr
        info = f.cli.wait_for(run_id, "finished")
        assert (info["sub_status"], info["details"]) == ("stopped", "stopped by user")
    again = f.cli("stop", str(running), str(f.cli.app), "local")  # finished already
    assert again.returncode != 0 and "finished" in again.stdout + again.stderr
    # A stop that lands while the launcher is starting the run: submit and stop at once.
    for _ in range(5):
        run_id = f.cli.submit("num-server-rounds=1")
        f.cli("stop", str(run_id), str(f.cli.app), "local")
        assert f.cli.wait_for(run_id, "finished")["sub_status"] in ("stopped", "completed")
    assert f.fed.superlink is not None and f.fed.superlink.process.poll() is None
    assert not f.serverapp_pids() or f.cli.wait_for(queued, "finished")


def test_twenty_runs_back_to_back_queue_and_all_complete(make_fed: object) -> None:
    limit = 2
    f: Fed = make_fed(superlink_args=["--max-concurrent-runs", str(limit)])  # type: ignore[operator]
    fab, fab_hash = build_fab_bytes(f.cli.app)
    with ExecClient(f.fed.exec, insecure=True) as client:  # back to back, as fast as it goes
        ids = [
            client.start_run(
                fab,
                fab_hash,
                override_config={"num-server-rounds": 1, "round-sleep": 0.3},
                federation="local",
                federation_options={},
            )
            for _ in range(20)
        ]
    most, seen_queued = 0, False
    deadline = time.monotonic() + 150
    while True:
        runs = {int(r["run_id"]): r for r in f.cli.runs()}
        mine = [runs[run_id] for run_id in ids]
        serving = sum(r["status"] in ("starting", "running") for r in mine)
        most = max(most, serving, len(f.serverapp_pids()))
        seen_queued |= any("queued" in str(r["details"]) for r in mine)
        if all(r["status"] == "finished" for r in mine):
            break
        assert time.monotonic() < deadline, [r["status"] for r in mine]
        time.sleep(0.2)
    assert [r["sub_status"] for r in mine] == ["completed"] * 20
    assert 1 <= most <= limit
    assert seen_queued


def test_sigterm_of_each_daemon_reaps_its_children_and_the_run_resumes(make_fed: object) -> None:
    f: Fed = make_fed()  # type: ignore[operator]
    run_id = f.cli.submit("num-server-rounds=6 round-sleep=0.5")  # rounds left when it is killed
    f.wait_log(run_id, "probe client pid=")
    node = f.fed.supernodes[1]  # the pid in the log may be the other node's ClientApp
    wait_until("node 1's ClientApp", lambda: app_pids(node.process.pid, CLIENTAPP))
    clientapps = app_pids(node.process.pid, CLIENTAPP) + spares_of(node.process.pid)
    assert terminate(node.process) == 0
    assert not any(alive(pid) for pid in clientapps)  # reaped by the SuperNode, its spare too
    f.fed.supernodes[1] = f.fed.start_supernode(1)
    f.wait_log(run_id, "[ROUND 2/6]")
    wait_until("the run's ServerApp", f.serverapp_pids)
    assert f.fed.superlink is not None
    serverapps = f.serverapp_pids() + spares_of(f.fed.superlink.process.pid)
    assert terminate(f.fed.superlink.process) == 0
    assert not any(alive(pid) for pid in serverapps)  # reaped by the SuperLink, its spare too
    f.fed.start_superlink()  # the run was left resumable, not `running`
    info = f.cli.wait_for(run_id, "finished", timeout=90)
    log = f.log(run_id)
    assert info["sub_status"] == "completed", (info, log)
    assert "the SuperLink shut down while the run was in progress" in log
    assert "probe final=6.0" in log
