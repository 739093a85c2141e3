"""A greenlet is synchronous code (tgreen/_asyncio_state.py, tgreen/selectors.py):
asyncio sees no running loop in it, ``asyncio.run`` works in it and, with
``patch_asyncio()`` (part of ``patch_all()``), waits without blocking the
other greenlets. Scripts run in fresh interpreters where patching is involved."""

import asyncio
import subprocess
import sys
import textwrap

import greenlet
import pytest

import tgreen


def run(code: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def elapsed(out: subprocess.CompletedProcess) -> float:
    return float(out.stdout.split("elapsed")[-1].split()[0])


def _sees_no_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio._get_running_loop() is None
    return False


def test_a_spawned_greenlet_sees_no_running_loop_while_the_hub_runs():
    seen = []

    def work():
        tgreen.sleep(0.01)  # resumed from a loop callback, in the middle of the loop's turn
        seen.append(_sees_no_loop())

    tgreen.spawn(work).join()
    assert seen == [True]
    assert asyncio._get_running_loop() is None


def test_greenlets_of_a_running_asyncio_program_see_no_loop_and_its_coroutines_still_do():
    async def main():
        loop = asyncio.get_running_loop()

        def work():
            tgreen.sleep(0.01)
            return _sees_no_loop(), tgreen.get_hub().loop is loop

        results = await asyncio.gather(*[tgreen.run_green(work) for _ in range(5)])
        # Back in the coroutine after the greenlets switched in and out.
        return results, asyncio.get_running_loop() is loop, asyncio.current_task() is not None

    results, still_ours, in_task = asyncio.run(main())
    assert results == [(True, True)] * 5
    assert still_ours and in_task


def test_a_greenlet_switched_directly_by_a_coroutine_sees_no_loop_and_the_coroutine_keeps_it():
    tgreen.get_hub()  # tgreen is in use in this thread

    async def main():
        loop = asyncio.get_running_loop()
        g = greenlet.greenlet(lambda: (_sees_no_loop(), greenlet.getcurrent().parent.switch(
            _sees_no_loop()))[0])
        first = g.switch()        # it runs, then switches straight back to us
        here = asyncio.get_running_loop() is loop
        second = g.switch()       # resumed and finished: back through its parent
        return first, here, second, asyncio.get_running_loop() is loop

    assert asyncio.run(main()) == (True, True, True, True)


def test_sniffio_finds_no_async_library_in_a_greenlet_and_asyncio_in_a_coroutine():
    sniffio = pytest.importorskip("sniffio")
    tgreen.get_hub()

    def sniff():
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return None

    async def main():
        # Switched into straight from the coroutine, inside its task.
        in_greenlet = greenlet.greenlet(sniff).switch()
        return in_greenlet, sniffio.current_async_library()

    assert asyncio.run(main()) == (None, "asyncio")


def test_asyncio_run_in_a_greenlet_works_without_any_patching():
    def work(i):
        async def inner():
            await asyncio.sleep(0.01)
            return i, asyncio.get_running_loop() is not tgreen.get_hub().loop
        return asyncio.run(inner())

    gs = [tgreen.spawn(work, i) for i in range(3)]
    tgreen.joinall(gs)
    assert [g.get() for g in gs] == [(0, True), (1, True), (2, True)]
    assert asyncio._get_running_loop() is None


def test_asyncio_run_in_twenty_greenlets_runs_them_side_by_side_under_patch_all():
    out = run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, time, tgreen
        def work(i):
            asyncio.run(asyncio.sleep(0.3))
            return i
        t0 = time.monotonic()
        gs = [tgreen.spawn(work, i) for i in range(20)]
        tgreen.joinall(gs)
        assert [g.get() for g in gs] == list(range(20))
        print("elapsed", time.monotonic() - t0)
    """)
    assert elapsed(out) < 2.5  # one after the other: 6 s


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_asyncio_run_in_greenlets_of_an_asyncio_program_does_not_block_its_loop(loop_kind):
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    out = run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, time, tgreen, sys
        def work(i):
            async def inner():
                await asyncio.sleep(0.3)
                return i
            return asyncio.run(inner())
        async def main():
            ticks = 0
            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1
            t = asyncio.ensure_future(ticker())
            t0 = time.monotonic()
            got = await asyncio.gather(*[tgreen.run_green(work, i) for i in range(20)])
            t.cancel()
            assert got == list(range(20)), got
            assert ticks >= 5, ticks   # the program's own loop kept turning
            print("elapsed", time.monotonic() - t0)
        if sys.argv[-1] == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
    """.replace("sys.argv[-1]", repr(loop_kind)))
    assert elapsed(out) < 2.5


