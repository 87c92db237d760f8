"""One SuperLink serving many SuperNodes: memory, heartbeat latency, fan-out rounds, losses.

For each fleet size, starts a fresh SuperLink (no real SuperNodes) and, in processes of their
own (``--load-processes``, each with its share of the nodes), the load generator
`bench/_fleet_load.py`: N simulated SuperNodes on the real Fleet RPCs
(registration, heartbeats, long polls that acknowledge what they received, a reply pushed for
every instruction; N nodes over N / ``--nodes-per-channel`` connections, where real nodes
would each have their own). Once all N are registered the fleet idles for ``--settle`` seconds
(every node heartbeats at least once), then the fanout app (`bench/apps/fanout`) is submitted
with ``flwr run --stream``: its ServerApp sends, ``--rounds`` times, one small query to every
node (or, with ``--sample K``, to K nodes drawn afresh each round from the online ones, as a
strategy samples them) and waits for every reply, timing each round. The SuperLink's
resident memory (VmRSS; its child processes, the ServerApp among them, apart) is sampled
every 100 ms throughout.

Per size it prints: the SuperLink's peak RSS (and after registration), heartbeat latency
p50/p99/max (all of them, and those during the rounds), seconds per round, instructions lost,
instructions delivered twice, and every failed call by kind and status code; then a table of
all sizes. The targets of the issue: nothing lost, heartbeat p99 < 100 ms at 10,000 nodes, a
10,000-node round < 30 s, SuperLink RSS < 1 GiB.

Figures are printed only for a size whose run completed with every instruction answered
without error and whose load generator saw no failure a SuperNode does not ride out by backing
off (RESOURCE_EXHAUSTED and UNAVAILABLE are counted and shown; anything else, a dropped reply,
or a node the SuperLink forgot, is a failure). Otherwise it says what went wrong and exits 1.

    python bench/fleet_scale.py [--nodes 1000,5000,10000] [--rounds 1] [--sample 0]
                                [--settle 30] [--heartbeat-interval 30]
                                [--pull-mode stream|poll] [--ack-delay 0.5] [--wait 10]
                                [--nodes-per-channel 20] [--load-processes 2]
                                [--round-timeout 120] [--ready-timeout 300] [--dump DIR]

The load generator shares the machine (and its cores) with the SuperLink: its own CPU use and
the lag of its event loops are printed, since a lagging loop adds to the latencies it
measures (more processes: shorter queues on each loop).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corolla.common.config import read_ready_file
from corolla.common.errors import CorollaError
from corolla.deploy.local import LocalFederation, app_for_federation, terminate
from corolla.supernode.connection import ACK_DELAY

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fleet_load import quantiles

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "fanout"
LOAD = HERE / "_fleet_load.py"
FLWR = Path(sys.executable).parent / "flwr"
SAMPLE_EVERY = 0.1  # seconds between samples of the SuperLink's RSS
CHILDREN_EVERY = 10  # samples between those of its child processes' RSS
RIDDEN_OUT = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")  # a SuperNode backs off and retries
NODES_WAIT = 60.0  # the ServerApp's wait for the nodes to be online (they are, by then)
STOP_TIMEOUT = 30.0  # the load generator's stop: cancel, write its stats


class Failure(Exception):
    """The size's work did not succeed: what went wrong (no figures)."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    sample: int  # nodes per round (0: all)
    settle: float
    heartbeat_interval: float
    wait: float
    pull_mode: str
    ack_delay: float
    nodes_per_channel: int
    load_processes: int
    register_concurrency: int
    round_timeout: float
    ready_timeout: float
    dump: Path | None  # a directory for each size's raw figures (fleet-<N>.json)

    @property
    def run_timeout(self) -> float:
        """Of ``flwr run``: the nodes' wait, every round with its margins, start and stop."""
        return NODES_WAIT + self.rounds * (self.round_timeout + 15) + 60

    def per_round(self, nodes: int) -> int:
        """Instructions a round sends."""
        return min(self.sample, nodes) if self.sample else nodes


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        children = []
        for task in Path(f"/proc/{parent}/task").glob("*"):  # a child is its thread's
            with contextlib.suppress(OSError):
                children += [int(child) for child in (task / "children").read_text().split()]
        found += children
        todo += children
    return found


