"""Async cores: N requests at once, backpressure when all are busy (no
unbounded queue, no busy spin), fair streaming, per-request context."""

from __future__ import annotations

import concurrent.futures
import contextvars
import socket
import threading
import time

import pytest
import requests
from _wsgi_helpers import ResponseReader, ServerThread, hello_app, read_response

import tgreen

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")


def test_blocking_calls_run_concurrently_on_the_cores():
    def app(environ, start_response):
        tgreen.sleep(0.2)
        return hello_app(environ, start_response)

    with ServerThread(app, cores=50) as srv:
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            results = list(ex.map(lambda _: requests.get(srv.url).status_code, range(50)))
        assert results == [200] * 50
        assert time.monotonic() - t0 < 2.0  # 50 x 0.2 s would be 10 s one at a time


def test_all_cores_busy_stops_accepting_and_reading_without_spinning():
    gate = tgreen.Event()
    inside = []
    peak = []

    def app(environ, start_response):
        inside.append(1)
        peak.append(len(inside))
        gate.wait()
        inside.pop()
        return hello_app(environ, start_response)

    with ServerThread(app, cores=2) as srv:
        socks = []
        for _ in range(6):
            s = srv.connect()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
            time.sleep(0.05)
        time.sleep(0.2)
        server = srv.server
        assert srv.call(lambda: server.cores.busy) == 2
        # one connection waits for a core with its reading paused; the rest
        # are still in the kernel's accept queue: nothing is queued unbounded
        assert srv.call(lambda: len(server.cores.waiting)) == 1
        assert srv.call(lambda: len(server.connections)) == 3
        assert srv.call(lambda: [lst.acceptor.reading for lst in server.listeners]) == [False]
        # a saturated server sleeps
        cpu0 = time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu0 < 0.15
        srv.call(gate.set)
        for s in socks:
            assert read_response(s).status == 200
        assert max(peak) == 2
        assert srv.call(lambda: [lst.acceptor.reading for lst in server.listeners]) == [True]


def test_backpressure_holds_within_one_accept_batch():
    """Six connections with their requests wait in the kernel's queue when
    the loop next looks: the accept batch stops at the connection that found
    no free core instead of accepting the rest (they stay in the kernel)."""
    from tgreen import _originals

    gate = tgreen.Event()

    def app(environ, start_response):
        gate.wait()
        return hello_app(environ, start_response)

    with ServerThread(app, cores=2) as srv:
        server = srv.server
        real_sleep = _originals.get("time", "sleep")
        blocker = threading.Thread(target=srv.call, args=(lambda: real_sleep(0.5),))
        blocker.start()          # the loop is busy while the clients connect
        time.sleep(0.1)
        socks = []
        for _ in range(6):
            s = srv.connect()
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        blocker.join()
        time.sleep(0.2)
        assert srv.call(lambda: server.cores.busy) == 2
        assert srv.call(lambda: len(server.cores.waiting)) == 1
        assert srv.call(lambda: len(server.connections)) == 3
        srv.call(gate.set)
        for s in socks:
            assert read_response(s).status == 200


def test_a_keep_alive_connection_waiting_for_a_core_is_not_read():
    gate = tgreen.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            gate.wait()
        return hello_app(environ, start_response)

    with ServerThread(app, cores=1) as srv:
        a = srv.connect()
        a.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        b = srv.connect()
        b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        conn_b = srv.call(lambda: srv.server.cores.waiting[0])
        # b's socket is paused: more data stays in the kernel
        b.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
        time.sleep(0.1)
        assert srv.call(lambda: len(conn_b.queue)) == 1
        srv.call(gate.set)
        assert read_response(a).status == 200
        rb = ResponseReader(b)
        for _ in range(101):
            assert rb.next().status == 200


