"""Event, AsyncResult, Queue, Lock/Semaphore, Pool."""

import queue as stdqueue

import pytest

import tgreen
from tgreen.event import AsyncResult
from tgreen.queue import LifoQueue, PriorityQueue


def test_event_wakes_all_waiters():
    ev = tgreen.Event()
    gs = [tgreen.spawn(ev.wait) for _ in range(10)]
    tgreen.sleep(0)
    ev.set()
    assert all(g.get(timeout=1) is True for g in gs)


def test_event_wait_timeout_returns_false():
    assert tgreen.Event().wait(0.01) is False


def test_async_result_delivers_exception():
    r = AsyncResult()
    tgreen.spawn(r.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        r.get(timeout=1)


def test_queue_fifo_and_blocking_get():
    q = tgreen.Queue()
    g = tgreen.spawn(lambda: [q.get() for _ in range(3)])
    for i in range(3):
        q.put(i)
    assert g.get(timeout=1) == [0, 1, 2]


def test_bounded_queue_blocks_put_and_raises_full():
    q = tgreen.Queue(1)
    q.put(1)
    with pytest.raises(stdqueue.Full):
        q.put(2, timeout=0.01)
    with pytest.raises(stdqueue.Full):
        q.put_nowait(2)
    g = tgreen.spawn(q.put, 2)
    tgreen.sleep(0)
    assert q.get() == 1
    g.join(1)
    assert q.get() == 2


def test_queue_get_timeout_raises_empty():
    with pytest.raises(stdqueue.Empty):
        tgreen.Queue().get(timeout=0.01)


def test_lifo_and_priority_queues():
    q = LifoQueue()
    for i in range(3):
        q.put(i)
    assert [q.get() for _ in range(3)] == [2, 1, 0]
    p = PriorityQueue()
    for i in (3, 1, 2):
        p.put(i)
    assert [p.get() for _ in range(3)] == [1, 2, 3]


def test_queue_join_task_done():
    q = tgreen.Queue()
    for i in range(5):
        q.put(i)

    def worker():
        while True:
            q.get()
            tgreen.sleep(0.001)
            q.task_done()

    w = tgreen.spawn(worker)
    assert q.join(timeout=2)
    w.kill()


def test_lock_serializes_greenlets():
    lock = tgreen.Lock()
    inside = []
    maxinside = []

    def work():
        with lock:
            inside.append(1)
            maxinside.append(len(inside))
            tgreen.sleep(0.001)
            inside.pop()

    tgreen.joinall([tgreen.spawn(work) for _ in range(20)])
    assert max(maxinside) == 1


def test_lock_acquire_timeout_and_nonblocking():
    lock = tgreen.Lock()
    lock.acquire()
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_semaphore_timed_out_waiter_does_not_strand_permit():
    sem = tgreen.Semaphore(1)
    sem.acquire()
    a = tgreen.spawn(sem.acquire, timeout=0.01)
    b = tgreen.spawn(sem.acquire)
    tgreen.sleep(0.05)
    assert a.get() is False
    sem.release()
    assert b.get(timeout=1) is True


def test_bounded_semaphore_over_release():
    s = tgreen.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        s.release()


def test_rlock_reentrant_and_owned():
    r = tgreen.RLock()
    with r:
        with r:
            pass
    g = tgreen.spawn(r.release)
    g.join()
    assert isinstance(g.exception, RuntimeError)


def test_tgreen_lock_is_the_green_thread_lock():
    """One lock implementation: tgreen.Lock/RLock are tgreen._thread's, the
    ones patch_all() puts on threading."""
    from tgreen import _thread as gthread

    assert type(tgreen.Lock()) is gthread.LockType
    assert tgreen.RLock is gthread.RLock


def _real_thread(fn):
    """Start ``fn`` on a real OS thread (unpatched), return its join."""
    from tgreen import _originals

    t = _originals.get("threading", "Thread")(target=fn, daemon=True)
    t.start()
    return t.join


def test_semaphore_shared_with_a_real_thread():
    """A greenlet waits for a permit an OS thread releases, and an OS thread
    blocks for real on a permit a greenlet holds; the loop keeps running
    meanwhile (a ticker greenlet advances)."""
    from tgreen import _originals

    real_sleep = _originals.get("time", "sleep")
    sem = tgreen.Semaphore(0)
    ticks = []

    def tick():
        while True:
            tgreen.sleep(0.005)
            ticks.append(1)
    ticker = tgreen.spawn(tick)

    join = _real_thread(lambda: (real_sleep(0.05), sem.release()))
    assert sem.acquire(timeout=5) is True
    assert len(ticks) >= 3    # the hub ran while this greenlet waited
    join()

    got = []
    sem2 = tgreen.BoundedSemaphore(1)
    sem2.acquire()
    join = _real_thread(lambda: got.append(sem2.acquire(timeout=5)))
    tgreen.sleep(0.05)
    assert got == []
    sem2.release()
    tgreen.sleep(0)
    join()
    assert got == [True]
    ticker.kill()


def test_event_set_from_a_real_thread_wakes_greenlets():
    ev = tgreen.Event()
    gs = [tgreen.spawn(ev.wait, 5) for _ in range(3)]
    tgreen.sleep(0)
    join = _real_thread(ev.set)
    assert [g.get(timeout=5) for g in gs] == [True] * 3
    join()


def test_pool_limits_concurrency():
    pool = tgreen.Pool(3)
    running = []
    peak = []

    def work(i):
        running.append(i)
        peak.append(len(running))
        tgreen.sleep(0.01)
        running.remove(i)
        return i * i

    assert pool.map(work, range(10)) == [i * i for i in range(10)]
    assert max(peak) <= 3
    assert sorted(pool.imap_unordered(work, range(5))) == [0, 1, 4, 9, 16]
    pool.join()
    assert len(pool) == 0


def test_pool_rejects_bad_size():
    with pytest.raises(ValueError):
        tgreen.Pool(0)
