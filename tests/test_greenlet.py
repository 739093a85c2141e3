"""Greenlet API, Timeout, contextvars."""

import contextvars
import time

import pytest

import tgreen


def test_spawn_runs_concurrently():
    t0 = time.monotonic()
    gs = [tgreen.spawn(tgreen.sleep, 0.2) for _ in range(100)]
    tgreen.joinall(gs)
    assert time.monotonic() - t0 < 1.0
    assert all(g.successful() for g in gs)


def test_get_returns_value_and_raises_exception():
    assert tgreen.spawn(lambda a, b: a + b, 2, b=3).get() == 5
    g = tgreen.spawn(lambda: {}["k"])
    with pytest.raises(KeyError):
        g.get()
    assert g.ready() and not g.successful() and g.dead
    assert isinstance(g.exception, KeyError)


def test_get_timeout_raises_timeout():
    g = tgreen.spawn(tgreen.sleep, 1)
    with pytest.raises(tgreen.Timeout):
        g.get(timeout=0.01)
    with pytest.raises(tgreen.Timeout):
        g.get(block=False)
    g.kill()


def test_kill_running_greenlet():
    cleaned = []

    def worker():
        try:
            tgreen.sleep(10)
        finally:
            cleaned.append(True)

    g = tgreen.spawn(worker)
    tgreen.sleep(0)
    g.kill()
    assert g.dead and cleaned == [True]
    assert isinstance(g.value, tgreen.GreenletExit) and g.successful()


def test_kill_before_start_never_runs():
    ran = []
    g = tgreen.spawn(ran.append, 1)
    g.kill()
    tgreen.sleep(0.01)
    assert ran == [] and g.dead


def test_kill_with_custom_exception():
    g = tgreen.spawn(tgreen.sleep, 10)
    tgreen.sleep(0)
    g.kill(ValueError("stop"))
    assert isinstance(g.exception, ValueError)


def test_link_called_when_done():
    seen = []
    g = tgreen.spawn(lambda: 7)
    g.link(lambda gl: seen.append(gl.value))
    g.join()
    tgreen.sleep(0)
    assert seen == [7]


def test_joinall_timeout_returns_finished_only():
    fast = tgreen.spawn(tgreen.sleep, 0)
    slow = tgreen.spawn(tgreen.sleep, 5)
    done = tgreen.joinall([fast, slow], timeout=0.1)
    assert done == [fast]
    slow.kill()


def test_joinall_raise_error():
    gs = [tgreen.spawn(tgreen.sleep, 5), tgreen.spawn(lambda: 1 / 0)]
    with pytest.raises(ZeroDivisionError):
        tgreen.joinall(gs, raise_error=True)
    gs[0].kill()


def test_spawned_greenlet_runs_in_copy_of_spawner_context():
    var = contextvars.ContextVar("var", default="unset")
    var.set("parent")

    def child():
        before = var.get()
        var.set("child")
        return before

    assert tgreen.spawn(child).get() == "parent"
    assert var.get() == "parent"


def test_timeout_context_manager_raises_itself():
    with pytest.raises(tgreen.Timeout) as ei:
        with tgreen.Timeout(0.05) as t:
            tgreen.sleep(5)
    assert ei.value is t


def test_timeout_false_is_silent():
    t0 = time.monotonic()
    with tgreen.Timeout(0.05, False):
        tgreen.sleep(5)
    assert time.monotonic() - t0 < 2


def test_timeout_with_exception_instance_and_class():
    with pytest.raises(ValueError, match="slow"):
        with tgreen.Timeout(0.05, ValueError("slow")):
            tgreen.sleep(5)
    with pytest.raises(KeyError):
        with tgreen.Timeout(0.05, KeyError):
            tgreen.Event().wait()


def test_timeout_interrupts_socket_wait_and_cleans_up():
    from tgreen import socket

    a, b = socket.socketpair()
    with pytest.raises(tgreen.Timeout):
        with tgreen.Timeout(0.05):
            a.recv(10)
    # the fd wait was cleaned up: a new reader is allowed
    b.send(b"x")
    assert a.recv(10) == b"x"
    a.close(); b.close()


def test_cancelled_timeout_does_not_fire():
    t = tgreen.Timeout(0.01)
    t.start()
    t.cancel()
    tgreen.sleep(0.05)
    assert not t.pending


def test_timeout_in_spawned_greenlet_only_affects_it():
    def guarded():
        with tgreen.Timeout(0.05):
            tgreen.sleep(5)

    g = tgreen.spawn(guarded)
    other = tgreen.spawn(tgreen.sleep, 0.1)
    tgreen.joinall([g, other])
    assert isinstance(g.exception, tgreen.Timeout)
    assert other.successful()


def test_sleep_rejects_bad_values_like_time_sleep():
    with pytest.raises(ValueError):
        tgreen.sleep(-1)
    with pytest.raises(TypeError):
        tgreen.sleep("1")


def test_with_timeout_returns_default():
    assert tgreen.with_timeout(0.01, tgreen.sleep, 1, timeout_value="late") == "late"


def test_timeout_in_main_greenlet_is_not_lost_to_a_simultaneous_wake():
    # The main greenlet runs the loop itself; a wake-up and the timer can
    # land in one loop turn. The timeout must still be raised.
    from tgreen import socket

    a, b = socket.socketpair()
    hub = tgreen.get_hub()
    raised = 0
    for _ in range(30):
        try:
            with tgreen.Timeout(0.0001):
                hub.wait_write(a.fileno())
                tgreen.sleep(0.01)
        except tgreen.Timeout:
            raised += 1
    assert raised == 30
    a.close(); b.close()
