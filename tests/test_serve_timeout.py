"""tgreen-serve --timeout: a request past it is interrupted (504, or its
connection closed once the response started) and frees its core; a worker
whose loop makes no progress that long is killed and replaced by the master;
requests cut at SIGTERM by the graceful timeout are logged."""

from __future__ import annotations

import http.client
import os
import signal
import textwrap
import threading
import time

import pytest
import requests
from _serve_helpers import Serve, write_app

APP = textwrap.dedent("""
    import os
    import tgreen

    def slow_view(seconds):
        tgreen.sleep(seconds)

    def spin_forever():
        n = 0
        while True:
            n += 1

    def stream():
        yield b"first chunk\\n"
        tgreen.sleep(30)
        yield b"never sent\\n"

    def application(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/sleep":
            slow_view(float(environ["QUERY_STRING"] or "30"))
        elif path == "/spin":
            spin_forever()
        elif path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return stream()
        body = f"ok {os.getpid()}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
""")


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_sleeping_request_past_the_timeout_gets_504_and_its_core_serves_the_next(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, "--cores", "1", "--timeout", "1") as srv:
        t0 = time.monotonic()
        r = requests.get(srv.url + "/sleep?30", timeout=20)
        assert r.status_code == 504
        assert time.monotonic() - t0 < 15   # not the app's 30 s
        # The only core is free again: the next request is served.
        r2 = requests.get(srv.url + "/", timeout=10)
        assert r2.status_code == 200 and r2.text.startswith("ok")
        out = srv.output()
        assert "GET /sleep?30: request ran longer than the 1 s --timeout; answering 504" in out
        assert "in slow_view" in out          # where it was: the app's own frame
        assert "RequestTimeout" in out


def test_the_timeout_is_a_tgreen_timeout_the_app_can_see(tmp_path):
    app = write_app(tmp_path, textwrap.dedent("""
        import tgreen
        seen = []

        def application(environ, start_response):
            if environ["PATH_INFO"] == "/slow":
                try:
                    tgreen.sleep(30)
                except tgreen.Timeout as e:
                    seen.append(type(e).__name__)
                    raise
            body = repr(seen).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
    """))
    with Serve(app, "--timeout", "0.5") as srv:
        assert requests.get(srv.url + "/slow", timeout=20).status_code == 504
        assert requests.get(srv.url + "/seen", timeout=10).text == "['RequestTimeout']"


def test_a_streaming_response_past_the_timeout_has_its_connection_closed(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, "--cores", "1", "--timeout", "1") as srv:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=20)
        c.request("GET", "/stream")
        r = c.getresponse()
        assert r.status == 200            # the head went out before the timeout
        assert r.readline() == b"first chunk\n"
        t0 = time.monotonic()
        with pytest.raises(http.client.IncompleteRead):
            r.read()                      # the chunked body never ends: closed
        assert time.monotonic() - t0 < 15
        c.close()
        assert requests.get(srv.url + "/", timeout=10).status_code == 200
        assert "GET /stream: request ran longer than the 1 s --timeout; closing the connection" \
            in srv.output()


def test_without_timeout_a_long_request_is_not_interrupted(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app) as srv:
        r = requests.get(srv.url + "/sleep?1.5", timeout=20)
        assert r.status_code == 200


def test_a_cpu_looping_request_gets_its_worker_replaced(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, "--timeout", "1") as srv:
        old = srv.wait_workers(1)[0]
        failed = []

        def spin():
            try:
                requests.get(srv.url + "/spin", timeout=30)
            except requests.RequestException as e:
                failed.append(e)

        t = threading.Thread(target=spin)
        t.start()
        new = srv.wait_workers(1, timeout=20, exclude=(old,))[0]
        t.join(30)
        assert failed                      # its connection died with the worker
        r = requests.get(srv.url + "/", timeout=10)
        assert r.status_code == 200 and r.text == f"ok {new}"
        out = srv.output()
        assert f"worker 1 (pid {old}): its loop made no progress for" in out
        assert "in spin_forever" in out    # the offending stack, logged before the kill
        assert f"worker 1 (pid {old}) killed by the watchdog" in out


def test_sigterm_logs_the_requests_cut_by_the_graceful_timeout(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, "--graceful-timeout", "0.5") as srv:
        t = threading.Thread(target=_swallow, args=(srv.url + "/sleep?30",))
        t.start()
        time.sleep(0.3)   # the request is running
        os.kill(srv.pid, signal.SIGTERM)
        assert srv.proc.wait(15) == 0
        t.join(20)
        out = srv.output()
        assert "graceful timeout (0.5 s) expired: cutting GET /sleep?30, running for" in out


def _swallow(url: str) -> None:
    try:
        requests.get(url, timeout=30)
    except requests.RequestException:
        pass


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_blocking_c_call_gets_its_worker_replaced_with_its_stack_logged(tmp_path, loop):
    """Unpatched, time.sleep blocks the whole worker in C: the heartbeat stops,
    the master logs where the worker is stuck and replaces it."""
    pytest.importorskip(loop)
    app = write_app(tmp_path, textwrap.dedent("""
        import os
        import time

        def blocking_call():
            time.sleep(60)

        def application(environ, start_response):
            if environ["PATH_INFO"] == "/block":
                blocking_call()
            body = f"ok {os.getpid()}".encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
    """))
    with Serve(app, "--no-patch", "--timeout", "1", "--loop", loop) as srv:
        old = srv.wait_workers(1)[0]
        t = threading.Thread(target=_swallow, args=(srv.url + "/block",))
        t.start()
        new = srv.wait_workers(1, timeout=20, exclude=(old,))[0]
        t.join(30)
        _wait_for(lambda: _answers(srv), what="the new worker to serve")
        assert requests.get(srv.url + "/", timeout=10).text == f"ok {new}"
        out = srv.output()
        assert f"worker 1 (pid {old}): its loop made no progress for" in out
        assert "in blocking_call" in out


def _answers(srv: Serve) -> bool:
    try:
        return requests.get(srv.url + "/", timeout=5).status_code == 200
    except requests.RequestException:
        return False
