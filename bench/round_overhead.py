"""Round overhead of a local deployment: SuperLink + K SuperNodes, FedAvg on a tiny model.

Prints the wall time (from `flwr run` to finished) of a 1-round and an N-round run, and the
seconds per round (train + evaluate), measured by the ServerApp at the end of each round: the
first round of a run apart (the one that used to wait for app processes to start) and the
median of the later ones.

    python bench/round_overhead.py [--nodes 2] [--rounds 10] [--params 1000]
                                   [--isolation subprocess|process] [--secure] [--tls]
                                   [--user-auth]

``--secure``: mutual TLS on every API and SuperNode authentication (signed Fleet requests), as
a deployment should run; compare with the default (plaintext, no node auth).
``--tls``: TLS on every API. ``--user-auth``: TLS and OIDC user login on the Exec API, against
the tests' real identity provider (tests/oidc, installed by ``./dev test``); the runs are
submitted by a logged-in admin. Compare ``--user-auth`` with ``--tls``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from corolla.deploy.local import LocalFederation, app_for_federation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_login import UserLogin

APP = Path(__file__).resolve().parent / "apps" / "tiny"
FLWR = Path(sys.executable).parent / "flwr"


def run_once(
    federation: LocalFederation, app: Path, rounds: int, params: int, env: dict[str, str]
) -> tuple[float, list[float]]:
    command = [
        str(FLWR),
        "run",
        str(app),
        "local",
        "--stream",
        "--run-config",
        f"num-server-rounds={rounds} num-params={params} min-nodes={federation.num_nodes}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"run failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    # The ServerApp prints a mark after round 0 (initial evaluation) and after each round.
    marks = [float(m) for m in re.findall(r"bench-round \d+ ([0-9.]+)", result.stdout)]
    if len(marks) != rounds + 1:
        sys.exit(f"expected {rounds + 1} round marks, got {len(marks)}:\n{result.stdout}")
    per_round = [marks[i] - marks[i - 1] for i in range(1, len(marks))]
    return wall, per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--params", type=int, default=1000)
    parser.add_argument(
        "--isolation",
        choices=["subprocess", "process"],
        default="subprocess",
        help="process: operator-style long-running flwr-serverapp/flwr-clientapp processes",
    )
    parser.add_argument(
        "--secure", action="store_true", help="mutual TLS and SuperNode authentication on"
    )
    parser.add_argument("--tls", action="store_true", help="TLS on every API")
    parser.add_argument(
        "--user-auth", action="store_true", help="OIDC user login on the Exec API (and TLS)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corolla-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        login = stack.enter_context(UserLogin(work)) if args.user_auth else None
        federation = LocalFederation(
            work,
            num_nodes=args.nodes,
            isolation=args.isolation,
            tls=args.tls or args.user_auth,
            mtls=args.secure,
            node_auth=args.secure,
            superlink_args=login.superlink_args if login else [],
            exec_auth=login.session if login else None,
        )
        with federation:
            settings = federation.federation_settings()
            app = app_for_federation(APP, work / "app", federation.exec, settings=settings)
            env = login.cli_env(federation) if login else federation.env
            # Warm-up run: FAB install and imports happen once per machine, not per run.
            run_once(federation, app, 1, args.params, env)
            one_wall, one_round = run_once(federation, app, 1, args.params, env)
            wall, per_round = run_once(federation, app, args.rounds, args.params, env)
    tls = args.tls or args.user_auth
    security = "mTLS + SuperNode auth" if args.secure else ("TLS" if tls else "insecure")
    if args.user_auth:
        security += " + OIDC user login"
    print(f"isolation={args.isolation} nodes={args.nodes} params={args.params} ({security})")
    n = args.rounds
    figure("1-round run, flwr run -> finished", one_wall, 2)
    figure("1-round run, its round (train+evaluate)", one_round[0], 3)
    figure(f"{n}-round run, flwr run -> finished", wall, 2)
    figure(f"{n}-round run, first round (train+evaluate)", per_round[0], 3)
    later = per_round[1:]
    if later:
        figure(f"{n}-round run, median of the later rounds", statistics.median(later), 3)
        print(f"min/max of the later rounds: {min(later):.3f} / {max(later):.3f} s")


def figure(label: str, seconds: float, digits: int) -> None:
    print(f"{label + ':':<46}{seconds:6.{digits}f} s")


if __name__ == "__main__":
    main()