def test_a_new_loops_run_until_complete_in_greenlets_waits_greenly_after_patch_asyncio_alone():
    out = run("""
        import tgreen, tgreen.monkey
        tgreen.monkey.patch_asyncio()
        import asyncio, time
        def work(i):
            loop = asyncio.new_event_loop()
            try:
                return loop.run_until_complete(asyncio.sleep(0.3, i))
            finally:
                loop.close()
        t0 = time.monotonic()
        gs = [tgreen.spawn(work, i) for i in range(10)]
        tgreen.joinall(gs)
        assert [g.get() for g in gs] == list(range(10))
        print("elapsed", time.monotonic() - t0)
    """)
    assert elapsed(out) < 2.0  # one after the other: 3 s


def test_a_loop_in_a_greenlet_serves_real_sockets_while_other_greenlets_use_them_too():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, socket, tgreen
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(50)
        port = srv.getsockname()[1]
        def echo_server():                      # blocking-style, in its own greenlet
            while True:
                c, _ = srv.accept()
                tgreen.spawn(lambda c: (c.sendall(c.recv(100)), c.close()), c)
        tgreen.spawn(echo_server)
        def asyncio_client(i):                  # an SDK that wraps asyncio.run
            async def talk():
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"hi %d" % i); await w.drain()
                data = await r.read(100)
                w.close(); await w.wait_closed()
                return data
            return asyncio.run(talk())
        gs = [tgreen.spawn(asyncio_client, i) for i in range(10)]
        tgreen.joinall(gs)
        assert [g.get() for g in gs] == [b"hi %d" % i for i in range(10)]
    """)


def test_a_greenlets_asyncio_run_leaves_the_hubs_async_generators_alone():
    # An async generator first iterated by a coroutine on the hub while a
    # greenlet is inside asyncio.run must stay the hub's: the greenlet's
    # asyncio.run shuts down *its* loop's async generators only.
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, tgreen
        async def numbers():
            for i in range(30):
                yield i
        def nested():
            asyncio.run(asyncio.sleep(0.1))
        async def main():
            g = tgreen.spawn(nested)
            await asyncio.sleep(0.02)   # the greenlet is inside asyncio.run now
            got = []
            async for i in numbers():   # suspended at its yield while we sleep
                got.append(i)
                await asyncio.sleep(0.01)
            await tgreen.run_green(g.join)
            assert got == list(range(30)), got
        asyncio.run(main())
    """)


def test_tornado_finds_the_hubs_loop_in_a_greenlet_after_it_ran_asyncio_run():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, tgreen
        from tornado import gen
        from tornado.ioloop import IOLoop
        def work():
            asyncio.run(asyncio.sleep(0.01))
            assert IOLoop.current().asyncio_loop is tgreen.get_hub().loop
            tgreen.wait(gen.sleep(0.01))
            return "done"
        g = tgreen.spawn(work)
        g.join(timeout=10)
        assert g.get() == "done"
        assert IOLoop.current().asyncio_loop is tgreen.get_hub().loop
    """)


def test_killing_a_greenlet_inside_asyncio_run_cancels_its_task_and_closes_its_loop():
    run("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import asyncio, tgreen
        loops, cleaned = [], []
        def work():
            async def inner():
                loops.append(asyncio.get_running_loop())
                try:
                    await asyncio.sleep(30)
                finally:
                    cleaned.append(True)
            asyncio.run(inner())
        g = tgreen.spawn(work)
        tgreen.sleep(0.1)          # it waits inside its own loop
        g.kill(timeout=5)
        assert g.dead and cleaned == [True] and loops[0].is_closed()
        assert asyncio._get_running_loop() is None
        tgreen.sleep(0.01)         # the hub is fine afterwards
    """)


def test_tornado_in_a_greenlet_finds_the_loop_it_runs_on_when_no_loop_was_set_as_current():
    run("""
        import asyncio, tgreen
        from tornado import gen
        from tornado.ioloop import IOLoop
        async def main():
            loop = asyncio.get_running_loop()
            def work():
                tgreen.sleep(0.01)
                tgreen.wait(gen.sleep(0.01))      # a Tornado future, from a greenlet
                return IOLoop.current().asyncio_loop is loop
            return await tgreen.run_green(work)
        loop = asyncio.new_event_loop()           # never set as the current loop
        assert loop.run_until_complete(main()) is True
        loop.close()
    """, timeout=30)
