"""The main job: examples/digits trained as a local simulation, then on a local federation.

First `flwr run <app> --stream` with no federation set up at all (a fresh FLWR_HOME and
COROLLA_HOME in the work directory): the app's default federation is a simulation of 10
virtual SuperNodes, on a local SuperLink the CLI starts by itself (stopped at the end with
`flwr local stop`). Skip it with --no-simulation.

Then the deployment (--no-deployment skips it): starts every daemon on loopback (the default
ports 9091-9093) with mutual TLS (a throwaway CA and certificates in the work directory) and
SuperNode authentication (a key per SuperNode, registered with the SuperLink), runs the app
with `flwr run <app> local --stream` (a copy of examples/digits whose federation carries the
CLI's certificate), shows per-round progress and the final accuracy, and stops everything it
started (also on Ctrl-C).

    python scripts/demo.py [--nodes 2] [--rounds N] [--no-simulation] [--no-deployment]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from corolla.common.errors import CorollaError
from corolla.deploy.local import LocalFederation, app_for_federation

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "digits"
FLWR = Path(sys.executable).parent / "flwr"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="override num-server-rounds")
    parser.add_argument("--no-simulation", action="store_true", help="skip the simulation")
    parser.add_argument("--no-deployment", action="store_true", help="skip the deployment")
    args = parser.parse_args()
    # SIGTERM ends the demo like Ctrl-C does: every daemon is stopped in order.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    work = Path(tempfile.mkdtemp(prefix="corolla-demo-"))
    overrides = [] if args.rounds is None else ["--run-config", f"num-server-rounds={args.rounds}"]
    if not args.no_simulation:
        code = simulate(work, overrides)
        if code != 0 or args.no_deployment:
            return code
    return deploy(work, args.nodes, overrides)


def simulate(work: Path, overrides: list[str]) -> int:
    """`flwr run <copy of digits> --stream` as a new user: a local simulation."""
    app = work / "digits-simulation"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.fab"))
    env = {
        **os.environ,
        "FLWR_HOME": str(work / "flwr-home"),
        "COROLLA_HOME": str(work / "corolla-home"),
        "PYTHONUNBUFFERED": "1",
    }
    print(f"demo: a local simulation; $ flwr run {app} --stream", flush=True)
    client = subprocess.Popen([str(FLWR), "run", str(app), "--stream", *overrides], env=env)
    try:
        return client.wait(timeout=1800)
    except KeyboardInterrupt:
        print("\ndemo: interrupted, shutting down", flush=True)
        return 130
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
        subprocess.run([str(FLWR), "local", "stop"], env=env, timeout=60, check=False)


def deploy(work: Path, nodes: int, overrides: list[str]) -> int:
    """A SuperLink and ``nodes`` SuperNodes with mutual TLS train the app."""
    federation = LocalFederation(
        work,
        num_nodes=nodes,
        serverappio="127.0.0.1:9091",
        fleet="127.0.0.1:9092",
        exec="127.0.0.1:9093",
        mtls=True,
        node_auth=True,
    )
    print(f"demo: starting a SuperLink and {nodes} SuperNodes (logs in {work})", flush=True)
    client: subprocess.Popen[bytes] | None = None
    try:
        federation.start()
        app = app_for_federation(
            APP, work / "digits", federation.exec, settings=federation.federation_settings()
        )
        command = [str(FLWR), "run", str(app), "local", "--stream", *overrides]
        print(
            f"demo: mutual TLS and SuperNode authentication on; $ flwr run {app} local --stream",
            flush=True,
        )
        client = subprocess.Popen(command, env=federation.env)
        return client.wait(timeout=1800)
    except CorollaError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted, shutting down", flush=True)
        return 130
    finally:
        if client is not None and client.poll() is None:
            client.send_signal(signal.SIGINT)
            try:
                client.wait(timeout=10)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait(timeout=10)
        federation.stop()
        print("demo: all processes stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
