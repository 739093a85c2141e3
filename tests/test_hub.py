"""The hub: runner protocol, errors, would-block-forever, error reporting."""

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from tornado.ioloop import IOLoop

import tgreen
from tgreen import socket


def test_blocking_call_from_coroutine_raises_clear_error():
    async def main():
        with pytest.raises(tgreen.BlockingFromHubError, match="run_green"):
            tgreen.sleep(0.01)

    asyncio.run(main())


def test_blocking_call_from_ioloop_callback_raises():
    errors = []

    def cb():
        try:
            tgreen.Event().wait()
        except tgreen.BlockingFromHubError as e:
            errors.append(e)
        IOLoop.current().stop()

    loop = IOLoop.current()
    loop.add_callback(cb)
    loop.start()
    assert len(errors) == 1


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter: LoopExit is only raised while no
    other OS thread lives (one could still release a lock or set an event),
    and earlier tests in this process leave idle executor threads behind."""
    out = subprocess.run([sys.executable, "-c", "import tgreen, threading\n" + textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_main_waiting_on_nothing_gets_loop_exit_not_hang():
    out = _fresh("""
        try:
            tgreen.Event().wait()
        except tgreen.LoopExit as e:
            print("LoopExit", "block forever" in str(e))
        try:
            tgreen.Semaphore(0).acquire()
        except tgreen.LoopExit:
            print("LoopExit")
    """)
    assert out.split() == ["LoopExit", "True", "LoopExit"]


def test_join_of_deadlocked_greenlet_raises_loop_exit():
    out = _fresh("""
        ev = tgreen.Event()
        g = tgreen.spawn(ev.wait)
        try:
            g.join()
        except tgreen.LoopExit:
            print("LoopExit")
    """)
    assert out.split() == ["LoopExit"]


def test_no_loop_exit_while_another_os_thread_could_set_the_event():
    out = _fresh("""
        import time
        from tgreen import _originals
        ev = tgreen.Event()
        t = _originals.get("threading", "Thread")(target=lambda: (time.sleep(0.2), ev.set()))
        t.start()
        print(ev.wait())
    """)
    assert out.split() == ["True"]


def test_no_loop_exit_while_a_timer_can_still_fire():
    ev = tgreen.Event()
    tgreen.spawn_later(0.05, ev.set)
    assert ev.wait() is True


def test_no_loop_exit_while_foreign_fd_is_registered():
    # A foreign asyncio reader (say a Tornado server) may still wake us.
    a, b = socket.socketpair()
    ev = tgreen.Event()
    loop = tgreen.get_hub().loop

    def on_read():
        loop.remove_reader(a.fileno())
        ev.set()

    loop.add_reader(a.fileno(), on_read)
    loop.call_later(0.05, b.send, b"x")
    assert ev.wait() is True
    a.close()
    b.close()


def test_exception_in_spawned_greenlet_is_reported_and_hub_survives(capsys):
    g = tgreen.spawn(lambda: 1 / 0)
    g.join()
    assert isinstance(g.exception, ZeroDivisionError)
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "Traceback" in err
    assert tgreen.spawn(lambda: 42).get() == 42


def test_systemexit_in_greenlet_reaches_main():
    def bye():
        raise SystemExit(3)

    tgreen.spawn(bye)
    with pytest.raises(SystemExit) as ei:
        tgreen.sleep(0.1)
    assert ei.value.code == 3


def test_keyboardinterrupt_from_greenlet_reaches_main_in_subprocess():
    code = textwrap.dedent("""
        import tgreen
        def f():
            raise KeyboardInterrupt
        tgreen.spawn(f)
        try:
            tgreen.sleep(1)
        except KeyboardInterrupt:
            print("main got it")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "main got it" in out.stdout, out.stderr


def test_second_reader_on_same_socket_gets_clear_error():
    a, b = socket.socketpair()
    g1 = tgreen.spawn(a.recv, 10)
    g2 = tgreen.spawn(a.recv, 10)
    tgreen.sleep(0.01)
    assert isinstance(g2.exception, tgreen.ConcurrentWaitError)
    b.send(b"hi")
    assert g1.get(timeout=1) == b"hi"
    a.close(); b.close()


def test_reader_and_writer_on_same_socket_are_independent():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader = tgreen.spawn(a.recv, 10)
    big = b"x" * (1 << 20)
    writer = tgreen.spawn(a.sendall, big)
    tgreen.sleep(0.01)
    assert not reader.ready() and not writer.ready()
    got = 0
    while got < len(big):
        got += len(b.recv(65536))
    writer.get(timeout=5)
    b.send(b"ok")
    assert reader.get(timeout=5) == b"ok"
    a.close(); b.close()


def test_close_wakes_waiters_with_ebadf():
    a, b = socket.socketpair()
    g = tgreen.spawn(a.recv, 10)
    tgreen.sleep(0.01)
    a.close()
    with pytest.raises(OSError) as ei:
        g.get(timeout=1)
    assert ei.value.errno == 9
    b.close()


def test_fd_reuse_after_close_is_watched_correctly():
    # The loop must not keep a stale registration for a closed fd number.
    for _ in range(50):
        a, b = socket.socketpair()
        g = tgreen.spawn(a.recv, 1)
        tgreen.sleep(0)
        b.send(b"z")
        assert g.get(timeout=1) == b"z"
        a.close(); b.close()


def test_greenlets_spawned_in_a_tornado_app_run_on_its_loop():
    results = []

    async def handler():
        def work():
            tgreen.sleep(0.01)
            # The greenlet is synchronous code: no running loop, as in a thread...
            results.append(asyncio._get_running_loop())
            # ...but its waits run on the app's loop.
            results.append(tgreen.get_hub().loop is loop)
        await tgreen.run_green(work)
        results.append(asyncio.get_running_loop() is loop)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(handler())
    loop.close()
    assert results == [None, True, True]


def test_uvloop_hub_runs_greenlets():
    code = textwrap.dedent("""
        import tgreen
        tgreen.use_uvloop()
        from tgreen import socket
        a, b = socket.socketpair()
        g = tgreen.spawn(a.recv, 5)
        tgreen.sleep(0.01)
        b.send(b"hello")
        print(g.get(), type(tgreen.get_hub().loop).__module__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "b'hello' uvloop" in out.stdout, out.stderr


def test_bad_loop_env_is_a_clear_error():
    code = "import tgreen; tgreen.sleep(0)"
    env = dict(os.environ, TGREEN_LOOP="nope")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode != 0 and "TGREEN_LOOP='nope'" in out.stderr


def test_each_os_thread_gets_its_own_hub():
    import threading

    hubs = {}

    def work(name):
        tgreen.sleep(0.01)
        g = tgreen.spawn(lambda: 1)
        hubs[name] = (tgreen.get_hub(), g.get())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len({id(h) for h, _ in hubs.values()}) == 3
    assert all(v == 1 for _, v in hubs.values())
    assert tgreen.get_hub() not in [h for h, _ in hubs.values()]


def test_main_greenlet_timeout_while_running_the_loop():
    with pytest.raises(tgreen.Timeout):
        with tgreen.Timeout(0.05):
            tgreen.Event().wait(5)
    # and the loop is not left running behind our back
    assert not tgreen.get_hub().loop.is_running()
