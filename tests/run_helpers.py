"""A run made ready in a SuperLink's state for tests that call its APIs as an app process."""

from __future__ import annotations

from corolla.superlink.state import LinkState, RunStatus


def running_run(state: LinkState) -> tuple[int, str]:
    """A new run (of a stand-in FAB) in ``running``, and an app token for it."""
    state.store_fab("f" * 64, b"fab")
    run_id = state.create_run(
        fab_id="p/app", fab_version="1", fab_hash="f" * 64, override_config={}, run_config={}
    )
    state.update_run_status(run_id, RunStatus.STARTING)
    state.update_run_status(run_id, RunStatus.RUNNING)
    return run_id, state.create_token(run_id)
