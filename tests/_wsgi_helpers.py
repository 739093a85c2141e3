"""Helpers for the tgreen.wsgi tests: a server running on its own loop in a
thread (so tests can use ordinary blocking clients), raw-socket HTTP, and
wsgiref.validate on every app.

    with ServerThread(app, cores=4) as srv:
        r = requests.get(srv.url + "/")
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import threading
import os
import time
import warnings
from collections.abc import Callable
from typing import Any
from wsgiref.validate import WSGIWarning, validator

import tgreen.loop
from tgreen.wsgi import WSGIServer

# A wsgiref.validate warning is a failure, not noise.
warnings.filterwarnings("error", category=WSGIWarning)


class LogCapture(logging.Handler):
    """Records what the server logs (errors, tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() + (f" [{r.exc_info[1]!r}]" if r.exc_info else "")
                for r in self.records if r.levelno >= logging.ERROR]


class ServerThread:
    """A WSGIServer on a fresh loop in a background thread."""

    def __init__(self, app: Callable, validate: bool = True, loop_kind: str | None = None,
                 listener: Any = ("127.0.0.1", 0), **options: Any) -> None:
        self.app = validator(app) if validate else app
        self.options = options
        # TGREEN_TEST_SERVER_LOOP=uvloop runs every server test on uvloop
        # (.ci/run does both).
        self.loop_kind = loop_kind or os.environ.get("TGREEN_TEST_SERVER_LOOP", "asyncio")
        self.listener = listener
        self.server: WSGIServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.log = LogCapture()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            old = tgreen.loop.loop_kind()
            tgreen.loop.set_loop_kind(self.loop_kind)
            try:
                loop = self.loop = tgreen.loop.new_event_loop()
            finally:
                tgreen.loop.set_loop_kind(old)
            asyncio.set_event_loop(loop)
            self.server = WSGIServer(self.listener, self.app, **self.options)
            self.server.start()
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def __enter__(self) -> ServerThread:
        logging.getLogger("tgreen.wsgi").addHandler(self.log)
        logging.getLogger("tgreen.wsgi").setLevel(logging.DEBUG)
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            def stop() -> None:
                self.server.close()
                self.loop.call_soon(self.loop.stop)
            self.loop.call_soon_threadsafe(stop)
            self.thread.join(10)
        logging.getLogger("tgreen.wsgi").removeHandler(self.log)

    def call(self, fn: Callable[[], Any], timeout: float = 5) -> Any:
        """Run ``fn()`` on the server's loop and return its result."""
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as e:
                box.append((False, e))
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(timeout), "the server loop did not answer"
        ok, value = box[0]
        if not ok:
            raise value
        return value

    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, timeout: float = 5) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


def read_response(sock: socket.socket, method: str = "GET") -> http.client.HTTPResponse:
    """Read one response from ``sock`` (fully, body included)."""
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    resp.body = resp.read()  # type: ignore[attr-defined]
    return resp


class _SharedFile:
    """One buffered reader shared by successive HTTPResponse objects: each
    response "closes" its file when done; this one stays open."""

    def __init__(self, fp: Any) -> None:
        self._fp = fp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def close(self) -> None:
        pass


class _SharedSock:
    def __init__(self, fp: _SharedFile) -> None:
        self._fp = fp

    def makefile(self, *args: Any, **kwargs: Any) -> _SharedFile:
        return self._fp


class ResponseReader:
    """Reads several responses from one socket (pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")
        self.sock = _SharedSock(_SharedFile(self._file))

    def close(self) -> None:
        """Drop the reader's reference to the socket (makefile keeps it open)."""
        self._file.close()

    def next(self, method: str = "GET") -> http.client.HTTPResponse:
        resp = http.client.HTTPResponse(self.sock, method=method)  # type: ignore[arg-type]
        resp.begin()
        resp.body = resp.read()  # type: ignore[attr-defined]
        return resp


def recv_all(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything until the server closes (or ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunks.append(b"<RESET>")
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def is_closed(sock: socket.socket, timeout: float = 2) -> bool:
    """True if the server closed the connection (EOF or reset) in time."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def hello_app(environ: dict, start_response: Callable) -> list[bytes]:
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
