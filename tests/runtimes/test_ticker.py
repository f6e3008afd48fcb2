"""The threaded connector's keep-alive ticker (runtimes/blocking/ticker.py): one thread, beats
at the interval until they return False, nothing left after close()."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from runtimes.blocking.ticker import Ticker


def test_beats_at_the_interval_until_false() -> None:
    ticker = Ticker(0.05)
    times: list[float] = []
    done = threading.Event()

    def beat() -> bool:
        times.append(time.monotonic())
        if len(times) == 4:
            done.set()
            return False
        return True

    start = time.monotonic()
    ticker.add(beat)
    assert done.wait(5)
    time.sleep(0.2)
    assert len(times) == 4  # dropped after its False
    assert times[0] - start >= 0.045  # the first beat waits one interval
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.045 for gap in gaps), gaps
    assert len(ticker) == 0
    ticker.close()


def test_a_failing_beat_is_dropped_and_the_others_go_on() -> None:
    ticker = Ticker(0.03)
    good = []

    def bad() -> bool:
        raise RuntimeError("bug")

    ticker.add(bad)
    ticker.add(lambda: good.append(1) is None)
    deadline = time.monotonic() + 5
    while len(good) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(ticker) == 1
    ticker.close()


def test_close_drops_every_beat_and_ends_the_thread() -> None:
    ticker = Ticker(0.02, name="tokios-ticker-test")
    calls = []
    ticker.add(lambda: calls.append(1) is None)
    time.sleep(0.1)
    ticker.close()
    seen = len(calls)
    assert seen >= 1
    time.sleep(0.1)
    assert len(calls) == seen
    assert not any(t.name == "tokios-ticker-test" for t in threading.enumerate())
    ticker.add(lambda: calls.append(1) is None)  # ignored once closed
    time.sleep(0.06)
    assert len(calls) == seen


def test_no_thread_until_the_first_beat_and_a_positive_interval() -> None:
    before = {t.name for t in threading.enumerate()}
    ticker = Ticker(1.0, name="tokios-ticker-lazy")
    assert "tokios-ticker-lazy" not in {t.name for t in threading.enumerate()} - before
    ticker.close()
    with pytest.raises(ValueError, match="positive"):
        Ticker(0)
