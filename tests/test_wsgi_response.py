"""Responses: framing, keep-alive, HEAD, streaming, write(), exc_info,
file_wrapper/sendfile, errors, and close() of the app's iterable."""

from __future__ import annotations

import http.client
import os
import sys
import socket
import struct
import threading
import time

import pytest
import requests
from _wsgi_helpers import ResponseReader, ServerThread, hello_app, is_closed, read_response, recv_all

import tgreen

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")


def test_hello_world_keeps_the_connection_alive():
    with ServerThread(hello_app) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/")
            r = conn.getresponse()
            assert r.status == 200
            assert r.read() == b"Hello, World!"
            assert r.getheader("Content-Length") == "13"
            assert r.getheader("Date")
            assert not r.will_close
        conn.close()
        assert srv.call(lambda: srv.server.requests) == 3


def test_head_sends_headers_only():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"0123456789"]

    for validate in (True, False):
        with ServerThread(app, validate=validate) as srv:
            s = srv.connect()
            s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            rr = ResponseReader(s)
            head = rr.next("HEAD")
            assert head.status == 200 and head.body == b""
            if not validate:  # a list body: its length is known, as GET would say
                assert head.getheader("Content-Length") == "10"
            get = rr.next()
            assert get.body == b"0123456789"


def test_generator_without_length_is_chunked_on_http11():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"x" * 1024 for _ in range(64))

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_response(s)
        assert r.getheader("Transfer-Encoding") == "chunked"
        assert r.body == b"x" * 65536
        # the connection is still usable
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).body == b"x" * 65536


def test_generator_on_http10_is_close_delimited():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"abc"
        yield b"def"

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw = recv_all(s)
        head, body = raw.split(b"\r\n\r\n", 1)
        assert b"Connection: close" in head
        assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
        assert body == b"abcdef"


def test_http10_keep_alive_when_asked_and_length_known():
    with ServerThread(hello_app) as srv:
        s = srv.connect()
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = read_response(s)
            assert r.getheader("Connection") == "keep-alive"
            assert r.body == b"Hello, World!"


