"""The main job: a local federation (SuperLink + 2 SuperNodes) trains examples/digits.

Starts every daemon on loopback (the default ports 9091-9093) with mutual TLS (a throwaway CA
and certificates in the work directory) and SuperNode authentication (a key per SuperNode,
registered with the SuperLink), runs the app with `flwr run <app> local --stream` (a copy of
examples/digits whose federation carries the CLI's certificate), shows per-round progress and
the final accuracy, and stops everything it started (also on Ctrl-C).

    python scripts/demo.py [--nodes 2] [--rounds N]
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    # SIGTERM ends the demo like Ctrl-C does: every daemon is stopped in order.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    work = Path(tempfile.mkdtemp(prefix="corolla-demo-"))
    federation = LocalFederation(
        work,
        num_nodes=args.nodes,
        serverappio="127.0.0.1:9091",
        fleet="127.0.0.1:9092",
        exec="127.0.0.1:9093",
        mtls=True,
        node_auth=True,
    )
    print(f"demo: starting a SuperLink and {args.nodes} SuperNodes (logs in {work})", flush=True)
    client: subprocess.Popen[bytes] | None = None
    try:
        federation.start()
        app = app_for_federation(
            APP, work / "digits", federation.exec, settings=federation.federation_settings()
        )
        command = [str(FLWR), "run", str(app), "local", "--stream"]
        if args.rounds is not None:
            command += ["--run-config", f"num-server-rounds={args.rounds}"]
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
