"""``WSGIContainer``: a WSGI app inside a Tornado application, run greenly.

A drop-in for ``tornado.wsgi.WSGIContainer``: each request runs in a
greenlet (at most ``cores`` at once; the rest wait their turn), so a
blocking-style app (green sockets, ``tgreen.sleep``, ``requests`` under
``monkey.patch_all()``) never blocks the Tornado loop, and the response is
streamed chunk by chunk instead of collected whole. ::

    import tornado.web
    from tgreen.wsgi import WSGIContainer

    container = WSGIContainer(flask_app, cores=100)
    app = tornado.web.Application([
        (r"/api/.*", ApiHandler),                                     # native Tornado
        (r".*", tornado.web.FallbackHandler, {"fallback": container}),  # everything else
    ])

Tornado has already read the request body (unless the handler streams), so
``wsgi.input`` is a BytesIO of it; the environ is Tornado's, completed with
``wsgi.file_wrapper`` and ``wsgi.input_terminated``.

``start_response``, its checks of the status and header fields, and the
pacing rule are the server's (``_response.StartResponse``): a chunk is
handed to Tornado's connection and the greenlet waits for the write to be
flushed only once ``FLUSH_AT`` bytes are outstanding, and it yields to the
loop after running for ``SLICE`` seconds, like the server's cores.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

import tornado.httputil
import tornado.wsgi
from tornado.iostream import StreamClosedError

from ..bridge import wait
from ..greenlet import spawn
from ..hub import get_hub
from ._response import FLUSH_AT, FileWrapper, StartResponse, check_header_fields, close_iterable

__all__ = ["WSGIContainer"]

log = logging.getLogger("tgreen.wsgi")

class WSGIContainer(tornado.wsgi.WSGIContainer):
    """Runs ``wsgi_application`` for Tornado requests, each in a greenlet."""

    def __init__(self, wsgi_application: Callable, cores: int = 100) -> None:
        super().__init__(wsgi_application)
        if cores < 1:
            raise ValueError("tgreen: cores must be at least 1")
        self.cores = cores
        self.active = 0
        self.waiting: collections.deque = collections.deque()

    def __call__(self, request: tornado.httputil.HTTPServerRequest) -> None:
        if self.active < self.cores:
            self.active += 1
            spawn(self._core, request)
        else:
            self.waiting.append(request)

    def _core(self, request: Any) -> None:
        try:
            while request is not None:
                try:
                    self._serve(request)
                except Exception as e:
                    log.error("tgreen: WSGIContainer failed on %s %s", request.method, request.uri,
                              exc_info=e)
                request = self.waiting.popleft() if self.waiting else None
        finally:
            self.active -= 1

    def environ(self, request: Any) -> dict:
        env = super().environ(request)
        env["wsgi.file_wrapper"] = FileWrapper
        env["wsgi.input_terminated"] = True
        env["wsgi.multithread"] = self.cores > 1
        env["wsgi.multiprocess"] = False
        env.setdefault("RAW_URI", request.uri)
        return env

    def _serve(self, request: Any) -> None:
        resp = _ContainerResponse(request)
        result = None
        try:
            result = self.wsgi_application(self.environ(request), resp.start_response)
            if type(result) is list and len(result) <= 1 and not resp.head_out:
                body = result[0] if result else b""
                resp.send_head(body, len(body))
            else:
                for chunk in result:
                    resp.write(chunk)
                if not resp.head_out:
                    resp.send_head(b"", 0)
            request.connection.finish()
        except StreamClosedError:
            pass  # the client went away
        except Exception as e:
            log.error("error handling %s %s", request.method, request.uri, exc_info=e)
            if not resp.head_out:
                resp.status, resp.headers = "500 Internal Server Error", [
                    ("Content-Type", "text/plain"), ("Connection", "close")]
                try:
                    resp.send_head(b"500 Internal Server Error\n", 26)
                    request.connection.finish()
                except StreamClosedError:
                    pass
            else:
                _close(request.connection)
        finally:
            close_iterable(result)
        if resp.status is not None:
            self._log(int(resp.status[:3]), request)


class _ContainerResponse(StartResponse):
    """One response written to Tornado's connection: the server's
    ``start_response`` and header checks (``StartResponse``,
    ``check_header_fields``), and its pacing: wait for Tornado to flush once
    ``FLUSH_AT`` bytes are outstanding, else yield after ``SLICE``."""

    def __init__(self, request: Any) -> None:
        self.conn = request.connection
        self.head_only = request.method == "HEAD"
        self.hub = get_hub()
        self.outstanding = 0     # bytes handed to Tornado since the last flush wait
        self.slice_start = time.monotonic()

    def send_head(self, first: bytes, total: int | None) -> Any:
        status = self.status
        if status is None:
            raise AssertionError("the app returned without calling start_response()")
        headers = self.headers
        assert headers is not None   # set with status
        check_header_fields(status, headers)
        code_s, _, reason = status.partition(" ")
        code = int(code_s)
        hdrs = tornado.httputil.HTTPHeaders()
        for k, v in headers:
            hdrs.add(k, v)
        if total is not None and "Content-Length" not in hdrs and code not in (204, 304) \
                and code >= 200:
            hdrs["Content-Length"] = str(total)
        self.head_out = True
        start_line = tornado.httputil.ResponseStartLine("HTTP/1.1", code, reason)
        return self.conn.write_headers(start_line, hdrs, b"" if self.head_only else first)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if not self.head_out:
            self._pace(self.send_head(data, None), len(data))
        elif not self.head_only:
            self._pace(self.conn.write(data), len(data))

    def _pace(self, fut: Any, n: int) -> None:
        self.outstanding += n
        if self.outstanding >= FLUSH_AT:
            self.outstanding = 0
            wait(fut)
            self.slice_start = time.monotonic()
        else:
            self.maybe_yield(self.hub)


def _close(conn: Any) -> None:
    stream = getattr(conn, "stream", None)
    if stream is not None:
        stream.close()
    elif hasattr(conn, "close"):
        conn.close()