def test_a_cpu_bound_stream_does_not_starve_other_requests():
    """A generator that burns CPU between chunks yields to the loop every
    time slice, so quick requests on other connections are answered while
    the stream is still running.

    No clock decides it: the stream keeps burning until the quick requests
    are all answered (or a cap far beyond any machine's slowness), and each
    quick request records how far the stream had got when the app ran it.
    A server that let the stream starve the others would answer them only
    after its last chunk, which the record shows whatever the CPU contention.
    """
    stream_started = threading.Event()
    quick_done = threading.Event()
    progress = {"chunks": 0, "finished": False}
    seen_by_quick: list[tuple[int, bool]] = []
    cap = 10_000  # 2 ms chunks: ~20 s, only reached by a starving server

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])

            def gen():
                while progress["chunks"] < cap and not quick_done.is_set():
                    end = time.perf_counter() + 0.002
                    while time.perf_counter() < end:
                        pass
                    progress["chunks"] += 1
                    stream_started.set()
                    yield b"s" * 512
                progress["finished"] = True
            return gen()
        seen_by_quick.append((progress["chunks"], progress["finished"]))
        return hello_app(environ, start_response)

    with ServerThread(app) as srv:
        sizes = []
        t = threading.Thread(target=lambda: sizes.append(len(requests.get(srv.url + "/stream").content)))
        t.start()
        assert stream_started.wait(10)
        try:
            for _ in range(5):
                assert requests.get(srv.url + "/quick", timeout=40).status_code == 200
        finally:
            quick_done.set()
            t.join(40)
        assert sizes == [progress["chunks"] * 512]
    assert len(seen_by_quick) == 5
    # Every quick request ran while the stream was mid-way: started, not finished.
    assert all(chunks > 0 and not finished for chunks, finished in seen_by_quick), seen_by_quick
    assert progress["chunks"] < cap


def test_streaming_many_small_chunks_goes_out_in_few_writes():
    """Chunks produced in one burst leave in one write (corking), not one
    send per chunk."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"k" * 1024 for _ in range(64))

    with ServerThread(app) as srv:
        conn_writes = []

        def spy():
            # count transport writes of the next connection (a class-level
            # spy: the transport has __slots__)
            from tgreen.wsgi._transport import SocketTransport
            orig = SocketTransport.write
            mine = []

            def counting(self, data):
                if not mine:
                    mine.append(self)
                if self is mine[0]:
                    conn_writes.append(len(data))
                return orig(self, data)
            SocketTransport.write = counting
            spies.append(lambda: setattr(SocketTransport, "write", orig))

        spies = []
        srv.call(spy)
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert len(read_response(s).body) == 65536
        finally:
            srv.call(spies[0])
        assert 1 <= len(conn_writes) <= 3


def test_context_variables_do_not_leak_between_requests():
    var = contextvars.ContextVar("var", default="unset")

    def app(environ, start_response):
        before = var.get()
        var.set(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [before.encode()]

    with ServerThread(app, cores=1) as srv:
        with requests.Session() as sess:
            assert [sess.get(srv.url + f"/{i}").text for i in range(3)] == ["unset"] * 3


def test_cores_are_reused_not_created_per_request():
    def app(environ, start_response):
        return hello_app(environ, start_response)

    with ServerThread(app, cores=100) as srv:
        with requests.Session() as sess:
            for _ in range(50):
                sess.get(srv.url)
        assert srv.call(lambda: len(srv.server.cores.cores)) == 1


def test_stop_finishes_requests_in_flight_and_refuses_new_ones():
    def app(environ, start_response):
        tgreen.sleep(0.3)
        return hello_app(environ, start_response)

    with ServerThread(app) as srv:
        with concurrent.futures.ThreadPoolExecutor(5) as ex:
            futs = [ex.submit(requests.get, srv.url) for _ in range(5)]
            time.sleep(0.1)
            srv.loop.call_soon_threadsafe(srv.server.begin_stop)
            assert [f.result().status_code for f in futs] == [200] * 5
            assert all(f.result().headers["Connection"] == "close" for f in futs)
        deadline = time.monotonic() + 3
        while not srv.server.stopped and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.server.stopped
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).recv(1)


def test_requests_still_running_after_the_graceful_timeout_are_ended_cleanly():
    cleaned = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            try:
                yield b"start"
                tgreen.sleep(60)
                yield b"never"
            finally:
                cleaned.append("finally")
        return gen()

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.loop.call_soon_threadsafe(srv.server.begin_stop, 0.3)
        deadline = time.monotonic() + 5
        while not srv.server.stopped and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.server.stopped and time.monotonic() - t0 < 2
        time.sleep(0.1)
        assert cleaned == ["finally"]
        assert srv.call(lambda: len(srv.server.cores.cores)) == 0


def test_a_finished_connection_leaves_no_cyclic_garbage():
    """Protocol, parser and transport are freed by refcounting when a
    connection ends: no reference cycle per connection for the cyclic GC to
    find later (at 10k connections/s that is GC work on the hot path)."""
    import gc

    with ServerThread(hello_app, validate=False) as srv:
        srv.call(gc.collect)
        gc.disable()
        try:
            for _ in range(200):
                s = srv.connect()
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass
                s.close()
            time.sleep(0.2)
            found = srv.call(gc.collect)
        finally:
            gc.enable()
        assert found < 200, f"{found} unreachable objects after 200 connections"