def test_connection_close_request_gets_close_and_eof():
    with ServerThread(hello_app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = recv_all(s)
        assert b"Connection: close" in raw and raw.endswith(b"Hello, World!")


def test_write_callable_and_iterable_together():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        write(b"second ")
        return [b"third"]

    with ServerThread(app) as srv:
        r = requests.get(srv.url)
        assert r.content == b"first second third"
        assert r.headers["Transfer-Encoding"] == "chunked"


def test_headers_and_first_body_bytes_leave_in_one_write():
    """No Nagle/delayed-ACK stall: the status line, headers and the first body
    chunk reach the client together."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        tgreen.sleep(0.3)
        yield b"second"

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.15)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK") and b"first" in first
        assert b"second" not in first


def test_exc_info_replaces_the_status_before_the_body_starts():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    with ServerThread(app) as srv:
        r = requests.get(srv.url)
        assert r.status_code == 503 and r.text == "sorry"


def test_exc_info_after_the_body_started_reraises_and_aborts():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        write(b"partial")
        tgreen.sleep(0.05)  # the bytes leave while the app blocks
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())  # re-raises
        return [b"never"]

    with ServerThread(app, validate=False) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_all(s)
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"partial")
        assert any("late" in e for e in srv.log.errors())


def test_second_start_response_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]

    with ServerThread(app, validate=False) as srv:
        assert requests.get(srv.url).status_code == 500


def test_app_exception_gives_500_logs_and_the_server_carries_on():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("app bug")
        return hello_app(environ, start_response)

    with ServerThread(app) as srv:
        r = requests.get(srv.url + "/fail")
        assert r.status_code == 500
        assert r.headers["Connection"] == "close"
        assert any("app bug" in e for e in srv.log.errors())
        assert requests.get(srv.url + "/").text == "Hello, World!"


def test_error_in_a_generator_after_headers_aborts_the_connection():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a" * 100
        tgreen.sleep(0.05)
        raise RuntimeError("mid-stream")

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_all(s)
        # chunked, but never terminated: the client can tell it is truncated
        assert raw.startswith(b"HTTP/1.1 200 OK") and not raw.endswith(b"0\r\n\r\n")


def test_short_content_length_aborts_instead_of_hanging_the_client():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]

    with ServerThread(app, validate=False) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_all(s)
        assert raw.endswith(b"12345") and is_closed(s)


def test_long_body_is_truncated_to_content_length():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "3")])
        return [b"12345"]

    with ServerThread(app, validate=False) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s)
        assert rr.next().body == b"123"
        assert rr.next().body == b"123"  # no desync from the extra bytes


def test_204_and_304_have_no_body():
    def app(environ, start_response):
        status = "204 No Content" if environ["PATH_INFO"] == "/204" else "304 Not Modified"
        start_response(status, [])
        return [b""]

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\n")
        rr = ResponseReader(s)
        a = rr.next()
        b = rr.next()
        assert (a.status, b.status) == (204, 304)
        assert a.getheader("Content-Length") is None and a.getheader("Transfer-Encoding") is None


def test_crlf_in_a_header_value_is_refused():
    def app(environ, start_response):
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"x"]

    with ServerThread(app, validate=False) as srv:
        r = requests.get(srv.url)
        assert r.status_code == 500
        assert "pwned" not in r.headers.get("Set-Cookie", "")


def test_iterable_close_is_called_on_success_and_when_the_client_leaves():
    closed = []
    started = threading.Event()

    class Body:
        def __init__(self, n, delay):
            self.n, self.delay = n, delay

        def __iter__(self):
            for _ in range(self.n):
                started.set()
                yield b"y" * 1000
                tgreen.sleep(self.delay)

        def close(self):
            closed.append(self.n)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(2, 0) if environ["PATH_INFO"] == "/short" else Body(10_000, 0.01)

    with ServerThread(app) as srv:
        assert requests.get(srv.url + "/short").content == b"y" * 2000
        s = srv.connect()
        s.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
        started.wait(5)
        s.recv(100)
        s.close()  # client goes away mid-response
        deadline = time.monotonic() + 5
        while 10_000 not in closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert closed == [2, 10_000]


def test_file_wrapper_uses_sendfile(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    used = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(path, "rb")
        if environ["PATH_INFO"] == "/offset":
            f.seek(1000)
        wrapper = environ["wsgi.file_wrapper"](f, 8192)
        used.append(type(wrapper).__module__)
        return wrapper

    with ServerThread(app, validate=False) as srv:
        r = requests.get(srv.url + "/")
        assert r.content == data and r.headers["Content-Length"] == str(len(data))
        r = requests.get(srv.url + "/offset")
        assert r.content == data[1000:]
        r = requests.head(srv.url + "/")
        assert r.headers["Content-Length"] == str(len(data)) and r.content == b""
        assert used == ["tgreen.wsgi._response"] * 3


def test_file_wrapper_on_a_non_file_iterates(tmp_path):
    import io

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"z" * 20000), 4096)

    with ServerThread(app) as srv:
        assert requests.get(srv.url).content == b"z" * 20000


def test_large_response_waits_for_a_slow_reader_then_completes():
    chunk = b"q" * 65536
    produced = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for i in range(320):  # 20 MiB: more than the socket buffers hold
            produced.append(i)
            yield chunk

    with ServerThread(app) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        # The core is parked on flow control, not buffering the whole body.
        conn = srv.call(lambda: next(iter(srv.server.connections)))
        assert srv.call(lambda: conn.write_paused)
        assert len(produced) < 320
        assert srv.call(lambda: conn.transport.get_write_buffer_size()) < 1 << 20
        r = read_response(s)
        assert len(r.body) == 320 * 65536


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_both_loops_serve(loop_kind):
    pytest.importorskip(loop_kind)
    with ServerThread(hello_app, loop_kind=loop_kind) as srv:
        with requests.Session() as sess:
            for _ in range(5):
                assert sess.get(srv.url).text == "Hello, World!"


def test_a_client_that_stops_reading_is_dropped_after_write_timeout():
    closed = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/quick":
            return hello_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            try:
                for _ in range(1000):
                    yield b"w" * 65536
            finally:
                closed.append(True)
        return gen()

    with ServerThread(app, cores=1, write_timeout=0.5) as srv:
        stuck = srv.connect()
        stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        t0 = time.monotonic()
        # the single core is freed once the timeout fires
        r = requests.get(srv.url + "/quick", timeout=10)
        assert r.status_code == 200
        assert 0.3 < time.monotonic() - t0 < 5
        assert closed == [True]
        assert not srv.log.errors()


def test_file_wrapper_really_uses_sendfile(tmp_path):
    """A regular file goes out through the transport's os.sendfile, in
    one call for the whole file, also when it is far bigger than the socket
    buffer (the transport waits for writability between sendfile calls)."""
    from tgreen.wsgi._transport import SocketTransport

    data = bytes(range(256)) * (4 * 4096)   # 4 MiB
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    calls = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    with ServerThread(app, validate=False) as srv:
        def spy():
            orig = SocketTransport.sendfile

            def sendfile(self, file, offset, count):
                calls.append((offset, count))
                return orig(self, file, offset, count)
            SocketTransport.sendfile = sendfile
            return orig
        orig = srv.call(spy)
        try:
            assert requests.get(srv.url).content == data
            s = srv.connect()   # a slow reader: many EAGAINs in between
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while len(got) < len(data):
                time.sleep(0.001)
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got.endswith(data)
        finally:
            srv.call(lambda: setattr(SocketTransport, "sendfile", orig))
        assert calls == [(0, len(data))] * 2


def test_app_connection_close_header_closes_after_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"bye"]

    def closing_app(environ, start_response):
        def sr(status, headers, exc_info=None):
            return start_response(status, headers + [("Connection", "close")], exc_info)
        return app(environ, sr)

    with ServerThread(closing_app, validate=False) as srv:
        s = srv.connect()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_all(s)
        assert raw.count(b"Connection: close") == 1 and raw.endswith(b"bye")


def test_non_latin1_header_value_is_a_500_not_a_crash():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Name", "\u2603")])
        return [b"x"]

    with ServerThread(app, validate=False) as srv:
        assert requests.get(srv.url).status_code == 500
        assert requests.get(srv.url).status_code == 500  # and the server still answers


@pytest.mark.parametrize("what", ["sendfile", "buffered"])
def test_client_reset_in_the_middle_of_a_large_response(tmp_path, what):
    """A client that resets (RST) while a response far larger than the
    socket buffers is under way, through sendfile or through the transport's
    write buffer: the wrapper/iterable is closed, the connection is gone
    from the server, nothing is logged as an error, and the next request is
    served."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * (16 << 20))
    closed = []

    class Closing:
        def __init__(self, it):
            self.it = it

        def __iter__(self):
            return iter(self.it)

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/quick":
            return hello_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if what == "sendfile":
            f = open(path, "rb")
            w = environ["wsgi.file_wrapper"](f)
            orig = w.close
            w.close = lambda: (closed.append(True), orig())
            return w
        return Closing([b"z" * (8 << 20), b"z" * (8 << 20)])

    with ServerThread(app, validate=False) as srv:
        s = srv.connect()
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()   # RST, with most of the response unsent
        deadline = time.monotonic() + 5
        while (not closed or srv.call(lambda: len(srv.server.connections))) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert closed == [True]
        assert srv.call(lambda: len(srv.server.connections)) == 0
        assert requests.get(srv.url + "/quick").text == "Hello, World!"
        assert not srv.log.errors()