@dataclass(eq=False)
class RssSampler(threading.Thread):
    """Peak VmRSS of the SuperLink itself (every 100 ms) and of its descendants together
    (every second)."""

    pid: int
    peak: int = 0  # KiB
    children_peak: int = 0
    marks: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")

    def run(self) -> None:
        tick = 0
        while not self.done.wait(SAMPLE_EVERY):
            self.peak = max(self.peak, rss_kib(self.pid))
            tick += 1
            if tick % CHILDREN_EVERY == 0:  # one look per thread of the SuperLink: less often
                children = sum(rss_kib(child) for child in descendants(self.pid))
                self.children_peak = max(self.children_peak, children)

    def mark(self, name: str) -> None:
        self.marks[name] = rss_kib(self.pid)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


@dataclass(frozen=True)
class Figures:
    nodes: int
    registration_seconds: float
    rss_registered: int  # KiB
    rss_peak: int
    children_peak: int
    heartbeat: dict[str, float | int]  # all heartbeats: count, p50, p99, max (seconds)
    heartbeat_rounds: dict[str, float | int]  # those during the rounds
    round_seconds: list[float]
    sample_seconds: list[float]  # per round: the ServerApp's look at the nodes and its sample
    per_round: list[int]  # instructions each round sent
    # per round: seconds from its start until half / all of its instructions had arrived and
    # half / all of its replies were stored
    arrivals: list[tuple[float, float, float, float]]
    lost: int
    duplicates: int
    errors: dict[str, int]
    load_cpu: float  # the load generator's CPU seconds
    load_wall: float
    loop_lag: dict[str, float | int]
    loop_lag_rounds: dict[str, float | int]


@dataclass
class Outcome:
    """What one size's processes left behind, whether or not it went well."""

    run: subprocess.CompletedProcess[str] | None = None
    result: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None  # of all load generators together
    load_codes: list[int | None] = field(default_factory=list)
    load_log: str = ""  # the first failed one's, or else the first one's
    superlink_log: str = ""  # its warnings and errors


