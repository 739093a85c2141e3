"""tgreen.wsgi.WSGIContainer: a blocking-style WSGI app inside a Tornado
Application, each request in a greenlet, responses streamed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from wsgiref.validate import validator

import pytest
import requests
import tornado.httpserver
import tornado.web

import tgreen
import tgreen.loop
from tgreen.wsgi import WSGIContainer

pytestmark = pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")


class TornadoThread:
    """A Tornado Application on a fresh loop in a thread."""

    def __init__(self, make_app):
        self.make_app = make_app
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        loop = self.loop = tgreen.loop.new_event_loop()
        asyncio.set_event_loop(loop)

        async def start():
            self.server = tornado.httpserver.HTTPServer(self.make_app())
            socks = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self.port = socks[0].getsockname()[1]
            self.server.add_sockets(socks)

        loop.run_until_complete(start())
        self.ready.set()
        loop.run_forever()
        loop.close()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        def stop():
            self.server.stop()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


class Native(tornado.web.RequestHandler):
    def get(self):
        self.write("native")


def make(wsgi_app, cores=100):
    def factory():
        container = WSGIContainer(validator(wsgi_app), cores=cores)
        return tornado.web.Application([
            (r"/native", Native),
            (r".*", tornado.web.FallbackHandler, {"fallback": container}),
        ])
    return factory


def test_blocking_app_runs_greenly_beside_native_handlers():
    def app(environ, start_response):
        tgreen.sleep(0.3)  # would block the whole loop in tornado's own container
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    with TornadoThread(make(app)) as srv:
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            t0 = time.monotonic()
            futs = [ex.submit(requests.get, f"{srv.url}/w{i}") for i in range(20)]
            time.sleep(0.05)
            n0 = time.monotonic()
            assert requests.get(srv.url + "/native").text == "native"
            assert time.monotonic() - n0 < 0.2  # the loop was free
            assert [f.result().text for f in futs] == [f"/w{i}" for i in range(20)]
            assert time.monotonic() - t0 < 2.0


def test_streamed_response_and_request_body():
    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            for i in range(100):
                yield b"%d:" % i + body + b"\n"
        return gen()

    with TornadoThread(make(app)) as srv:
        r = requests.post(srv.url + "/s", data=b"xyz")
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.text == "".join(f"{i}:xyz\n" for i in range(100))


def test_head_and_empty_and_write_callable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/write":
            write(b"written ")
            return [b"returned"]
        return [b"hello"]

    with TornadoThread(make(app)) as srv:
        assert requests.get(srv.url + "/write").text == "written returned"
        r = requests.head(srv.url + "/x")
        assert r.status_code == 200 and r.content == b""


def test_app_error_is_a_500_and_the_loop_carries_on():
    def app(environ, start_response):
        raise RuntimeError("broken app")

    with TornadoThread(make(app)) as srv:
        assert requests.get(srv.url + "/x").status_code == 500
        assert requests.get(srv.url + "/native").text == "native"


def test_status_and_header_fields_are_checked_as_the_server_checks_them():
    # No wsgiref validator here: the container's own checks (the server's
    # start_response and header checks) must refuse these.
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/crlf":
            start_response("200 OK", [("X-Note", "a\r\nSet-Cookie: stolen=1")])
        elif path == "/status":
            start_response("OK", [("Content-Type", "text/plain")])
        elif path == "/bytes":
            start_response("200 OK", [(b"X-Note", b"bytes")])
        else:
            start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"body"]

    def factory():
        return tornado.web.Application([(r".*", tornado.web.FallbackHandler,
                                         {"fallback": WSGIContainer(app)})])

    with TornadoThread(factory) as srv:
        r = requests.get(srv.url + "/crlf")
        assert r.status_code == 500 and "Set-Cookie" not in r.headers
        assert requests.get(srv.url + "/status").status_code == 500
        assert requests.get(srv.url + "/bytes").status_code == 500
        assert requests.get(srv.url + "/fine").text == "body"


def test_cores_bound_concurrency():
    inside = []
    peak = []

    def app(environ, start_response):
        inside.append(1)
        peak.append(len(inside))
        tgreen.sleep(0.1)
        inside.pop()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with TornadoThread(make(app, cores=3)) as srv:
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            assert all(r.text == "ok" for r in ex.map(lambda _: requests.get(srv.url + "/c"), range(10)))
        assert max(peak) == 3
