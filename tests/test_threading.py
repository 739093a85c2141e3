"""Green threading, _thread and queue: patched in fresh interpreters, plus the
thread-safe primitives used directly (unpatched) in this process.

Patched scenarios run in subprocesses so that patching never leaks into other
tests. Each script prints what it measured; assertions live in the script
(failing it fails the test) and, for timings, here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import tgreen
from tgreen import _thread as gthread
from tgreen import threadpool
from tgreen.queue import Empty, Full, LifoQueue, PriorityQueue, Queue, SimpleQueue

pytestmark = pytest.mark.timeout(60)

PRELUDE = "import tgreen.monkey; tgreen.monkey.patch_all()\n"


def run(code: str, timeout: float = 30, patch: bool = True) -> subprocess.CompletedProcess:
    src = (PRELUDE if patch else "") + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", src], check=False,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def values(out: subprocess.CompletedProcess) -> dict[str, str]:
    """``key value`` lines printed by a script."""
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)


# -- patched: threads are greenlets -------------------------------------------------------


def test_fifty_threads_sleeping_run_concurrently():
    out = values(run("""
        import threading, time, _thread
        assert threading.Thread.start.__module__ == "threading"   # the stdlib class
        t0 = time.monotonic()
        ts = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(50)]
        for t in ts: t.start()
        assert threading.active_count() == 51
        for t in ts: t.join()
        print("elapsed", time.monotonic() - t0)
        assert not any(t.is_alive() for t in ts)
        assert threading.enumerate() == [threading.main_thread()]
        # _thread.start_new_thread too
        done = []
        lock = _thread.allocate_lock(); lock.acquire()
        t0 = time.monotonic()
        for i in range(50):
            _thread.start_new_thread(lambda i: (time.sleep(0.2), done.append(i),
                                                len(done) == 50 and lock.release()), (i,))
        lock.acquire()
        print("raw", time.monotonic() - t0)
    """))
    assert float(out["elapsed"]) < 1.0
    assert float(out["raw"]) < 1.0


def test_idents_are_per_greenlet_and_the_main_thread_stays_consistent():
    run("""
        import threading, _thread, tgreen, greenlet
        from tgreen.monkey import get_original
        main = threading.main_thread()
        assert threading.current_thread() is main
        # the main greenlet keeps the OS thread's ident (pthread_kill works with it)
        assert main.ident == threading.get_ident() == _thread.get_ident()
        assert main.ident == get_original("_thread", "get_ident")()
        assert main.name == "MainThread" and main.is_alive()
        seen = {}
        def work(i):
            t = threading.current_thread()
            seen[i] = (threading.get_ident(), t.ident, t.name, t is main)
        ts = [threading.Thread(target=work, args=(i,), name=f"w{i}") for i in range(5)]
        for t in ts: t.start()
        for t in ts: t.join()
        idents = {v[0] for v in seen.values()}
        assert len(idents) == 5 and main.ident not in idents
        assert all(v[0] == v[1] for v in seen.values())
        assert [seen[i][2] for i in range(5)] == [f"w{i}" for i in range(5)]
        assert not any(v[3] for v in seen.values())
        assert {t.ident for t in ts} == idents
        # a plain greenlet is a dummy thread, forgotten when it ends (no leak)
        def dummy():
            t = threading.current_thread()
            return type(t).__name__, t.daemon
        gs = [tgreen.spawn(dummy) for _ in range(100)]
        tgreen.joinall(gs)
        assert gs[0].get() == ("_DummyThread", True)
        tgreen.sleep(0.01)
        assert threading.active_count() == 1, threading.enumerate()
        # the native id is the OS thread's, shared by green threads
        nids = []
        t = threading.Thread(target=lambda: nids.append(threading.get_native_id()))
        t.start(); t.join()
        assert nids == [threading.get_native_id()] == [t.native_id]
    """)


def test_a_green_thread_starts_with_an_empty_context_like_a_thread():
    run("""
        import contextvars, decimal, threading
        var = contextvars.ContextVar("var", default="default")
        var.set("main")
        decimal.getcontext().prec = 5
        seen = []
        t = threading.Thread(target=lambda: seen.append((var.get(), decimal.getcontext().prec)))
        t.start(); t.join()
        assert seen == [("default", 28)], seen
        assert var.get() == "main" and decimal.getcontext().prec == 5
    """)


def test_green_threads_can_join_the_main_thread_and_exit_waits_for_non_daemons():
    out = run("""
        import threading, time
        main = threading.main_thread()
        def joiner():
            main.join()                  # returns once the main greenlet finished
            print("main joined", main.is_alive())
        def late():
            time.sleep(0.2)
            print("late non-daemon done")
        def forever():
            time.sleep(60)               # a daemon thread does not hold up exit
        threading.Thread(target=joiner).start()
        threading.Thread(target=late).start()
        threading.Thread(target=forever, daemon=True).start()
        t = threading.Thread(target=lambda: None)
        t.start(); t.join(timeout=5)
        assert not t.is_alive()
        try:
            threading.current_thread().join()
        except RuntimeError as e:
            print("self join", e)
        print("end of main")
    """)
    lines = out.stdout.splitlines()
    assert lines[0] == "self join cannot join current thread"
    assert lines[1] == "end of main"
    assert set(lines[2:]) == {"main joined False", "late non-daemon done"}


def test_lock_rlock_condition_semaphore_event_barrier_timer():
    run("""
        import threading, time, _thread, tgreen
        # Lock: mutual exclusion across a switch, timeouts, C-like type
        lock = threading.Lock()
        assert type(lock).__module__ == "_thread" and "unlocked" in repr(lock)
        inside, overlap = [], []
        def crit(i):
            with lock:
                inside.append(i)
                if len(inside) > 1: overlap.append(i)
                time.sleep(0.01)
                inside.remove(i)
        ts = [threading.Thread(target=crit, args=(i,)) for i in range(10)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert not overlap
        lock.acquire()
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.1) is False
        assert 0.08 < time.monotonic() - t0 < 0.5
        assert lock.acquire(False) is False
        threading.Timer(0.05, lock.release).start()
        assert lock.acquire(timeout=2)
        lock.release()
        try:
            lock.release()
        except RuntimeError:
            pass
        else:
            raise AssertionError("released an unlocked lock")
        # RLock: owned per green thread
        rl = threading.RLock()
        with rl, rl:
            t = threading.Thread(target=lambda: out.append(rl.acquire(timeout=0.05)))
            out = []
            t.start(); t.join()
            assert out == [False]
        try:
            rl.release()
        except RuntimeError:
            pass
        else:
            raise AssertionError("released an RLock nobody holds")
        # Condition: producer/consumer with notify
        cond = threading.Condition()
        items = []
        def consumer(res):
            with cond:
                assert cond.wait_for(lambda: items, timeout=2)
                res.append(items.pop())
        res = []
        cs = [threading.Thread(target=consumer, args=(res,)) for _ in range(3)]
        for c in cs: c.start()
        for i in range(3):
            with cond:
                items.append(i); cond.notify()
            time.sleep(0.01)
        for c in cs: c.join()
        assert sorted(res) == [0, 1, 2]
        with cond:
            assert cond.wait(0.05) is False
        # Semaphore / BoundedSemaphore: at most N at once
        sem = threading.BoundedSemaphore(3)
        running, peak = [0], [0]
        def limited():
            with sem:
                running[0] += 1; peak[0] = max(peak[0], running[0])
                time.sleep(0.02)
                running[0] -= 1
        ts = [threading.Thread(target=limited) for _ in range(12)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert peak[0] == 3
        try:
            sem.release()
        except ValueError:
            pass
        else:
            raise AssertionError("BoundedSemaphore over-released")
        # Event
        ev = threading.Event()
        threading.Timer(0.05, ev.set).start()
        t0 = time.monotonic()
        assert ev.wait(2) and time.monotonic() - t0 < 1
        ev.clear()
        assert ev.wait(0.01) is False
        # Barrier: parties meet, then a broken barrier raises
        b = threading.Barrier(4)
        idx = []
        ts = [threading.Thread(target=lambda: idx.append(b.wait())) for _ in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert sorted(idx) == [0, 1, 2, 3]
        b2 = threading.Barrier(2, timeout=0.05)
        try:
            b2.wait()
        except threading.BrokenBarrierError:
            pass
        else:
            raise AssertionError("barrier did not break")
        # Timer: runs, or is cancelled
        fired = []
        t1 = threading.Timer(0.02, fired.append, args=(1,)); t1.start()
        t2 = threading.Timer(0.02, fired.append, args=(2,)); t2.start(); t2.cancel()
        t1.join(); t2.join()
        assert fired == [1]
    """)


def test_threading_local_is_per_greenlet():
    run("""
        import threading, _threading_local, _thread, tgreen, time
        assert threading.local is _thread._local is _threading_local.local
        loc = threading.local()
        loc.x = "main"
        class Sub(threading.local):
            inits = 0
            def __init__(self, v):
                Sub.inits += 1
                self.v = v
            @property
            def double(self):
                return self.v * 2
        sub = Sub(21)
        def work(i):
            assert not hasattr(loc, "x")
            loc.x = i
            assert sub.v == 21 and sub.double == 42     # __init__ re-run here
            sub.v = i
            time.sleep(0.01)                             # switch while set
            return loc.x, sub.v, loc.__dict__
        gs = [tgreen.spawn(work, i) for i in range(5)]
        assert [g.get() for g in gs] == [(i, i, {"x": i}) for i in range(5)]
        ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert loc.x == "main" and sub.v == 21
        assert Sub.inits == 1 + 5 + 3
        try:
            loc.__dict__ = {}
        except AttributeError:
            pass
        else:
            raise AssertionError("__dict__ assignable")
        # a finished thread's values are released
        import weakref, gc
        class V: pass
        refs = []
        def keep():
            v = V(); loc.v = v; refs.append(weakref.ref(v))
        t = threading.Thread(target=keep); t.start(); t.join()
        gc.collect()
        assert refs[0]() is None
    """)


def test_queue_producer_consumer_with_timeouts():
    out = values(run("""
        import queue, threading, time, tgreen
        assert queue.Queue is tgreen.queue.Queue and queue.SimpleQueue is tgreen.queue.SimpleQueue
        assert queue.Queue[int] is not None
        q = queue.Queue(maxsize=5)
        got = []
        def producer(n):
            for i in range(n):
                q.put(i, timeout=2)
            q.put(None)
        def consumer():
            while (item := q.get(timeout=2)) is not None:
                got.append(item)
                q.task_done()
            q.task_done()
        t0 = time.monotonic()
        ts = [threading.Thread(target=producer, args=(100,)), threading.Thread(target=consumer)]
        for t in ts: t.start()
        q.join()
        for t in ts: t.join()
        assert got == list(range(100))
        # timeouts: green waits, others keep running
        ticks = []
        ticker = tgreen.spawn(lambda: [(ticks.append(1), time.sleep(0.01)) for _ in range(10)])
        t0 = time.monotonic()
        try:
            queue.Queue().get(timeout=0.1)
        except queue.Empty:
            print("get_timeout", time.monotonic() - t0)
        full = queue.Queue(1); full.put(1)
        try:
            full.put(2, timeout=0.05)
        except queue.Full:
            pass
        try:
            full.put_nowait(2)
        except queue.Full:
            pass
        print("ticks", len(ticks))
        # LIFO, priority, simple
        lq = queue.LifoQueue(); [lq.put(i) for i in range(3)]
        pq = queue.PriorityQueue(); [pq.put(i) for i in (3, 1, 2)]
        sq = queue.SimpleQueue()
        threading.Timer(0.05, sq.put, args=("late",)).start()
        assert [lq.get() for _ in range(3)] == [2, 1, 0]
        assert [pq.get() for _ in range(3)] == [1, 2, 3]
        assert sq.get(timeout=2) == "late"
        try:
            sq.get(timeout=0.01)
        except queue.Empty:
            pass
        # stdlib-compatible internals
        with q.mutex:
            q.queue.clear()
        assert q.qsize() == 0 and q.empty() and bool(q)
    """))
    assert 0.08 < float(out["get_timeout"]) < 0.5
    assert int(out["ticks"]) >= 8  # the ticker ran while we waited


def test_a_fresh_import_of_C_queue_waits_greenly():
    # CPython's test_queue imports queue afresh with a fresh _queue: C's
    # SimpleQueue.get() blocked the OS thread while its producers were
    # green threads of that very thread (a deadlock).
    out = values(run("""
        import threading, _queue, queue, tgreen.queue
        from test.support import import_helper
        c_queue = import_helper.import_fresh_module("queue", fresh=["_queue"])
        py_queue = import_helper.import_fresh_module("queue", blocked=["_queue"])
        print("fresh_c", c_queue.SimpleQueue is tgreen.queue.SimpleQueue)
        print("blocked_c", py_queue.SimpleQueue is py_queue._PySimpleQueue)
        print("patched", _queue.SimpleQueue is tgreen.queue.SimpleQueue)
        q = c_queue.SimpleQueue()
        def produce():
            for i in range(100):
                q.put(i)
        ts = [threading.Thread(target=produce) for _ in range(4)]
        for t in ts: t.start()
        got = [q.get(timeout=5) for _ in range(400)]   # green waits: the producers run
        for t in ts: t.join()
        print("got", sorted(got) == sorted(list(range(100)) * 4))
        try:
            q.get(timeout=1e-5)
        except c_queue.Empty:
            print("empty", True)
    """))
    assert out == {"fresh_c": "True", "blocked_c": "True", "patched": "True", "got": "True",
                   "empty": "True"}, out


def test_queue_shutdown_wakes_blocked_getters_and_putters_with_ShutDown():
    # 3.13's Queue.shutdown(); tgreen's Queue is queue.Queue once patched.
    out = values(run("""
        import queue, threading, tgreen, tgreen.queue
        ShutDown = getattr(queue, "ShutDown", tgreen.queue.ShutDown)
        assert tgreen.queue.ShutDown is ShutDown
        q = queue.Queue(maxsize=1)
        q.put("kept")
        seen = []
        def blocked_put():
            try:
                q.put("never")
            except ShutDown:
                seen.append("put")
        t = threading.Thread(target=blocked_put); t.start()
        tgreen.sleep(0.02)
        q.shutdown()                              # not immediate: items stay gettable
        t.join()
        print("after_put", seen == ["put"], q.get() == "kept")
        try:
            q.get(timeout=1)
        except ShutDown:
            print("get_empty", True)
        e = queue.Queue()
        def blocked_get():
            try:
                e.get()
            except ShutDown:
                seen.append("get")
        t = threading.Thread(target=blocked_get); t.start()
        tgreen.sleep(0.02)
        e.shutdown()
        t.join()
        print("woken_get", seen[-1] == "get")
        j = queue.Queue(); j.put(1); j.put(2)
        joiner = threading.Thread(target=j.join); joiner.start()
        tgreen.sleep(0.02)
        j.shutdown(immediate=True)                # drops the items, ends join()
        joiner.join(timeout=2)
        print("immediate", not joiner.is_alive(), j.empty())
    """))
    assert out == {"after_put": "True True", "get_empty": "True", "woken_get": "True",
                   "immediate": "True True"}, out


def test_thread_pool_executor_workers_are_green():
    out = values(run("""
        import concurrent.futures as cf, threading, time
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(max_workers=20) as ex:
            assert isinstance(ex, cf.thread.ThreadPoolExecutor)
            res = list(ex.map(lambda x: (time.sleep(0.2), x * x)[1], range(40)))
            names = set(ex.map(lambda _: threading.current_thread().name, range(5)))
            native = set(ex.map(lambda _: threading.get_native_id(), range(5)))
        print("elapsed", time.monotonic() - t0)
        assert res == [x * x for x in range(40)]
        assert native == {threading.get_native_id()}      # no OS threads
        assert all(n.startswith("ThreadPoolExecutor-") for n in names)
        ex = cf.ThreadPoolExecutor(4)
        fs = [ex.submit(time.sleep, 0.1) for _ in range(4)]
        done, pending = cf.wait(fs, timeout=2)
        assert len(done) == 4 and not pending
        f = ex.submit(lambda: 1 / 0)
        try:
            f.result(timeout=2)
        except ZeroDivisionError:
            pass
        assert [f.result() for f in cf.as_completed([ex.submit(pow, 2, i) for i in range(3)])]
        ex.shutdown()
        ex2 = cf.ThreadPoolExecutor(2)          # never shut down: interpreter exit joins it
        ex2.submit(time.sleep, 0.05)
    """))
    assert float(out["elapsed"]) < 1.0  # 40 x 0.2 s on 20 workers: 0.4 s


def test_asyncio_and_tornado_executors_stay_real_threads():
    run("""
        import asyncio, threading, _thread, time, socket
        import concurrent.futures
        import tornado.netutil, tornado.ioloop
        from tgreen.monkey import get_original
        real_get_ident = get_original("_thread", "get_ident")
        main_native = threading.get_native_id()
        main_real = real_get_ident()
        async def main():
            loop = asyncio.get_running_loop()
            info = await loop.run_in_executor(None, lambda: (
                threading.get_native_id(), real_get_ident(), threading.current_thread().name))
            assert info[0] != main_native and info[1] != main_real, info
            assert info[2].startswith("asyncio_"), info
            assert not loop._default_executor._tgreen
            # a blocking call in the executor does not stall the loop
            t0 = time.monotonic()
            ticks = 0
            fut = loop.run_in_executor(None, get_original("time", "sleep"), 0.2)
            while not fut.done():
                await asyncio.sleep(0.01); ticks += 1
            assert ticks >= 10, ticks
            await asyncio.to_thread(lambda: None)
            addrs = await tornado.netutil.DefaultExecutorResolver().resolve("localhost", 80)
            assert addrs and addrs[0][0] in (socket.AF_INET, socket.AF_INET6)
            res = tornado.netutil.ThreadedResolver()
            r = await res.resolve("localhost", 80)
            assert r
        asyncio.run(main())
        # the originals really are original
        T = get_original("threading", "Thread")
        out = []
        t = T(target=lambda: out.append(threading.get_native_id()))
        t.start(); t.join()
        assert out and out[0] != main_native
        import concurrent.futures.thread as cft
        assert cft.threading.Thread is T
        try:
            import uvloop                  # imported after patching: compiled, no frames
        except ImportError:
            pass
        else:
            async def on_uvloop():
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, threading.get_native_id)
            assert uvloop.run(on_uvloop()) != main_native
    """)


def test_locks_and_queues_are_shared_safely_with_real_threads():
    out = values(run("""
        import threading, queue, time, tgreen, tgreen.threadpool
        from tgreen.monkey import get_original
        real_sleep = get_original("time", "sleep")
        lock = threading.Lock()
        def hold():
            with lock:
                real_sleep(0.2)
        job = tgreen.spawn(tgreen.threadpool.run, hold)     # a real OS thread holds it
        tgreen.sleep(0.05)
        ticks = []
        ticker = tgreen.spawn(lambda: [(ticks.append(1), tgreen.sleep(0.01)) for _ in range(10)])
        t0 = time.monotonic()
        with lock:                                           # parks this greenlet only
            print("waited", time.monotonic() - t0)
        print("ticks", len(ticks))
        job.get()
        # queues both ways
        q = queue.Queue()
        back = queue.Queue()
        def real_worker():
            while (item := q.get()) is not None:
                back.put(item * 2)
        w = tgreen.spawn(tgreen.threadpool.run, real_worker)
        for i in range(50):
            q.put(i)
        assert sorted(back.get(timeout=2) for _ in range(50)) == [i * 2 for i in range(50)]
        q.put(None); w.get()
        # a condition notified from a real thread
        ev = threading.Event()
        tgreen.spawn(tgreen.threadpool.run, lambda: (real_sleep(0.05), ev.set()))
        assert ev.wait(2)
        # a future a real executor completes: waiting for it parks only this greenlet
        RealExecutor = get_original("concurrent.futures", "ThreadPoolExecutor")
        with RealExecutor(2) as ex:
            f = ex.submit(real_sleep, 0.2)
            ticks.clear()
            ticker = tgreen.spawn(lambda: [(ticks.append(1), tgreen.sleep(0.01)) for _ in range(10)])
            f.result(timeout=2)
            print("future_ticks", len(ticks))
    """))
    assert int(out["future_ticks"]) >= 8
    assert 0.05 < float(out["waited"]) < 1.0
    assert int(out["ticks"]) >= 8


def test_a_plain_os_thread_starts_real_threads():
    run("""
        import threading, time, tgreen.threadpool
        def in_worker():           # a tgreen.threadpool worker: no loop to be green on
            out = []
            t = threading.Thread(target=lambda: out.append(threading.get_native_id()))
            t.start(); t.join()
            bg = threading.Thread(target=lambda: (time.sleep(0.1), out.append("bg")))
            bg.start()             # outlives the job: it must keep running
            return out, threading.get_native_id(), bg
        out, worker_native, bg = tgreen.threadpool.run(in_worker)
        assert out[0] not in (worker_native, threading.get_native_id())
        bg.join(2)                 # a green wait on a lock a real thread releases
        assert out[1:] == ["bg"] and not bg.is_alive()
    """)


def test_patching_from_another_thread_keeps_the_main_thread_consistent():
    run("""
        import threading
        def patch():
            import tgreen.monkey; tgreen.monkey.patch_all()
        t = threading.Thread(target=patch); t.start(); t.join()
        import time
        assert threading.current_thread() is threading.main_thread()
        assert threading.main_thread().ident == threading.get_ident()
        t0 = time.monotonic()
        ts = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(20)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert time.monotonic() - t0 < 1
    """, patch=False)


def test_threads_and_locks_inside_a_running_tornado_loop():
    out = values(run("""
        import asyncio, threading, time
        import tornado.ioloop
        import tgreen
        lock = threading.Lock()
        async def main():
            loop = asyncio.get_running_loop()
            # start a green thread from a coroutine: it runs until it blocks
            names = []
            t = threading.Thread(target=lambda: (names.append("started"), time.sleep(0.05),
                                                 names.append("done")))
            t.start()
            assert names == ["started"] and t.is_alive()
            await tgreen.run_green(t.join)
            assert names == ["started", "done"]
            # the loop's greenlet meets a lock held by a real thread: a short real wait
            def hold():
                with lock:
                    time.sleep(0.1)
            fut = loop.run_in_executor(None, hold)
            await asyncio.sleep(0.03)
            t0 = time.monotonic()
            with lock:
                print("waited", time.monotonic() - t0)
            await fut
            # one held by a green thread of its own thread could never be released
            held = threading.Event()
            th = threading.Thread(target=lambda: (lock.acquire(), held.set(), time.sleep(0.1),
                                                  lock.release()))
            th.start()
            assert held.is_set()
            try:
                lock.acquire()
            except tgreen.BlockingFromHubError:
                print("refused yes")
            await tgreen.run_green(th.join)
        tornado.ioloop.IOLoop.current().run_sync(main)
    """))
    assert 0.03 < float(out["waited"]) < 1.0
    assert out["refused"] == "yes"


def test_deadlock_in_the_main_greenlet_is_loop_exit_not_a_hang():
    out = run("""
        import threading, tgreen
        lock = threading.Lock()
        lock.acquire()
        try:
            lock.acquire()
        except tgreen.LoopExit:
            pass
        else:
            raise AssertionError("acquired twice")
        threading.Thread(target=lock.acquire, name="stuck").start()
    """)
    # a non-daemon thread that can never finish does not hang the exit either
    assert "exiting without 1 non-daemon green thread(s)" in out.stderr
    assert "stuck" in out.stderr


def test_errors_in_threads_and_interrupt_main():
    out = run("""
        import threading, _thread, time, sys
        def boom():
            raise ValueError("boom in thread")
        t = threading.Thread(target=boom, name="bad"); t.start(); t.join()
        hooked = []
        threading.excepthook = lambda args: hooked.append((args.exc_type, args.thread.name))
        t = threading.Thread(target=boom, name="bad2"); t.start(); t.join()
        assert hooked == [(ValueError, "bad2")]
        t = threading.Thread(target=sys.exit); t.start(); t.join()   # quiet
        try:
            t = threading.Thread(target=_thread.interrupt_main)
            t.start(); t.join()
            time.sleep(0.1)
        except KeyboardInterrupt:
            print("interrupted main")
        else:
            raise AssertionError("no KeyboardInterrupt in the main greenlet")
    """)
    assert "Exception in thread bad:" in out.stderr and "ValueError: boom in thread" in out.stderr
    assert "interrupted main" in out.stdout


def test_ctrl_c_landing_in_a_green_thread_interrupts_the_main_greenlet():
    out = run("""
        import os, signal, threading, time
        from tgreen.monkey import get_original
        def busy():                  # CPU-bound: the signal handler runs in it
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5:
                pass
        killer = get_original("threading", "Thread")(target=lambda: (
            get_original("time", "sleep")(0.2), os.kill(os.getpid(), signal.SIGINT)))
        killer.start()
        t0 = time.monotonic()
        try:
            t = threading.Thread(target=busy)
            t.start(); t.join()
        except KeyboardInterrupt:
            print("main interrupted", time.monotonic() - t0 < 2, t.is_alive())
    """)
    assert "main interrupted True False" in out.stdout, out.stdout + out.stderr


def test_patching_is_idempotent_and_originals_are_real():
    run("""
        import tgreen.monkey, threading, _thread, queue
        tgreen.monkey.patch_thread(); tgreen.monkey.patch_queue(); tgreen.monkey.patch_all()
        assert tgreen.monkey.is_module_patched("thread") and tgreen.monkey.is_module_patched("queue")
        # threading starts threads with start_joinable_thread from 3.13
        start = "_start_joinable_thread" if hasattr(_thread, "start_joinable_thread") \
            else "_start_new_thread"
        assert tgreen.monkey.is_object_patched("threading", start)
        orig_lock = tgreen.monkey.get_original("threading", "Lock")
        assert type(orig_lock()).__module__ == "_thread" and orig_lock is not threading.Lock
        real_ident = tgreen.monkey.get_original("_thread", "get_ident")
        idents = []
        t = threading.Thread(target=lambda: idents.append((real_ident(), _thread.get_ident())))
        t.start(); t.join()
        assert idents[0][0] == real_ident() != idents[0][1]
        assert tgreen.monkey.get_original("queue", "SimpleQueue") is not queue.SimpleQueue
        assert threading.current_thread() is threading.main_thread()
        assert len(threading.enumerate()) == 1
    """)


def test_logging_from_threads_and_greenlets():
    out = run("""
        import logging, threading, tgreen, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="%(threadName)s|%(message)s")
        ts = [threading.Thread(target=logging.info, args=("t%d", i), name=f"T{i}")
              for i in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        tgreen.joinall([tgreen.spawn(logging.info, "g") for _ in range(3)])
        logging.info("main")
        assert threading.active_count() == 1
    """)
    lines = out.stdout.splitlines()
    assert lines[:3] == ["T0|t0", "T1|t1", "T2|t2"]
    assert all(line.startswith("Dummy-") and line.endswith("|g") for line in lines[3:6])
    assert lines[6] == "MainThread|main"


# -- unpatched: the primitives themselves, across greenlets and real threads -------------------


def test_green_lock_between_greenlets_and_a_plain_thread():
    lock = gthread.allocate_lock()
    order = []

    def real_thread():
        with lock:  # a plain OS thread blocks for real
            order.append("thread")

    lock.acquire()
    t = threading.Thread(target=real_thread)
    t.start()
    time.sleep(0.05)
    assert order == []
    lock.release()
    t.join(2)
    assert order == ["thread"]

    # a real thread releases what a greenlet waits for: woken through the loop
    lock.acquire()
    threading.Timer(0.05, lock.release).start()
    t0 = time.monotonic()
    assert lock.acquire(timeout=2)
    assert time.monotonic() - t0 < 1
    lock.release()


def test_rlock_is_owned_per_greenlet():
    rl = gthread.RLock()
    assert rl.acquire() and rl.acquire()
    g = tgreen.spawn(rl.acquire, timeout=0.05)
    assert g.get() is False
    rl.release()
    rl.release()
    g = tgreen.spawn(lambda: (rl.acquire(), rl._is_owned(), rl.release())[1])
    assert g.get() is True
    with pytest.raises(RuntimeError):
        rl.release()


def test_queue_between_greenlets_and_threadpool_workers():
    q, back = Queue(maxsize=3), Queue()

    def worker():
        while (item := q.get()) is not None:
            back.put(item + 1)

    jobs = [tgreen.spawn(threadpool.run, worker) for _ in range(2)]
    for i in range(20):
        q.put(i, timeout=2)
    got = sorted(back.get(timeout=2) for _ in range(20))
    assert got == list(range(1, 21))
    q.put(None)
    q.put(None)
    tgreen.joinall(jobs, timeout=2, raise_error=True)


def test_queue_timeouts_and_kinds():
    q = Queue(1)
    q.put(1)
    with pytest.raises(Full):
        q.put(2, timeout=0.01)
    with pytest.raises(Full):
        q.put_nowait(2)
    assert q.get() == 1
    with pytest.raises(Empty):
        q.get(timeout=0.01)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    lq, pq = LifoQueue(), PriorityQueue()
    for i in (2, 3, 1):
        lq.put(i)
        pq.put(i)
    assert [lq.get() for _ in range(3)] == [1, 3, 2]
    assert [pq.get() for _ in range(3)] == [1, 2, 3]
    sq = SimpleQueue()
    tgreen.spawn_later(0.02, sq.put, "x")
    assert sq.get(timeout=1) == "x"
    with pytest.raises(Empty):
        sq.get_nowait()


def test_killed_queue_waiter_passes_its_wakeup_on():
    q = Queue()
    got = []
    a = tgreen.spawn(lambda: got.append(("a", q.get())))
    b = tgreen.spawn(lambda: got.append(("b", q.get())))
    tgreen.sleep(0.01)
    q.put(1)           # chooses a ...
    a.throw()          # ... which dies before it runs: b must get the item
    tgreen.joinall([b], timeout=1)
    assert got == [("b", 1)]


def test_green_local_without_patching():
    loc = gthread._local()
    loc.x = 0

    def f(i):
        loc.x = i
        tgreen.sleep(0.001)
        return loc.x

    assert [g.get() for g in [tgreen.spawn(f, i) for i in range(5)]] == list(range(5))
    assert loc.x == 0


# -- every CPython's thread API ----------------------------------------------------------


def test_every_thread_api_name_of_this_python_is_green_or_kept_on_purpose():
    run("""
        import warnings
        import _thread, threading
        from tgreen import _thread as gthread
        from tgreen.monkey import get_original, is_object_patched
        c_thread = get_original("_thread", "get_ident").__self__
        for name, value in vars(c_thread).items():
            if name.startswith("__") or not callable(value):
                continue
            assert (is_object_patched("_thread", name) or name in gthread.KEPT
                    or name in ("_excepthook", "interrupt_main")), name
        # threading's own copies of _thread names are the green ones too
        green = set(map(id, gthread.green_names().values()))
        for alias in ("_start_new_thread", "_start_joinable_thread", "_set_sentinel",
                      "_ThreadHandle", "_make_thread_handle", "_thread_shutdown",
                      "_allocate_lock", "get_ident", "_CRLock", "local"):
            if alias in vars(threading):
                assert id(getattr(threading, alias)) in green, alias
    """.replace("import warnings", "import warnings; warnings.simplefilter('error')"))


@pytest.mark.skipif(sys.version_info < (3, 13), reason="_thread has no _ThreadHandle before 3.13")
def test_thread_handles_join_and_report_done_like_cpythons():
    out = run("""
        import _thread, threading, time, tgreen
        t = threading.Thread(target=time.sleep, args=(0.3,))
        t.start()
        h = t._handle
        assert isinstance(h, _thread._ThreadHandle) and h.ident == t.ident != 0
        assert not h.is_done()
        started = time.monotonic()
        h.join(0.05)
        assert not h.is_done() and t.is_alive()
        h.join(); h.join()
        assert h.is_done() and not t.is_alive()
        print("joined after", round(time.monotonic() - started, 2))
        for call, msg in ((_thread._ThreadHandle().join, "thread not started"),
                          (lambda: _thread.start_joinable_thread(print, handle=h),
                           "thread already started")):
            try:
                call()
            except RuntimeError as e:
                assert str(e) == msg, e
            else:
                raise AssertionError(msg)
        def self_join():
            try:
                own.join()
            except RuntimeError as e:
                print("self join", e)
        own = _thread.start_joinable_thread(self_join)
        own.join()
        # threading.Lock is the lock type since 3.13, and it is green
        lock = threading.Lock()
        assert type(lock) is threading.Lock is _thread.LockType
        lock.acquire()
        g = tgreen.spawn(lock.acquire)
        tgreen.sleep(0.05)
        assert not g.ready()
        lock.release(); g.join(timeout=5)
        assert g.ready() and lock.locked()
        # a greenlet threading did not start is a dummy thread while it runs
        box = []
        tgreen.spawn(lambda: box.append(threading.current_thread())).join()
        assert box[0] not in threading.enumerate()
        try:
            box[0].is_alive()
        except RuntimeError:
            print("dummy ended")
    """)
    assert "self join Cannot join current thread" in out.stdout
    assert "dummy ended" in out.stdout
    assert float(values(out)["joined"].split()[-1]) < 5  # a sanity bound


def test_a_forked_child_sees_the_parents_other_threads_as_ended():
    out = run("""
        import os, threading, time
        t = threading.Thread(target=time.sleep, args=(30,), daemon=True)
        t.start()
        stop = threading.Event()
        u = threading.Thread(target=stop.wait)
        u.start()
        pid = os.fork()
        if pid == 0:
            try:
                assert not t.is_alive() and not u.is_alive()
                t.join(); u.join()       # at once: those threads are not here
                assert threading.current_thread() is threading.main_thread()
                print("child ok", len(threading.enumerate()), flush=True)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert t.is_alive() and u.is_alive()
        stop.set(); u.join()
        print("parent ok", t.is_alive(), u.is_alive())
    """)
    assert "child ok 1" in out.stdout, out.stdout + out.stderr
    assert "parent ok True False" in out.stdout


def test_green_lock_types_take_the_arguments_the_c_types_take():
    with pytest.raises(TypeError):
        class MyLock(gthread.LockType):  # the C lock type was never subclassable
            pass
    assert not gthread.RLock(1, a=2).locked()  # C's RLock ignores arguments
    if sys.version_info >= (3, 13):  # the lock type makes locks since 3.13
        lock = gthread.LockType()
        assert lock.acquire(False) and not lock.acquire(False)
    else:
        with pytest.raises(TypeError):
            gthread.LockType()


def test_an_error_ending_a_green_thread_is_reported_as_cpython_reports_it():
    out = run("""
        import _thread, sys, time
        seen = []
        sys.unraisablehook = seen.append
        def task():
            raise ValueError("task failed")
        _thread.start_new_thread(task, ())
        time.sleep(0.05)
        u = seen[0]
        print("value", u.exc_value)
        print("object", u.object is task, u.object is None)
        print("message", u.err_msg == "Exception ignored in thread started by"
              + (f" {task!r}" if sys.version_info >= (3, 13) else ""))
    """)
    v = values(out)
    assert v["value"] == "task failed"
    assert v["object"] == ("False True" if sys.version_info >= (3, 13) else "True False")
    assert v["message"] == "True"


def test_a_thread_created_before_patching_and_started_after_is_green():
    out = run("""
        import threading, time
        native = []
        def work():
            native.append(threading.get_native_id())   # an OS thread's id
            time.sleep(0.3)
        early = [threading.Thread(target=work) for _ in range(10)]
        import tgreen.monkey; tgreen.monkey.patch_all()
        started = time.monotonic()
        for t in early:
            t.start()
        assert all(t.is_alive() for t in early)
        for t in early:
            t.join()
        assert not any(t.is_alive() for t in early)
        print("elapsed", time.monotonic() - started)
        print("idents", len({t.ident for t in early}), threading.main_thread().ident in {t.ident for t in early})
        print("os_threads", set(native) == {threading.get_native_id()})
    """, patch=False)
    v = values(out)
    assert v["idents"] == "10 False"
    assert v["os_threads"] == "True"  # greenlets in the main OS thread
    assert float(v["elapsed"]) < 2.5  # ten 0.3 s sleeps side by side, not 3 s in a row
