"""`Runs`: the one owner of the run lifecycle on the SuperLink.

Every status change (submit, start, running, finish, fail, stop, re-queue) goes through here;
the state layer refuses any change `TRANSITIONS` does not allow, and this module turns a refused
change into a plain answer (``False``) for the callers that race (a stop against a start, a
finish after a stop). It also writes the user-facing side of each change: the run's log line
and the ``details`` that ``flwr ls`` shows.
"""

from __future__ import annotations

import logging

from corolla.common.errors import InvalidArgument
from corolla.common.protocol import check_num_supernodes
from corolla.fab import AppConfig, FabLimits, check_fab_size, inspect_fab, verify_fab
from corolla.records.context import UserConfig
from corolla.superlink.state import (
    IllegalTransition,
    LinkState,
    RunRecord,
    RunStatus,
    SubStatus,
)

log = logging.getLogger(__name__)

STOPPED_BY_USER = "stopped by user"
MAX_RESUMES = 3  # crash-resumes of one run by one SuperLink before it fails for good
RESUMED = "resumed from round"
REQUEUED = "; the run "  # in the details of a re-queued run: "<reason>; the run resumes ..."
NOTE_SEPARATOR = " | "


def queued_details(ahead: int) -> str:
    """What ``flwr ls`` says of a run waiting for a free ServerApp slot."""
    return f"queued ({ahead} ahead)" if ahead > 0 else "queued (next)"


def merge_run_config(defaults: UserConfig, overrides: UserConfig) -> UserConfig:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise InvalidArgument(f"unknown run-config keys: {', '.join(unknown)} (known: {known})")
    return {**defaults, **overrides}


def check_fab(content: bytes, fab_hash: str, limits: FabLimits | None = None) -> AppConfig:
    """Verify the hash and check every member as an install would, without writing anything
    (a zip bomb costs no disk): a malformed or oversized FAB is refused up front."""
    if not content:
        raise InvalidArgument("StartRun without a FAB")
    limits = limits or FabLimits()
    check_fab_size(content, limits)  # before hashing a huge one
    verify_fab(content, fab_hash)
    return inspect_fab(content, limits=limits)


