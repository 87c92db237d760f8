"""Follow a run's logs until it ends, and turn how it ended into the command's outcome."""

from __future__ import annotations

import sys
import time

from corolla.cli.exec_client import COMPLETED, STOPPED, ExecClient, RunStatus
from corolla.common.errors import CorollaError

RESUME_PAUSE = 1.0  # before reopening a log stream the server closed while the run went on


class RunFailed(CorollaError):
    """The run ended without completing (it failed)."""


class RunStopped(CorollaError):
    """The run was stopped before it completed."""


def print_lines(lines: tuple[str, ...]) -> None:
    for line in lines:
        print(line.removesuffix("\n"))
    sys.stdout.flush()


def print_logs(client: ExecClient, run_id: int) -> None:
    """Print the log lines the run has so far."""
    for batch in client.stream_logs(run_id, follow=False):
        print_lines(batch.lines)


def follow_logs(client: ExecClient, run_id: int) -> RunStatus:
    """Print log lines as they come until the run ends; returns its final status.

    Should the server end the stream while the run goes on, it is reopened where it stopped.
    """
    after = 0
    while True:
        status: RunStatus | None = None
        for batch in client.stream_logs(run_id, after=after, follow=True):
            print_lines(batch.lines)
            after = max(after, batch.next)
            status = batch.status
        if status is not None and status.finished:
            return status
        status = client.get_run(run_id).status
        if status.finished:  # ended between the two calls: print the lines not seen yet
            for batch in client.stream_logs(run_id, after=after, follow=False):
                print_lines(batch.lines)
            return status
        time.sleep(RESUME_PAUSE)


def status_line(run_id: int, status: RunStatus) -> str:
    """``Run 7 finished: completed`` / ``Run 7 finished: failed (ServerApp raised ...)``."""
    outcome = status.sub_status or status.status
    reason = _reason(status)
    head = f"Run {run_id} finished: {outcome}" if status.finished else f"Run {run_id}: {outcome}"
    return f"{head} ({reason})" if reason else head


def check_completed(run_id: int, status: RunStatus) -> None:
    """Raise `RunStopped` or `RunFailed` unless the run completed."""
    if status.sub_status == COMPLETED:
        return
    reason = _reason(status)
    suffix = f": {reason}" if reason else ""
    if status.sub_status == STOPPED:
        raise RunStopped(f"run {run_id} was stopped{suffix}")
    raise RunFailed(f"run {run_id} did not complete ({status.sub_status or 'unknown'}){suffix}")


def _reason(status: RunStatus) -> str:
    """The last line of the details (for a traceback: the exception)."""
    lines = status.details.strip().splitlines()
    return lines[-1].strip() if lines else ""
