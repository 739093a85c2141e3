"""wsgi.input: bodies (Content-Length and chunked) stream from the socket to
the app, with backpressure, lazy 100-continue, limits and timeouts."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
import requests
from _wsgi_helpers import ResponseReader, ServerThread, is_closed, read_response, recv_all

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")


def read_all(inp):
    """Read to the end with read(size) calls only (what wsgiref.validate
    allows; the body may be chunked: wsgi.input_terminated)."""
    parts = []
    while True:
        data = inp.read(65536)
        if not data:
            return b"".join(parts)
        parts.append(data)


def echo_app(environ, start_response):
    body = read_all(environ["wsgi.input"])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def digest_app(environ, start_response):
    """Reads the body in pieces; answers its size and sha256."""
    h = hashlib.sha256()
    n = 0
    inp = environ["wsgi.input"]
    while True:
        data = inp.read(65536)
        if not data:
            break
        h.update(data)
        n += len(data)
    out = f"{n} {h.hexdigest()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def test_content_length_body_is_echoed():
    with ServerThread(echo_app) as srv:
        r = requests.post(srv.url, data=b"hello body")
        assert r.content == b"hello body"


def test_chunked_body_is_decoded():
    with ServerThread(echo_app) as srv:
        r = requests.post(srv.url, data=iter([b"chunk one, ", b"chunk two"]))
        assert r.content == b"chunk one, chunk two"


def test_readline_and_iteration():
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        first = inp.readline()
        limited = inp.readline(3)
        rest = list(inp)
        out = repr((first, limited, rest)).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [out]

    with ServerThread(app) as srv:
        r = requests.post(srv.url, data=iter([b"line one\nli", b"ne two\nthree"]))
        assert r.text == repr((b"line one\n", b"lin", [b"e two\n", b"three"]))


def test_a_big_chunked_upload_streams_through_a_bounded_buffer():
    """10 MiB chunked, read in 64 KiB pieces: the app sees bytes before the
    upload ends, and the server never holds much more than its high-water mark."""
    seen_early = threading.Event()
    max_buffered = []

    def app(environ, start_response):
        inp = environ["wsgi.input"]
        h = hashlib.sha256()
        n = 0
        while True:
            max_buffered.append(inp.buffered)
            data = inp.read(65536)
            if not data:
                break
            if not inp.complete:
                seen_early.set()
            h.update(data)
            n += len(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{n} {h.hexdigest()}".encode()]

    payload = os.urandom(1 << 20)

    def gen():
        for _ in range(10):
            yield payload
            time.sleep(0.01)

    with ServerThread(app, validate=False) as srv:  # inspects Input internals
        r = requests.post(srv.url, data=gen())
        want = hashlib.sha256(payload * 10).hexdigest()
        assert r.text == f"{10 << 20} {want}"
        assert seen_early.is_set()
        assert max(max_buffered) < 2 << 20


def test_slow_reading_app_pauses_the_socket():
    """While the app does not read, unread body bytes stop at the high-water
    mark (plus what the kernel buffers): the server does not swallow the upload."""
    from tgreen.wsgi._input import HIGH_WATER

    release = threading.Event()
    buffered = []

    def app(environ, start_response):
        import tgreen
        while not release.is_set():
            tgreen.sleep(0.01)
        buffered.append(environ["wsgi.input"].buffered)
        return digest_app(environ, start_response)

    body = os.urandom(8 << 20)
    with ServerThread(app, validate=False) as srv:  # inspects Input internals
        s = srv.connect()
        s.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        s.settimeout(0.5)
        sent = 0
        try:
            while sent < len(body):
                sent += s.send(body[sent:sent + 65536])
        except (TimeoutError, BlockingIOError):
            pass
        assert sent < len(body)  # the server stopped reading
        release.set()
        s.settimeout(10)
        s.sendall(body[sent:])
        r = read_response(s)
        assert r.body == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        assert buffered[0] <= HIGH_WATER + 256 * 1024


def test_expect_100_continue_is_sent_lazily_on_first_read():
    def app(environ, start_response):
        import tgreen
        tgreen.sleep(0.2)  # nothing read yet: no 100 Continue yet
        return echo_app(environ, start_response)

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(0.1)
        try:
            early = s.recv(100)
        except TimeoutError:
            early = b""
        assert early == b""
        s.settimeout(5)
        interim = s.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        r = read_response(s)
        assert r.status == 200 and r.body == b"hello"


def test_no_100_continue_when_the_app_answers_without_reading():
    def app(environ, start_response):
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"no"]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        raw = recv_all(s, timeout=3)
        assert raw.startswith(b"HTTP/1.1 403 Forbidden")
        assert b"100 Continue" not in raw
        assert b"Connection: close" in raw  # the body never came: no reuse


def test_requests_client_with_expect_continue():
    with ServerThread(echo_app) as srv:
        r = requests.put(srv.url, data=b"x" * 100_000, headers={"Expect": "100-continue"})
        assert r.status_code == 200 and len(r.content) == 100_000


def test_unread_body_does_not_desync_the_next_request():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nGET /evil"
                  b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s)
        assert rr.next().body == b"/a"
        assert rr.next().body == b"/b"


def test_unread_large_body_closes_without_losing_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"early answer"]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n" + b"z" * 200_000)
        s.settimeout(5)
        r = read_response(s)
        assert r.body == b"early answer" and r.getheader("Connection") == "close"
        # keep sending: the server drains instead of resetting, then closes
        try:
            for _ in range(10):
                s.sendall(b"z" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert is_closed(s, timeout=5)


def test_body_over_the_limit_gets_413():
    with ServerThread(echo_app, limit_request_body=1000) as srv:
        r = requests.post(srv.url, data=b"x" * 1000)
        assert r.status_code == 200
        r = requests.post(srv.url, data=b"x" * 1001)
        assert r.status_code == 413
        r = requests.post(srv.url, data=iter([b"x" * 600, b"x" * 600]))  # chunked
        assert r.status_code == 413


def test_stalled_body_times_out_with_408_and_frees_the_core():
    with ServerThread(echo_app, body_timeout=0.3, cores=1) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        t0 = time.monotonic()
        raw = recv_all(s, timeout=5)
        assert raw.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 3
        # the only core serves others meanwhile and after
        assert requests.post(srv.url, data=b"ok").content == b"ok"


def test_big_stalled_body_times_out_inside_the_app():
    with ServerThread(digest_app, body_timeout=0.3) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 100_000)
        raw = recv_all(s, timeout=5)
        assert raw.startswith(b"HTTP/1.1 408")


def test_client_disconnect_while_the_app_reads_the_body():
    errors = []
    done = threading.Event()

    def app(environ, start_response):
        try:
            read_all(environ["wsgi.input"])
        except OSError as e:
            errors.append(type(e).__name__)
            done.set()
            raise
        return echo_app(environ, start_response)

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 100_000)
        time.sleep(0.2)
        s.close()
        assert done.wait(5)
        assert errors == ["ClientDisconnected"]
        assert not srv.log.errors()  # a client leaving is not a server error


def test_expect_100_continue_is_ignored_on_http10():
    with ServerThread(echo_app) as srv:
        s = srv.connect()
        s.sendall(b"POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
        raw = recv_all(s)
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"100 Continue" not in raw
        assert raw.endswith(b"hello")
