import threading
import time

import numpy as np
import pytest

from app.live.ring_buffer import FramePacer, RingBuffer


def test_concurrent_producer_consumer_no_lost_or_repeated_frames():
    buf: RingBuffer[np.ndarray] = RingBuffer(capacity=4)
    n = 2000
    high_water = []

    def produce():
        for i in range(n):
            # frames carry their index; each is a fresh array like a generated MPI frame
            assert buf.put(np.full(16, i, dtype=np.int64))
            high_water.append(len(buf))

    seen = []
    producer = threading.Thread(target=produce)
    producer.start()
    rng = np.random.default_rng(0)
    while len(seen) < n:
        item = buf.get_nowait()
        if item is None:
            time.sleep(0.0001 * rng.random())
            continue
        assert np.all(item == item[0])
        seen.append(int(item[0]))
    producer.join(timeout=10)
    assert seen == list(range(n))  # in order, none lost, none repeated
    assert max(high_water) <= 4  # bounded memory
    assert buf.produced == buf.consumed == n


def test_put_blocks_when_full_and_close_releases_producer():
    buf: RingBuffer[int] = RingBuffer(capacity=2)
    assert buf.put(1) and buf.put(2)
    assert buf.put(3, timeout=0.05) is False  # full: times out rather than dropping
    result = []
    t = threading.Thread(target=lambda: result.append(buf.put(4)))
    t.start()
    time.sleep(0.05)
    assert t.is_alive()  # still waiting for room
    buf.close()
    t.join(timeout=2)
    assert result == [False]
    assert buf.get_nowait() == 1 and buf.get_nowait() == 2 and buf.get_nowait() is None
    assert buf.fill == 0.0


def test_get_waits_for_an_item():
    buf: RingBuffer[str] = RingBuffer(capacity=1)
    threading.Timer(0.05, lambda: buf.put("x")).start()
    assert buf.get(timeout=2) == "x"
    assert buf.get(timeout=0.01) is None


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_pacer_plays_at_fps_and_stalls_without_catch_up():
    pacer = FramePacer(fps=25)
    t = 0.0
    assert pacer.due(t)
    pacer.advanced(t)
    assert not pacer.due(0.039) and pacer.due(0.04)
    pacer.advanced(0.04)
    # the buffer runs dry for a while: the pacer waits...
    assert pacer.due(0.2)
    pacer.starved()
    assert pacer.waiting
    # ...and when frames return it restarts its clock instead of bursting through the backlog
    pacer.advanced(0.5)
    assert not pacer.waiting
    assert not pacer.due(0.52) and pacer.due(0.54)
