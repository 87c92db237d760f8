"""Round overhead of a local deployment: SuperLink + K SuperNodes, FedAvg on a tiny model.

Prints the run's wall time (from `flwr run` to finished) and the median seconds per round
(train + evaluate), measured by the ServerApp at the end of each round.

    python bench/round_overhead.py [--nodes 2] [--rounds 10] [--params 1000]
                                   [--isolation subprocess|process] [--secure]

``--secure``: mutual TLS on every API and SuperNode authentication (signed Fleet requests), as
a deployment should run; compare with the default (plaintext, no node auth).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corolla.deploy.local import LocalFederation, app_for_federation

APP = Path(__file__).resolve().parent / "apps" / "tiny"
FLWR = Path(sys.executable).parent / "flwr"


def run_once(
    federation: LocalFederation, app: Path, rounds: int, params: int
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
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=federation.env
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"run failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    # The ServerApp prints a mark after round 0 (initial evaluation) and after each round.
    marks = [float(m) for m in re.findall(r"bench-round \d+ ([0-9.]+)", result.stdout)]
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corolla-bench-") as tmp:
        federation = LocalFederation(
            Path(tmp),
            num_nodes=args.nodes,
            isolation=args.isolation,
            mtls=args.secure,
            node_auth=args.secure,
        )
        with federation:
            settings = federation.federation_settings()
            app = app_for_federation(APP, Path(tmp) / "app", federation.exec, settings=settings)
            # Warm-up run: FAB install and imports happen once per machine, not per run.
            run_once(federation, app, 1, args.params)
            one_wall, _ = run_once(federation, app, 1, args.params)
            wall, per_round = run_once(federation, app, args.rounds, args.params)
    security = "mTLS + SuperNode auth" if args.secure else "insecure"
    print(f"isolation={args.isolation} nodes={args.nodes} params={args.params} ({security})")
    print(f"1-round run, flwr run -> finished:        {one_wall:6.2f} s")
    print(f"{args.rounds}-round run, flwr run -> finished:       {wall:6.2f} s")
    print(f"median seconds per round (train+evaluate): {statistics.median(per_round):6.3f} s")
    print(f"min/max per round: {min(per_round):.3f} / {max(per_round):.3f} s")


if __name__ == "__main__":
    main()
