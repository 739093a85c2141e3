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

Flow control: a chunk is handed to Tornado's connection and the greenlet
waits for the write to be flushed only once 64 KiB are outstanding, and it
yields to the loop after running for ``SLICE`` seconds, like the server's
cores (``_response.py``).
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
from ..hub import Waiter, get_hub
from ._response import SLICE, FileWrapper, close_iterable

__all__ = ["WSGIContainer"]

log = logging.getLogger("tgreen.wsgi")

#: Bytes handed to Tornado before the greenlet waits for them to be flushed.
FLUSH_AT = 64 * 1024


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
        conn = request.connection
        state: dict[str, Any] = {"status": None, "headers": None, "sent": False}
        hub = get_hub()
        outstanding: list[Any] = [0, None]   # bytes since the last flush wait, last future
        slice_start = [time.monotonic()]
        head = request.method == "HEAD"

        def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
            if exc_info is not None:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response() called a second time without exc_info")
            state["status"] = status
            state["headers"] = headers
            return write

        def send_headers(first: bytes, total: int | None) -> Any:
            status = state["status"]
            if status is None:
                raise AssertionError("the app returned without calling start_response()")
            code_s, _, reason = status.partition(" ")
            code = int(code_s)
            hdrs = tornado.httputil.HTTPHeaders()
            for k, v in state["headers"]:
                hdrs.add(k, v)
            if total is not None and "Content-Length" not in hdrs and code not in (204, 304) \
                    and code >= 200:
                hdrs["Content-Length"] = str(total)
            state["sent"] = True
            start_line = tornado.httputil.ResponseStartLine("HTTP/1.1", code, reason)
            return conn.write_headers(start_line, hdrs, b"" if head else first)

        def pace(fut: Any, n: int) -> None:
            outstanding[0] += n
            outstanding[1] = fut
            if outstanding[0] >= FLUSH_AT:
                outstanding[0] = 0
                wait(fut)
                slice_start[0] = time.monotonic()
            elif time.monotonic() - slice_start[0] > SLICE:
                w = Waiter(hub)
                hub.loop.call_soon(w.switch)
                w.get(None, "yielding to the loop")
                slice_start[0] = time.monotonic()

        def write(data: bytes) -> None:
            if not data:
                return
            if not state["sent"]:
                pace(send_headers(data, None), len(data))
            elif not head:
                pace(conn.write(data), len(data))

        result = None
        try:
            result = self.wsgi_application(self.environ(request), start_response)
            if type(result) is list and len(result) <= 1 and not state["sent"]:
                body = result[0] if result else b""
                send_headers(body, len(body))
            else:
                for chunk in result:
                    write(chunk)
                if not state["sent"]:
                    send_headers(b"", 0)
            conn.finish()
        except StreamClosedError:
            pass  # the client went away
        except Exception as e:
            log.error("error handling %s %s", request.method, request.uri, exc_info=e)
            if not state["sent"]:
                state["status"], state["headers"] = "500 Internal Server Error", [
                    ("Content-Type", "text/plain"), ("Connection", "close")]
                try:
                    send_headers(b"500 Internal Server Error\n", 26)
                    conn.finish()
                except StreamClosedError:
                    pass
            else:
                _close(conn)
        finally:
            close_iterable(result)
        if state["status"] is not None:
            self._log(int(state["status"][:3]), request)


def _close(conn: Any) -> None:
    stream = getattr(conn, "stream", None)
    if stream is not None:
        stream.close()
    elif hasattr(conn, "close"):
        conn.close()