def shares(nodes: int, processes: int) -> list[int]:
    """``nodes`` split over at most ``processes`` load generators, as evenly as can be."""
    count = max(1, min(processes, nodes))
    return [nodes // count + (1 if index < nodes % count else 0) for index in range(count)]


def start_loads(
    nodes: int, fleet: str, work: Path, settings: Settings, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    """The load generators, each with its share of the nodes (and its files: ``load<i>.*``)."""
    loads: list[subprocess.Popen[bytes]] = []
    try:
        for index, share in enumerate(shares(nodes, settings.load_processes)):
            loads.append(start_load(index, share, fleet, work, settings, env))
    except BaseException:
        for load in loads:
            terminate(load)
        raise
    return loads


def start_load(
    index: int, nodes: int, fleet: str, work: Path, settings: Settings, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    duration = settings.ready_timeout + settings.settle + settings.run_timeout + 60
    command = [
        sys.executable,
        str(LOAD),
        "--fleet",
        fleet,
        "--nodes",
        str(nodes),
        "--nodes-per-channel",
        str(settings.nodes_per_channel),
        "--heartbeat-interval",
        str(settings.heartbeat_interval),
        "--wait",
        str(settings.wait),
        "--pull-mode",
        settings.pull_mode,
        "--ack-delay",
        str(settings.ack_delay),
        "--register-concurrency",
        str(settings.register_concurrency),
        "--duration",
        str(duration),
        "--seed",
        str(index),
        "--ready-file",
        str(work / f"load{index}.ready.json"),
        "--stats-file",
        str(work / f"load{index}.stats.json"),
    ]
    with (work / f"load{index}.log").open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )


def wait_ready(loads: list[subprocess.Popen[bytes]], work: Path, timeout: float) -> float:
    """Once every load generator's nodes are all registered: the seconds that took (the
    slowest generator's, each counted from its own start)."""
    deadline = time.monotonic() + timeout
    seconds: dict[int, float] = {}
    while time.monotonic() < deadline:
        for index, load in enumerate(loads):
            ready = read_ready_file(work / f"load{index}.ready.json")
            if ready is not None and ready.get("pid") == load.pid:
                seconds[index] = float(ready["registration_seconds"])
            elif load.poll() is not None:
                raise Failure(f"a load generator exited ({load.returncode}) before it was ready")
        if len(seconds) == len(loads):
            return max(seconds.values())
        time.sleep(0.1)
    raise Failure(f"the load generators' nodes were not all registered after {timeout:g} s")


def idle(loads: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Let the fleet run for ``seconds``; no load generator may exit meanwhile."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for load in loads:
            if load.poll() is not None:
                raise Failure(f"a load generator exited ({load.returncode}) while settling")
        time.sleep(min(left, 0.5))


def submit(
    app: Path, nodes: int, result_file: Path, settings: Settings, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    config = (
        f"nodes={nodes} rounds={settings.rounds} sample={settings.sample} "
        f"wait-timeout={NODES_WAIT} "
        f"round-timeout={settings.round_timeout} result-file='{result_file}'"
    )
    command = [str(FLWR), "run", str(app), "local", "--stream", "--run-config", config]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=settings.run_timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise Failure(f"flwr run did not finish within {settings.run_timeout:.0f} s") from exc


def stop_loads(loads: list[subprocess.Popen[bytes]], outcome: Outcome, work: Path) -> None:
    """SIGTERM: each cancels its calls and writes its stats; collect them (merged), their exit
    codes and a log (the first failed one's)."""
    for load in loads:
        if load.poll() is None:
            load.send_signal(signal.SIGTERM)
    collected: list[dict[str, Any]] = []
    for index, load in enumerate(loads):
        try:
            code: int | None = load.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = terminate(load)
        outcome.load_codes.append(code)
        with contextlib.suppress(OSError, ValueError):
            if (stats := read_ready_file(work / f"load{index}.stats.json")) is not None:
                collected.append(stats)
        if code != 0 or not outcome.load_log:
            with contextlib.suppress(OSError):
                outcome.load_log = (work / f"load{index}.log").read_text(errors="replace")
    if len(collected) == len(loads):
        outcome.stats = merge_stats(collected)
    with contextlib.suppress(OSError):
        text = (work / "superlink.log").read_text(errors="replace")
        outcome.superlink_log = "\n".join(
            line for line in text.splitlines() if " WARNING " in line or " ERROR " in line
        )


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats of several load generators as those of one (`_fleet_load.Stats.to_json`)."""
    merged: dict[str, Any] = {
        "started": min(p["started"] for p in parts),
        "stopped": max(p["stopped"] for p in parts),
        "calls": {},
        "errors": {},
        "error_details": {},
    }
    for key in SUMMED:
        merged[key] = sum(p[key] for p in parts)
    for key in JOINED:
        merged[key] = sorted(item for p in parts for item in p[key])
    for p in parts:
        for key in ("calls", "errors"):
            for what, count in p[key].items():
                merged[key][what] = merged[key].get(what, 0) + count
        for what, details in p["error_details"].items():
            merged["error_details"].setdefault(what, details)
    merged["heartbeat_latency"] = quantiles([s for _, s in merged["heartbeats"]])
    merged["loop_lag"] = quantiles([s for _, s in merged["lags"]])
    return merged


SUMMED = (
    "cpu_seconds",
    "registered",
    "reregistered",
    "received",
    "duplicates",
    "replies_ok",
    "replies_already_stored",
    "replies_dropped",
)
JOINED = ("heartbeats", "received_at", "replied_at", "lags")


def run_size(nodes: int, settings: Settings) -> Figures:
    outcome = Outcome()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="corolla-fleet-")))
        federation = stack.enter_context(LocalFederation(work, num_nodes=0))
        assert federation.superlink is not None  # started
        sampler = RssSampler(federation.superlink.process.pid)
        sampler.start()
        stack.callback(sampler.stop)
        app = app_for_federation(APP, work / "app", federation.exec)
        loads = start_loads(nodes, federation.fleet, work, settings, federation.env)
        for load in loads:
            stack.callback(terminate, load)  # whatever happens: ended and reaped
        try:
            registration = wait_ready(loads, work, settings.ready_timeout)
            sampler.mark("registered")
            idle(loads, settings.settle)
            result_file = work / "result.json"
            outcome.run = submit(app, nodes, result_file, settings, federation.env)
            with contextlib.suppress(OSError, ValueError):
                outcome.result = json.loads(result_file.read_text())
        except Failure as exc:
            stop_loads(loads, outcome, work)
            raise Failure(f"{exc}\n{diagnosis(nodes, settings, outcome)}") from None
        stop_loads(loads, outcome, work)
        sampler.stop()
        if settings.dump is not None:
            settings.dump.mkdir(parents=True, exist_ok=True)
            raw = {"stats": outcome.stats, "result": outcome.result}
            (settings.dump / f"fleet-{nodes}.json").write_text(json.dumps(raw))
            with contextlib.suppress(OSError):
                shutil.copyfile(work / "superlink.log", settings.dump / f"superlink-{nodes}.log")
        problems = check(nodes, settings, outcome)
        if problems:
            raise Failure("\n".join([*problems, diagnosis(nodes, settings, outcome)]))
        return figures(nodes, registration, sampler, outcome)


def unexpected(errors: dict[str, int]) -> dict[str, int]:
    return {what: n for what, n in errors.items() if what.split()[-1] not in RIDDEN_OUT}


def lost_in(result: dict[str, Any]) -> int:
    return sum(
        r["missing"] + sum(r["errors"].values()) + r["unusable"] for r in result.get("rounds", [])
    )


def check(nodes: int, settings: Settings, outcome: Outcome) -> list[str]:
    """What went wrong, if anything (empty: the figures may be printed)."""
    problems = []
    run, result, stats = outcome.run, outcome.result, outcome.stats
    if run is None or run.returncode != 0:
        code = None if run is None else run.returncode
        problems.append(f"the fanout run did not complete (flwr run exited {code})")
    if result is None:
        problems.append("the ServerApp wrote no result")
    else:
        if result["nodes"] != nodes:
            problems.append(f"the ServerApp saw {result['nodes']} nodes, not {nodes}")
        if len(result["rounds"]) != settings.rounds:
            problems.append(f"{len(result['rounds'])} of {settings.rounds} rounds ran")
        if lost := lost_in(result):
            problems.append(f"{lost} instructions lost")
    if any(code != 0 for code in outcome.load_codes):
        problems.append(f"the load generators exited with codes {outcome.load_codes}")
    if stats is None:
        problems.append("a load generator wrote no stats")
    else:
        if stats["registered"] != nodes:
            problems.append(f"{stats['registered']} of {nodes} nodes registered")
        if bad := unexpected(stats["errors"]):
            problems.append(f"failed calls a SuperNode does not ride out: {bad}")
        if stats["replies_dropped"]:
            problems.append(f"{stats['replies_dropped']} replies dropped by the nodes")
        if stats["reregistered"]:
            problems.append(f"the SuperLink forgot {stats['reregistered']} live nodes")
        answered = stats["replies_ok"] + stats["replies_already_stored"]
        sent = settings.per_round(nodes) * settings.rounds
        if stats["received"] != sent or answered != stats["received"]:
            problems.append(
                f"the nodes received {stats['received']} instructions and answered "
                f"{answered}, of {sent} sent"
            )
    return problems


def diagnosis(nodes: int, settings: Settings, outcome: Outcome) -> str:
    """What the processes said, to tell why (not figures)."""
    lines = [f"  ({nodes} nodes, {settings.rounds} round(s))"]
    if outcome.result is not None:
        for r in outcome.result["rounds"]:
            lines.append(
                f"  round {r['round']}: {r['replies']} replies of {r['sent']} sent, missing "
                f"{r['missing']}, error replies {r['errors'] or 'none'} "
                f"{r['error_reasons'] or ''}, unusable {r['unusable']}"
            )
    if outcome.stats is not None:
        s = outcome.stats
        lines.append(
            f"  load generator: {s['registered']} registered, {s['received']} instructions "
            f"received, {s['duplicates']} duplicates, replies ok {s['replies_ok']} "
            f"(already stored {s['replies_already_stored']}), dropped {s['replies_dropped']}"
        )
        lines.append(f"  calls: {s['calls']}")
        lines.append(f"  failed calls: {s['errors'] or 'none'}")
        for what, details in s.get("error_details", {}).items():
            lines.append(f"    {what}, the first: {details}")
    if outcome.run is not None and outcome.run.returncode != 0:
        lines.append(f"  flwr run output (last lines):\n{tail(outcome.run.stdout, 12)}")
        if outcome.run.stderr.strip():
            lines.append(tail(outcome.run.stderr, 10))
    if any(code not in (0, None) for code in outcome.load_codes) or outcome.stats is None:
        lines.append(f"  load generator output (last lines):\n{tail(outcome.load_log, 25)}")
    if outcome.superlink_log:
        lines.append(f"  SuperLink warnings and errors (last):\n{tail(outcome.superlink_log, 15)}")
    return "\n".join(lines)


def tail(text: str, lines: int) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines()[-lines:])


def during(samples: list[list[float]], rounds: list[dict[str, Any]]) -> Iterator[float]:
    spans = [(r["started_at"], r["started_at"] + r["seconds"]) for r in rounds]
    for at, seconds in samples:
        if any(start <= at <= end for start, end in spans):
            yield seconds


def figures(nodes: int, registration: float, sampler: RssSampler, outcome: Outcome) -> Figures:
    assert outcome.stats is not None and outcome.result is not None  # checked
    stats, rounds = outcome.stats, outcome.result["rounds"]
    samples = stats["heartbeats"]
    return Figures(
        nodes=nodes,
        registration_seconds=registration,
        rss_registered=sampler.marks["registered"],
        rss_peak=sampler.peak,
        children_peak=sampler.children_peak,
        heartbeat=quantiles([seconds for _, seconds in samples]),
        heartbeat_rounds=quantiles(list(during(samples, rounds))),
        round_seconds=[r["seconds"] for r in rounds],
        sample_seconds=[r.get("sample_seconds", 0.0) for r in rounds],
        per_round=[r["sent"] for r in rounds],
        arrivals=[
            arrivals(stats, r, rounds[n + 1]["started_at"] if n + 1 < len(rounds) else None)
            for n, r in enumerate(rounds)
        ],
        lost=lost_in(outcome.result),
        duplicates=stats["duplicates"],
        errors=stats["errors"],
        load_cpu=stats["cpu_seconds"],
        load_wall=stats["stopped"] - stats["started"],
        loop_lag=stats["loop_lag"],
        loop_lag_rounds=quantiles(list(during(stats["lags"], rounds))),
    )


def arrivals(
    stats: dict[str, Any], round_: dict[str, Any], next_start: float | None
) -> tuple[float, float, float, float]:
    """Seconds from the round's start until half and all of its instructions had reached their
    nodes, and half and all of its replies were stored (what happened up to a second after
    the round, or until the next round began)."""
    start = round_["started_at"]
    end = start + round_["seconds"] + 1
    if next_start is not None:
        end = min(end, next_start)

    def half_and_all(times: list[float]) -> tuple[float, float]:
        inside = sorted(t - start for t in times if start <= t <= end)
        return (inside[len(inside) // 2], inside[-1]) if inside else (0.0, 0.0)

    return (*half_and_all(stats["received_at"]), *half_and_all(stats["replied_at"]))


def ms(q: dict[str, float | int], key: str) -> str:
    return f"{cell(q, key)} ms" if key in q else "-"


def report(f: Figures, settings: Settings) -> None:
    channels = -(-f.nodes // settings.nodes_per_channel)
    pull = (
        "one open stream each"
        if settings.pull_mode == "stream"
        else f"long polls of {settings.wait:g} s"
    )
    print(
        f"\n{f.nodes} simulated SuperNodes over {channels} connections (heartbeat every "
        f"{settings.heartbeat_interval:g} s, {pull}), "
        f"{settings.rounds} round(s)"
        + (f" to {settings.per_round(f.nodes)} nodes sampled each" if settings.sample else "")
    )
    print(f"  registration: {f.nodes} nodes in {f.registration_seconds:.1f} s")
    print(
        f"  SuperLink RSS: peak {f.rss_peak / 1024:.0f} MiB "
        f"({f.rss_registered / 1024:.0f} MiB once all were registered); "
        f"its child processes (ServerApp, spare) together: peak {f.children_peak / 1024:.0f} MiB"
    )
    for label, q in (("all", f.heartbeat), ("during the rounds", f.heartbeat_rounds)):
        print(
            f"  heartbeat latency, {label} (n={q['count']:.0f}): p50 {ms(q, 'p50')}, "
            f"p99 {ms(q, 'p99')}, max {ms(q, 'max')}"
        )
    print("  seconds per round: " + ", ".join(f"{s:.2f}" for s in f.round_seconds))
    if settings.sample:
        print(
            "  sampling (online ids and the sample) per round: "
            + ", ".join(f"{s * 1000:.1f} ms" for s in f.sample_seconds)
        )
    for number, (got_half, got_all, stored_half, stored_all) in enumerate(f.arrivals, 1):
        print(
            f"    round {number}: instructions at their nodes, half by {got_half:.2f} s and all "
            f"by {got_all:.2f} s; replies stored, half by {stored_half:.2f} s and all by "
            f"{stored_all:.2f} s"
        )
    print(f"  instructions lost: {f.lost} of {sum(f.per_round)}")
    print(f"  instructions delivered again (duplicates): {f.duplicates}")
    errors = ", ".join(f"{what} {n}" for what, n in sorted(f.errors.items())) or "none"
    print(f"  failed calls (retried after a backoff): {errors}")
    lag, lag_rounds = f.loop_lag, f.loop_lag_rounds
    print(
        f"  load generator ({settings.load_processes} process(es)): {f.load_cpu:.1f} CPU s in "
        f"{f.load_wall:.0f} s ({f.load_cpu / f.load_wall:.2f} cores); its loops' lag p99 "
        f"{ms(lag, 'p99')}, "
        f"max {ms(lag, 'max')}; during the rounds p99 {ms(lag_rounds, 'p99')}, "
        f"max {ms(lag_rounds, 'max')}"
    )


def table(all_figures: list[Figures]) -> None:
    print(
        "\ntargets: 0 lost; heartbeat p99 < 100 ms at 10,000 nodes; a 10,000-node round < 30 s; "
        "SuperLink RSS < 1 GiB"
    )
    print(
        f"{'nodes':>7} {'RSS MiB':>8} {'hb p50 ms':>10} {'hb p99 ms':>10} {'hb max ms':>10} "
        f"{'slowest round s':>16} {'lost':>5} {'dup':>5} {'failed calls':>13}"
    )
    for f in all_figures:
        hb = f.heartbeat
        print(
            f"{f.nodes:>7} {f.rss_peak / 1024:>8.0f} {cell(hb, 'p50'):>10} {cell(hb, 'p99'):>10} "
            f"{cell(hb, 'max'):>10} {max(f.round_seconds):>16.2f} {f.lost:>5} "
            f"{f.duplicates:>5} {sum(f.errors.values()):>13}"
        )


def cell(q: dict[str, float | int], key: str) -> str:
    return f"{q[key] * 1000:.1f}" if key in q else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1000,5000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--sample", type=int, default=0, help="nodes per round, sampled afresh (0: all)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds idle before the run (default: one heartbeat interval)",
    )
    parser.add_argument("--heartbeat-interval", type=float, default=30.0, help="seconds")
    parser.add_argument("--wait", type=float, default=10.0, help="long-poll wait, seconds")
    parser.add_argument(
        "--pull-mode",
        choices=("stream", "poll"),
        default="stream",
        help="how the simulated nodes get their work (as the SuperNode's --pull-mode)",
    )
    parser.add_argument(
        "--ack-delay",
        type=float,
        default=ACK_DELAY,
        help="seconds a node holds an acknowledgement back for its reply to carry (0: at once)",
    )
    parser.add_argument("--nodes-per-channel", type=int, default=20)
    parser.add_argument(
        "--load-processes", type=int, default=2, help="load generator processes (nodes split)"
    )
    parser.add_argument("--register-concurrency", type=int, default=64)
    parser.add_argument("--round-timeout", type=float, default=120.0, help="seconds (the TTL)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="for registration")
    parser.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="directory for each size's raw figures: the load generators' merged stats (every "
        "heartbeat and loop-lag sample with its time), the ServerApp's result, the SuperLink's "
        "log",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    if min(sizes) < 1 or args.rounds < 1 or args.load_processes < 1:
        parser.error("--nodes, --rounds and --load-processes must be at least 1")
    if args.sample < 0:
        parser.error("--sample must be 0 (all nodes) or more")
    settle = args.heartbeat_interval if args.settle is None else args.settle
    settings = Settings(
        rounds=args.rounds,
        sample=args.sample,
        settle=settle,
        heartbeat_interval=args.heartbeat_interval,
        wait=args.wait,
        pull_mode=args.pull_mode,
        ack_delay=args.ack_delay,
        nodes_per_channel=args.nodes_per_channel,
        load_processes=args.load_processes,
        register_concurrency=args.register_concurrency,
        round_timeout=args.round_timeout,
        ready_timeout=args.ready_timeout,
        dump=args.dump,
    )
    done: list[Figures] = []
    try:
        for nodes in sizes:
            done.append(run_size(nodes, settings))
            report(done[-1], settings)
    except Failure as exc:
        sys.exit(f"\nfleet of {nodes} nodes: FAILED, no figures for it:\n{exc}")
    except CorollaError as exc:  # the SuperLink did not start
        sys.exit(f"\nfleet of {nodes} nodes: FAILED to start: {exc}")
    except KeyboardInterrupt:
        sys.exit("interrupted (everything started was stopped)")
    table(done)


if __name__ == "__main__":
    main()
