"""Green DNS (never outside names) and green select/poll/epoll/selectors."""

import os
import time

import pytest

import tgreen
from tgreen import dns, select, selectors, socket


def test_getaddrinfo_numeric_is_immediate():
    res = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert res[0][4] == ("127.0.0.1", 80)


def test_getaddrinfo_hosts_file_name_runs_in_thread_while_loop_ticks():
    ticks = []

    def ticker():
        for _ in range(100):
            ticks.append(1)
            tgreen.sleep(0.001)

    t = tgreen.spawn(ticker)
    results = tgreen.Pool(20).map(lambda _: socket.getaddrinfo("localhost", 80), range(20))
    assert all(any(r[4][0] in ("127.0.0.1", "::1") for r in res) for res in results)
    t.kill()
    assert ticks  # the loop kept running


def test_unresolvable_numeric_host_raises_gaierror_promptly():
    t0 = time.monotonic()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("999.1.1.1", 80, flags=socket.AI_NUMERICHOST)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("no-such-host.invalid", 80, flags=socket.AI_NUMERICHOST)
    assert time.monotonic() - t0 < 1


def test_gethostbyname_family():
    assert socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    name, aliases, addrs = socket.gethostbyname_ex("localhost")
    assert "127.0.0.1" in addrs
    host, port = socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
    assert (host, port) == ("127.0.0.1", "80")
    assert socket.gethostbyaddr("127.0.0.1")[2] == ["127.0.0.1"]


def test_dns_errors_from_thread_reach_greenlet():
    with pytest.raises(TypeError):
        socket.getaddrinfo("localhost", 80, "bad-family")


def test_is_numeric_host():
    assert dns.is_numeric_host("::1") and dns.is_numeric_host("10.0.0.1")
    assert not dns.is_numeric_host("localhost")


def test_select_blocks_only_the_greenlet():
    a, b = socket.socketpair()
    g = tgreen.spawn(select.select, [a], [], [], 2)
    other = tgreen.spawn(lambda: 5)
    assert other.get(timeout=1) == 5
    b.send(b"x")
    r, w, x = g.get(timeout=2)
    assert r == [a] and w == [] and x == []
    a.close(); b.close()


def test_select_timeout_and_errors():
    a, b = socket.socketpair()
    t0 = time.monotonic()
    assert select.select([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - t0 >= 0.04
    with pytest.raises(ValueError):
        select.select([a], [], [], -1)
    with pytest.raises(TypeError):
        select.select([object()], [], [])
    a.close()
    with pytest.raises((OSError, ValueError)):
        select.select([a], [], [], 0.01)
    b.close()


def test_two_greenlets_select_on_the_same_socket():
    a, b = socket.socketpair()
    g1 = tgreen.spawn(select.select, [a], [], [], 2)
    g2 = tgreen.spawn(select.select, [a], [], [], 2)
    tgreen.sleep(0.01)
    b.send(b"x")
    assert g1.get(timeout=2)[0] == [a] and g2.get(timeout=2)[0] == [a]
    a.close(); b.close()


def test_select_regular_file_is_ready():
    r, w = os.pipe()
    with open(__file__, "rb") as f:
        assert select.select([f], [], [], 1)[0] == [f]
    os.close(r); os.close(w)


def test_poll_green():
    a, b = socket.socketpair()
    p = select.poll()
    p.register(a, select.POLLIN)
    g = tgreen.spawn(p.poll, 2000)
    tgreen.sleep(0.01)
    assert not g.ready()
    b.send(b"x")
    assert g.get(timeout=2) == [(a.fileno(), select.POLLIN)]
    assert p.poll(0) == [(a.fileno(), select.POLLIN)]
    a.recv(1)
    assert p.poll(10) == []
    a.close(); b.close()


def test_epoll_green_edge_triggered():
    a, b = socket.socketpair()
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
    g = tgreen.spawn(ep.poll, 2)
    tgreen.sleep(0.01)
    b.send(b"x")
    assert g.get(timeout=2) == [(a.fileno(), select.EPOLLIN)]
    assert ep.poll(0.01) == []  # edge-triggered: reported once
    ep.close()
    a.close(); b.close()


def test_default_selector_green():
    a, b = socket.socketpair()
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, "data")
    g = tgreen.spawn(sel.select, 2)
    tgreen.sleep(0.01)
    assert not g.ready()
    b.send(b"x")
    events = g.get(timeout=2)
    assert [(k.fileobj, k.data, ev) for k, ev in events] == [(a, "data", selectors.EVENT_READ)]
    assert sel.select(0.01) != []
    sel.close()
    a.close(); b.close()


@pytest.mark.parametrize("cls", ["SelectSelector", "PollSelector", "EpollSelector"])
def test_each_selector_times_out(cls):
    a, b = socket.socketpair()
    sel = getattr(selectors, cls)()
    sel.register(a, selectors.EVENT_READ)
    assert sel.select(0.02) == []
    b.send(b"y")
    assert len(sel.select(1)) == 1
    sel.close()
    a.close(); b.close()


def test_select_sees_a_reused_fd_number_after_os_close():
    # C libraries close fds behind tgreen's back; select must not keep a
    # stale loop registration that blinds it to the next fd of that number.
    r, w = os.pipe()
    select.select([r], [], [], 0.01)
    os.close(r); os.close(w)
    r2, w2 = os.pipe()
    tgreen.spawn_later(0.05, os.write, w2, b"x")
    t0 = time.monotonic()
    assert select.select([r2], [], [], 5)[0] == [r2]
    assert time.monotonic() - t0 < 2
    os.close(r2); os.close(w2)


def test_poll_sees_a_reused_fd_number_after_os_close():
    r, w = os.pipe()
    p = select.poll()
    p.register(r, select.POLLIN)
    p.poll(10)
    os.close(r); os.close(w)
    r2, w2 = os.pipe()
    p2 = select.poll()
    p2.register(r2, select.POLLIN)
    tgreen.spawn_later(0.05, os.write, w2, b"x")
    t0 = time.monotonic()
    assert p2.poll(5000) == [(r2, select.POLLIN)]
    assert time.monotonic() - t0 < 2
    os.close(r2); os.close(w2)
