"""`SurvivorFreezer`: full collections skip what survived the last one, until a collection of
everything frees the cyclic garbage among it."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from corolla.common.collector import SurvivorFreezer

pytestmark = pytest.mark.timeout(30)


class Cyclic:
    """An object that holds itself: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def started() -> Iterator[list[SurvivorFreezer]]:
    """Freezers the test starts; each is stopped afterwards (collection as it was)."""
    freezers: list[SurvivorFreezer] = []
    yield freezers
    for freezer in freezers:
        freezer.stop()
    assert gc.get_freeze_count() == 0


def start(started: list[SurvivorFreezer], full_every: float = 3600.0) -> SurvivorFreezer:
    freezer = SurvivorFreezer(full_every)
    started.append(freezer)
    freezer.start()
    return freezer


@pytest.mark.parametrize("generation", [1, 2])
def test_the_survivors_of_a_collection_of_generation_1_or_2_are_frozen(
    started: list[SurvivorFreezer], generation: int
) -> None:
    start(started)
    gc.collect(generation)
    assert gc.get_freeze_count() > 0


def test_a_collection_of_generation_0_freezes_nothing(started: list[SurvivorFreezer]) -> None:
    gc.disable()  # no automatic collection of an older generation meanwhile
    try:
        start(started)
        gc.collect(0)
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_frozen_cyclic_garbage_waits_for_the_collection_of_everything(
    started: list[SurvivorFreezer],
) -> None:
    freezer = start(started)
    survivor = Cyclic()
    ref = weakref.ref(survivor)
    gc.collect()  # it survives: frozen
    del survivor
    gc.collect()
    assert ref() is not None  # garbage now, but frozen: not looked at
    assert freezer.collect_all() >= 1
    assert ref() is None
    assert gc.get_freeze_count() > 0  # the survivors of that one are frozen again


def test_everything_is_collected_every_full_every_seconds(started: list[SurvivorFreezer]) -> None:
    survivor = Cyclic()
    ref = weakref.ref(survivor)
    start(started, full_every=0.01)
    gc.collect()
    del survivor
    deadline = time.monotonic() + 10
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ref() is None


def test_stopping_gives_back_collection_as_it_was(started: list[SurvivorFreezer]) -> None:
    freezer = SurvivorFreezer()
    freezer.start()
    gc.collect()
    freezer.stop()
    assert gc.get_freeze_count() == 0
    survivor = Cyclic()
    ref = weakref.ref(survivor)
    gc.collect()
    del survivor
    gc.collect()
    assert ref() is None  # no longer frozen


def test_full_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="full_every"):
        SurvivorFreezer(0)
