"""A flood of deferred calls against a small bound: nothing is lost, the bound holds."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings

import after_response

from . import recorder

FLOOD = 100_000
BOUND = 1_000


class Sampler(threading.Thread):
    """Samples the backlog while the flood runs (the bound must hold at every sample)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self.inconsistent: list[after_response.Stats] = []

    def run(self) -> None:
        while not self.stop.wait(0.001):
            stats = after_response.stats()
            self.peak = max(self.peak, stats.backlog)
            self.samples += 1
            if stats.accepted != stats.waiting + stats.backlog + stats.running + stats.settled:
                self.inconsistent.append(stats)


@pytest.mark.parametrize("policy", ["block", "drop"])
def test_a_flood_against_the_bound(policy):
    counter = [0]
    lock = threading.Lock()

    def count() -> None:
        with lock:
            counter[0] += 1

    with override_settings(
        AFTER_RESPONSE_MAX_PENDING=BOUND,
        AFTER_RESPONSE_WHEN_FULL=policy,
        AFTER_RESPONSE_BLOCK_TIMEOUT=recorder.WAIT,
    ):
        sampler = Sampler()
        sampler.start()
        try:
            for _ in range(FLOOD):
                after_response.defer(count)
            assert after_response.drain(60)
        finally:
            sampler.stop.set()
            sampler.join(recorder.WAIT)
        stats = after_response.stats()
    assert stats.accepted == FLOOD
    assert stats.done == counter[0]
    assert stats.done + stats.dropped == FLOOD  # every call ran or was counted as dropped
    assert sampler.peak <= BOUND and sampler.samples > 10
    assert sampler.inconsistent == []
    if policy == "block":
        assert stats.dropped == 0