class Runs:
    """Lifecycle operations on the runs of one `LinkState`."""

    def __init__(self, state: LinkState, *, fab_limits: FabLimits | None = None) -> None:
        self.state = state
        self.fab_limits = fab_limits or FabLimits()
        self._resumes: dict[int, int] = {}

    # -- submitted by a user ---------------------------------------------------------------------
    def submit(
        self,
        fab_content: bytes,
        fab_hash: str,
        override_config: UserConfig,
        federation: str,
        *,
        owner: str = "",
        federation_options: UserConfig | None = None,
    ) -> int:
        """Check the FAB, the run config and the federation options, store them; the run is
        ``pending`` (a simulation run if the options hold ``options.num-supernodes``)."""
        options = dict(federation_options or {})
        num_supernodes = check_num_supernodes(options)
        app = check_fab(fab_content, fab_hash, self.fab_limits)
        run_config = merge_run_config(dict(app.run_config), override_config)
        self.state.store_fab(fab_hash, fab_content)
        run_id = self.state.create_run(
            fab_id=f"{app.publisher}/{app.name}",
            fab_version=app.version,
            fab_hash=fab_hash,
            override_config=override_config,
            run_config=run_config,
            federation=federation,
            owner=owner,
            federation_options=options,
        )
        by = f" by {owner}" if owner else ""
        sim = f", simulation of {num_supernodes} SuperNodes" if num_supernodes else ""
        log.info(
            "run %d submitted%s (%s/%s %s%s)",
            run_id,
            by,
            app.publisher,
            app.name,
            app.version,
            sim,
        )
        return run_id

    def stop(self, run_id: int) -> bool:
        """Stop the run for its user; False if it had finished already."""
        if not self._finish(run_id, SubStatus.STOPPED, STOPPED_BY_USER):
            self.state.get_run(run_id)  # NotFound for an unknown id
            return False
        self.state.append_logs(run_id, [f"run stopped: {STOPPED_BY_USER}"])
        log.info("run %d stopped by user", run_id)
        return True

    # -- driven by the launcher / dispatcher ----------------------------------------------------
    def start(self, run_id: int) -> bool:
        """``pending -> starting``; False if the run is no longer pending (e.g. stopped)."""
        checkpoint = self.state.get_checkpoint(run_id)
        details = f"{RESUMED} {checkpoint[0]}" if checkpoint else ""
        try:
            self.state.update_run_status(
                run_id, RunStatus.STARTING, details=details, expected=RunStatus.PENDING
            )
        except IllegalTransition as exc:
            log.info("run %d not started: %s", run_id, exc)
            return False
        return True

    def mark_running(self, run_id: int) -> RunRecord:
        """``starting -> running`` when the ServerApp process pulls its inputs (idempotent)."""
        run = self.state.get_run(run_id)
        if run.status == RunStatus.STARTING:
            keep = run.details if run.details.startswith(RESUMED) else ""
            run = self.state.update_run_status(
                run_id, RunStatus.RUNNING, details=keep, expected=RunStatus.STARTING
            )
        return run

    def finish(self, run_id: int, sub_status: str, details: str) -> bool:
        """The ServerApp reports how the run ended; False if it had finished already."""
        if sub_status not in (SubStatus.COMPLETED, SubStatus.FAILED):
            raise InvalidArgument(f"sub_status must be completed or failed, got {sub_status!r}")
        if not details:  # keep "resumed from round N" on a run that completed after a resume
            run = self.state.get_run(run_id)
            details = run.details if run.details.startswith(RESUMED) else ""
        if not self._finish(run_id, sub_status, details):
            return False
        if sub_status == SubStatus.FAILED:
            self.state.append_logs(run_id, [f"ERROR run failed: {details}"])
        log.info("run %d finished: %s %s", run_id, sub_status, details.splitlines()[:1])
        return True

    def fail(self, run_id: int, reason: str) -> bool:
        """Fail the run with ``reason`` (shown by ``flwr ls`` and ``flwr log``)."""
        if not self._finish(run_id, SubStatus.FAILED, reason):
            return False
        self.state.append_logs(run_id, [f"ERROR run failed: {reason}"])
        log.warning("run %d failed: %s", run_id, reason.splitlines()[0] if reason else "")
        return True

    def requeue(self, run_id: int, reason: str) -> bool:
        """Back to ``pending`` (new tokens): the run starts again, from its checkpoint if any."""
        checkpoint = self.state.get_checkpoint(run_id)
        where = f"resumes from round {checkpoint[0]}" if checkpoint else "starts over"
        details = f"{reason}{REQUEUED}{where}"
        try:
            self.state.update_run_status(run_id, RunStatus.PENDING, details=details)
        except IllegalTransition:
            return False
        self.state.append_logs(run_id, [f"WARNING {details}"])
        log.warning("run %d re-queued: %s", run_id, details)
        return True

    def note(self, run: RunRecord, note: str) -> None:
        """Say in ``flwr ls`` why a pending run waits (``queued (n ahead)``, waiting for an
        app process); a re-queue reason stays in front of it. Written only when it changes."""
        reason = run.details.split(NOTE_SEPARATOR)[0] if REQUEUED in run.details else ""
        text = f"{reason}{NOTE_SEPARATOR}{note}" if reason else note
        if run.details != text:
            self.state.annotate_run(run.run_id, text)

    def lost_app(self, run_id: int, reason: str) -> None:
        """The run's ServerApp process is gone: resume from the checkpoint, else fail."""
        checkpoint = self.state.get_checkpoint(run_id)
        resumes = self._resumes.get(run_id, 0)
        if checkpoint is not None and resumes < MAX_RESUMES:
            self._resumes[run_id] = resumes + 1
            self.requeue(run_id, reason.splitlines()[0])
            return
        if checkpoint is not None:
            reason = f"{reason}\n(gave up after {MAX_RESUMES} resumes)"
        self.fail(run_id, reason)

    def _finish(self, run_id: int, sub_status: str, details: str) -> bool:
        try:
            self.state.update_run_status(run_id, RunStatus.FINISHED, sub_status, details)
        except IllegalTransition:
            return False
        self._resumes.pop(run_id, None)
        return True
