"""Time, memory and bytes of large-model rounds through a local deployment, against the floor.

For each model size, starts a fresh SuperLink with K SuperNodes and runs FedAvg (train and
evaluate each round, both carrying the model; every reply must be usable, so one error fails
the run and no figure is printed) on the tiny app with a float32 model of 10 arrays. While the
run goes it samples, every 50 ms, the resident memory of every Corolla process and the TCP
byte counters (``ss``) of the SuperLink's ServerAppIo and Fleet ports. It prints per-round
seconds, the peak RSS of each process (and of all together), the bytes each API moved per
round, and the floor: the time this machine takes to copy and to SHA-256 the bytes a round
moves (2K model copies down, K up), once. Also: CPU seconds per role (user and system),
the peak size of the SuperLink's object files, the anonymous part of all processes' memory
(RSS counts file pages too: spooled arrays, mapped objects), and with ``--timeline`` the cores
each role kept busy second by second.

    python bench/large_model.py [--sizes 100:3,1000:1,10000:1] [--nodes 2] [--arrays 10]
                                [--timeline]

``--sizes``: comma-separated ``MB:rounds``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corolla.deploy.local import LocalFederation, app_for_federation

APP = Path(__file__).resolve().parent / "apps" / "tiny"
FLWR = Path(sys.executable).parent / "flwr"
ROLES = (
    ("corolla.superlink.main", "SuperLink"),
    ("corolla.supernode.main", "SuperNode"),
    ("corolla.runtime.serverapp", "ServerApp"),
    ("corolla.runtime.clientapp", "ClientApp"),
)
_SOCKET = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s+(\S+):(\d+)")
_COUNTER = re.compile(r"bytes_(sent|received):(\d+)")


def rss_mib(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid``: all of it, and its anonymous part (what is not file pages
    the kernel can write back or drop: spooled arrays and mapped objects are file pages)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    anon = re.search(r"RssAnon:\s+(\d+) kB", status)
    rss_kib, anon_kib = (int(m.group(1)) if m else 0 for m in (rss, anon))
    return rss_kib / 1024, anon_kib / 1024


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid`` so far (zeros once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def role_of(pid: int) -> str | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return next((role for marker, role in ROLES if marker in cmd), None)


def socket_counters(ports: dict[int, str]) -> dict[tuple[str, ...], tuple[str, int, int]]:
    """Per TCP connection whose local port is one of ``ports`` (the server side): its API,
    bytes sent (down, to the client) and received (up)."""
    out = subprocess.run(["ss", "-tin"], capture_output=True, text=True, timeout=30).stdout
    found: dict[tuple[str, ...], tuple[str, int, int]] = {}
    lines = out.splitlines()
    for header, detail in itertools.pairwise(lines):
        match = _SOCKET.match(header)
        if not match or int(match.group(2)) not in ports:
            continue
        counters = dict((k, int(v)) for k, v in _COUNTER.findall(detail))
        key = match.groups()
        found[key] = (
            ports[int(match.group(2))],
            counters.get("sent", 0),
            counters.get("received", 0),
        )
    return found


def disk_bytes(directory: Path) -> int:
    """Bytes allocated to the files under ``directory`` and its staging sibling (a file with
    two names, a staged spool file and its link in the store, counts once)."""
    blocks: dict[int, int] = {}
    for root in (directory, directory.with_name(f"{directory.name}.staging")):
        for path in root.rglob("*") if root.is_dir() else ():
            try:
                info = path.stat()
            except OSError:
                continue  # gone meanwhile
            if path.is_file():
                blocks[info.st_ino] = info.st_blocks * 512
    return sum(blocks.values())


@dataclass(eq=False)
class Sampler(threading.Thread):
    """Peak RSS per role (largest process) and of all processes together; the highest byte
    counters seen per connection (a closed connection keeps its last sample)."""

    ports: dict[int, str]
    objects: Path  # the SuperLink's object directory
    disk_peak: int = 0  # bytes of the SuperLink's object files (staged ones included)
    peaks: dict[str, float] = field(default_factory=dict)
    total_peak: float = 0.0
    anon_peak: float = 0.0  # of all processes' anonymous memory together
    # pid -> (role, (user, system) seconds last seen)
    cpu: dict[int, tuple[str, tuple[float, float]]] = field(default_factory=dict)
    sockets: dict[tuple[str, ...], tuple[str, int, int]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    timeline: list[tuple[float, dict[str, float], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        while not self.done.wait(0.05):
            total = anon_total = 0.0
            for entry in os.listdir("/proc"):
                if entry.isdigit() and (role := role_of(int(entry))) is not None:
                    rss, anon = rss_mib(int(entry))
                    self.cpu[int(entry)] = (role, cpu_seconds(int(entry)))
                    total += rss
                    anon_total += anon
                    self.peaks[role] = max(self.peaks.get(role, 0.0), rss)
            self.total_peak = max(self.total_peak, total)
            self.anon_peak = max(self.anon_peak, anon_total)
            self.disk_peak = max(self.disk_peak, disk_bytes(self.objects))
            by_role = {role: u + s for role, (u, s) in self.cpu_by_role().items()}
            self.timeline.append((time.perf_counter(), by_role, total))
            self.sockets.update(socket_counters(self.ports))

    def cpu_by_role(self) -> dict[str, tuple[float, float]]:
        totals: dict[str, tuple[float, float]] = {}
        for role, (user, system) in self.cpu.values():
            had_user, had_system = totals.get(role, (0.0, 0.0))
            totals[role] = (had_user + user, had_system + system)
        return totals

    def bytes_by_api(self) -> dict[str, tuple[int, int]]:
        moved: dict[str, tuple[int, int]] = {}
        for api, sent, received in self.sockets.values():
            down, up = moved.get(api, (0, 0))
            moved[api] = (down + sent, up + received)
        return moved


def floor_seconds(nbytes: int) -> tuple[float, float]:
    """Seconds to copy ``nbytes`` once and to SHA-256 them once, measured on at most 256 MiB
    and scaled linearly (best of three)."""
    sample = min(nbytes, 256 * 1024**2)
    source = np.random.default_rng(0).integers(0, 255, sample, dtype=np.uint8)
    target = np.empty_like(source)
    copy = hashing = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(target, source)
        copy = min(copy, time.perf_counter() - start)
        start = time.perf_counter()
        hashlib.sha256(memoryview(source)).digest()
        hashing = min(hashing, time.perf_counter() - start)
    return copy * nbytes / sample, hashing * nbytes / sample


def print_timeline(sampler: Sampler, start: float, step: float = 1.0) -> None:
    """CPU use per role (in cores) and the RSS of all processes, per ``step`` seconds."""
    print(f"  timeline (cores busy per role over each {step:.0f} s, RSS of all processes):")
    last_t, last = start, dict.fromkeys((role for _, role in ROLES), 0.0)
    for t, by_role, total in sampler.timeline:
        if t - last_t < step:
            continue
        busy = "  ".join(
            f"{role[:6]} {(by_role.get(role, 0.0) - last.get(role, 0.0)) / (t - last_t):4.2f}"
            for _, role in ROLES
        )
        print(f"    {t - start:6.1f} s  {busy}  {total:7.0f} MiB")
        last_t, last = t, by_role


def run_size(mb: float, rounds: int, nodes: int, arrays: int, timeline: bool = False) -> None:
    params = int(mb * 1e6 / 4)
    with (
        tempfile.TemporaryDirectory(prefix="corolla-bench-") as tmp,
        LocalFederation(Path(tmp), num_nodes=nodes) as federation,
    ):
        app = app_for_federation(APP, Path(tmp) / "app", federation.exec)
        ports = {int(federation.serverappio.rsplit(":", 1)[1]): "ServerAppIo"}
        ports[int(federation.fleet.rsplit(":", 1)[1])] = "Fleet"
        sampler = Sampler(ports, Path(tmp) / "state.db.objects")
        sampler.start()
        start = time.perf_counter()
        # A round may take a while at 10 GB: its messages must not expire on the way.
        config = (
            f"num-server-rounds={rounds} num-params={params} num-arrays={arrays} "
            "round-timeout=3600.0"
        )
        result = subprocess.run(
            [
                str(FLWR),
                "run",
                str(app),
                "local",
                "--stream",
                "--run-config",
                f"{config} min-nodes={nodes}",
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            env=federation.env,
        )
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    if result.returncode != 0:
        sys.exit(f"run failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    marks = [float(m) for m in re.findall(r"bench-round \d+ ([0-9.]+)", result.stdout)]
    if len(marks) != rounds + 1:
        sys.exit(f"expected {rounds + 1} round marks, found {len(marks)}:\n{result.stdout}")
    per_round = [b - a for a, b in itertools.pairwise(marks)]
    model = params * 4
    moved = model * 3 * nodes  # 2K copies down (train, evaluate), K up
    copy, hashing = floor_seconds(moved)
    print(
        f"\nmodel {model / 1e6:.0f} MB float32 in {arrays} arrays, {nodes} SuperNodes, "
        f"{rounds} round(s)"
    )
    print(f"  run wall time (flwr run -> finished): {wall:.1f} s")
    print(
        "  seconds per round: "
        + ", ".join(f"{s:.2f}" for s in per_round)
        + f" (median {statistics.median(per_round):.2f})"
    )
    print(
        f"  floor for {moved / 1e6:.0f} MB moved once: copy {copy:.2f} s, "
        f"sha256 {hashing:.2f} s, both {copy + hashing:.2f} s"
    )
    for api, (down, up) in sorted(sampler.bytes_by_api().items()):
        print(
            f"  {api:11s} bytes per round: {down / rounds / 1e6:9.0f} MB down, "
            f"{up / rounds / 1e6:9.0f} MB up  ({(down + up) / rounds / model:.1f} models)"
        )
    print(
        f"  SuperLink object files: peak {sampler.disk_peak / 1e6:.0f} MB "
        f"({sampler.disk_peak / model:.1f} models)"
    )
    cpu = sampler.cpu_by_role()
    print("  CPU seconds per round (user + system):")
    for _, role in ROLES:
        user, system = cpu.get(role, (0.0, 0.0))
        print(f"    {role:10s} {user / rounds:6.2f} + {system / rounds:6.2f}")
    print(f"  peak RSS (one model = {model / 2**20:.0f} MiB):")
    for _, role in ROLES:
        peak = sampler.peaks.get(role, 0.0)
        print(f"    {role:10s} {peak:9.0f} MiB  ({peak * 2**20 / model:.2f} models)")
    print(
        f"    {'all':10s} {sampler.total_peak:9.0f} MiB  "
        f"({sampler.total_peak * 2**20 / model:.2f} models); anonymous memory of all "
        f"{sampler.anon_peak:.0f} MiB ({sampler.anon_peak * 2**20 / model:.2f} models)"
    )
    if timeline:
        print_timeline(sampler, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100:3,1000:1,10000:1", help="MB:rounds,...")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--arrays", type=int, default=10)
    parser.add_argument("--timeline", action="store_true", help="print CPU use per second")
    args = parser.parse_args()
    for item in args.sizes.split(","):
        mb, _, rounds = item.partition(":")
        run_size(float(mb), int(rounds or 1), args.nodes, args.arrays, args.timeline)


if __name__ == "__main__":
    main()
