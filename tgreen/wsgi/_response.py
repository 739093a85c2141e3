"""Running the WSGI app for one request and writing its response.

``run_request(server, conn, req)`` runs in a core greenlet. It builds the
environ, calls the app, frames the body (Content-Length, chunked, or
close-delimited), writes it with flow control, and always calls the result's
``close()``. ::

    keep_alive = run_request(server, conn, req)

Theory of operation
-------------------
*Corking.* Body bytes go into ``pending`` and leave in one
``transport.write`` when the core next yields to the loop (a ``call_soon``
flush), when 64 KiB are pending, or when the response ends. The status line,
headers and first body bytes therefore always leave in one write (no Nagle /
delayed-ACK stall), and a generator's chunks produced in one burst leave in
one ``send`` instead of one each; a generator that blocks between chunks (a
server-sent-events stream) has each chunk flushed as soon as it blocks.

*Fairness.* A core yields to the loop when its write would block (the
transport paused writing: it waits for ``resume_writing``) or when it has
run for ``SLICE`` seconds since it last yielded, not after every chunk: one
loop round trip per chunk made the seed 3x slower than gevent (docs/design.md, section 8).

Rules of this file:

1. Nothing is sent before the first non-empty body chunk or the end of the
   body (PEP 3333), so an app may still replace its status with ``exc_info``.
2. ``close()`` of the app's iterable is called exactly once, whatever
   happens: app error, client gone, core killed.
3. A response whose framing broke (app error after headers went out, fewer
   bytes than its Content-Length) ends by aborting the connection: the
   client must see a truncated response, never a complete-looking one.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from typing import Any

from greenlet import GreenletExit, getcurrent

from ..bridge import wait
from ..hub import Hub, Waiter
from ..timeout import Timeout
from ._environ import build
from ._errors import HTTPError, error_response
from ._input import ClientDisconnected, RequestError
from ._takeover import offer, release, taken_over
from ._timeout import RequestTimeout, timed_out
from ._transport import SocketTransport

__all__ = ["run_request", "FileWrapper", "StartResponse", "check_header_fields", "yield_to_loop",
           "SLICE", "FLUSH_AT"]

log = logging.getLogger("tgreen.wsgi")

#: Longest a core streams before it lets the loop run other work.
SLICE = 0.002
#: Pending body bytes that force a write without waiting for a yield (the
#: server), or unflushed bytes that make the core wait (WSGIContainer).
FLUSH_AT = 64 * 1024

_NO_BODY_STATUS = frozenset((204, 304))
_HEADS: dict = {}
_HEADS_MAX = 512
_RESPONSE_SPECIAL = {"content-length": 1, "connection": 2, "transfer-encoding": 3,
                     "keep-alive": 3, "date": 4}


class FileWrapper:
    """``wsgi.file_wrapper``: serve a file-like object, with ``sendfile``
    when it is a regular file and the transport allows it."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def check_header_fields(status: str, headers: list) -> None:
    """Every header name and value is a str without CR or LF (no response
    splitting). The server runs it only when its one-pass count over the
    serialized head finds a stray CR/LF (``_build_head``); WSGIContainer
    runs it on every head."""
    for item in [("status", status), *headers]:
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"header {item!r}: name and value must be str")
        if "\n" in name or "\r" in name or "\n" in value or "\r" in value:
            raise ValueError(f"CR/LF in response header {item!r}")


def yield_to_loop(hub: Hub) -> None:
    """Let the loop run the other ready callbacks once, then carry on."""
    w = Waiter(hub)
    hub.loop.call_soon(w.switch)
    w.get(None, "yielding to the loop")


class StartResponse:
    """PEP 3333 ``start_response`` and the pacing rule, shared by the
    server's responses (``_Response``) and ``WSGIContainer``'s: the same
    checks of status and headers, the same ``exc_info`` rules, the same
    fairness (``maybe_yield``). A subclass provides ``write``."""

    status: str | None = None
    headers: list | None = None
    head_out = False            # the head is queued: the status is final
    slice_start = 0.0

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_out:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        if type(status) is not str or not status[:3].isdigit() or status[3:4] not in (" ", ""):
            raise ValueError(f"bad status {status!r}: expected a str like '200 OK'")
        if type(headers) is not list:
            raise TypeError(f"headers must be a list, not {type(headers).__name__}")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def maybe_yield(self, hub: Hub) -> bool:
        """The fairness rule: after ``SLICE`` seconds of streaming since the
        last yield (or wait), let the loop run once. True if it yielded."""
        if time.monotonic() - self.slice_start > SLICE:
            yield_to_loop(hub)
            self.slice_start = time.monotonic()
            return True
        return False


class _Response(StartResponse):
    """start_response/write state and the body writer for one request.

    No ``__slots__``: the class attributes are the defaults, so making one
    per request sets only four attributes."""

    head: bytes | None = None   # serialized once the body starts
    sent = False                # bytes reached the transport
    code = 0
    length: int | None = None   # Content-Length in force
    written = 0                 # body bytes accepted so far
    chunked = False
    no_body = False
    pending: list | None = None
    pending_len = 0
    flush_handle: Any = None
    auto_flush = True           # schedule a flush when bytes are queued

    def __init__(self, server: Any, conn: Any, req: Any, keep: bool) -> None:
        self.server = server
        self.conn = conn
        self.req = req
        self.keep = keep

    # -- the app's side: start_response (StartResponse), write -----------------------------

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable returned by start_response."""
        if self.status is None:
            raise AssertionError("write() before start_response()")
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"write() takes bytes, not {type(data).__name__}")
            data = bytes(data)
        if data:
            if self.head is None:
                self._make_head(None)
                self.slice_start = time.monotonic()
            self._body(data)
            self._after_chunk()

    # -- framing --------------------------------------------------------------------------

    def _make_head(self, total: int | None) -> None:
        """Serialize status and headers; ``total`` is the whole body's length
        when it is already known (a list result), else None.

        Heads are cached by everything they depend on except the Date line,
        which is appended per second: most responses of an app repeat the
        same few heads."""
        req = self.req
        status = self.status
        if status is None:
            raise AssertionError("the app returned without calling start_response()")
        if self.keep and (not req.input.complete or self.server.draining):
            # The body is still on its way (or never came: no 100 Continue was
            # sent): whether it will ever end is unknown, so no reuse. Or the
            # server is stopping: tell the client this is the last response.
            self.keep = False
        try:
            key: Any = (status, total, self.keep, req.version, req.method == "HEAD",
                        *self.headers)  # type: ignore[misc]  # set with status
            hit = _HEADS.get(key)
        except TypeError:  # an unhashable header item: build it each time
            key = hit = None
        if hit is None:
            hit = self._build_head(status, total)
            if key is not None:
                if len(_HEADS) >= _HEADS_MAX:
                    _HEADS.clear()
                _HEADS[key] = hit
        prefix, self.code, self.length, self.chunked, self.no_body, self.keep, has_date = hit
        self.head = prefix + b"\r\n" if has_date else prefix + self.server.date_line + b"\r\n"

    def _build_head(self, status: str, total: int | None) -> tuple:
        code = int(status[:3])
        req = self.req
        keep = self.keep
        length = None
        has_date = False
        chunked = no_body = False
        out = ["HTTP/1.1 ", status, "\r\n"]
        for name, value in self.headers:  # type: ignore[union-attr]  # set with status
            if type(name) is not str or type(value) is not str:
                check_header_fields(status, self.headers)  # type: ignore[arg-type]  # raises
            act = _RESPONSE_SPECIAL.get(name.lower())
            if act is not None:
                if act == 1:    # content-length
                    try:
                        length = int(value)
                    except ValueError:
                        raise ValueError(f"bad Content-Length {value!r}") from None
                    if length < 0:
                        raise ValueError(f"bad Content-Length {value!r}")
                elif act == 2:  # connection: hop-by-hop, the server decides
                    if "close" in value.lower():
                        keep = False
                    continue
                elif act == 3:  # transfer-encoding, keep-alive: the server frames
                    continue
                else:           # date
                    has_date = True
            out += (name, ": ", value, "\r\n")
        mark = len(out)
        if code < 200 or code in _NO_BODY_STATUS:
            no_body = True
            length = None
        elif req.method == "HEAD":
            no_body = True
            if length is None and total is not None:
                out.append("Content-Length: %d\r\n" % total)
        elif length is None:
            if total is not None:
                length = total
                out.append("Content-Length: %d\r\n" % total)
            elif req.version == "1.1":
                chunked = True
                out.append("Transfer-Encoding: chunked\r\n")
            else:
                keep = False  # HTTP/1.0: the body ends when we close
        if not keep:
            out.append("Connection: close\r\n")
        elif req.version == "1.0":
            out.append("Connection: keep-alive\r\n")
        head = "".join(out)
        # One pass in C instead of a check per header: a CR or LF inside a
        # status, name or value (response splitting) adds to the count.
        n = (mark - 3) // 4 + 1 + len(out) - mark
        if head.count("\n") != n or head.count("\r") != n:
            check_header_fields(status, self.headers)  # type: ignore[arg-type]
        return head.encode("latin-1"), code, length, chunked, no_body, keep, has_date

    def _body(self, data: bytes) -> None:
        """Queue body bytes (head already made)."""
        n = len(data)
        length = self.length
        if length is not None:
            room = length - self.written
            if n > room:
                if room <= 0:
                    self.written += n
                    return
                data = data[:room]
                n = room
        self.written += n
        if self.no_body:
            return
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (n, data)
        self._out(data)

    def _out(self, data: bytes) -> None:
        if not self.head_out:
            self.head_out = True
            self.req.input.response_started()  # too late for 100 Continue
            data = self.head + data  # type: ignore[operator]  # _make_head() ran
        pending = self.pending
        if pending is None:
            pending = self.pending = []
        pending.append(data)
        self.pending_len += len(data)
        if self.pending_len >= FLUSH_AT:
            self._flush_now()
        elif self.flush_handle is None and self.auto_flush:
            self.flush_handle = self.server.loop.call_soon(self._flush_cb)

    def _flush_cb(self) -> None:
        self.flush_handle = None
        self._write_pending()

    def _write_pending(self) -> None:
        pending = self.pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self.pending_len = 0
        conn = self.conn
        if not conn.closed:
            self.sent = True
            conn.transport.write(data)

    def _flush_now(self) -> None:
        h = self.flush_handle
        if h is not None:
            self.flush_handle = None
            h.cancel()
        self._write_pending()
        conn = self.conn
        if conn.write_paused or conn.closed:
            conn.wait_drain()
            self.slice_start = time.monotonic()

    def _after_chunk(self) -> None:
        """Flow control and fairness between chunks (see the module doc)."""
        conn = self.conn
        if conn.closed:
            raise ClientDisconnected("client disconnected")
        if conn.write_paused:
            self._flush_now()
        elif self.maybe_yield(conn.hub) and conn.closed:
            raise ClientDisconnected("client disconnected")

    def finish(self) -> None:
        """End the body: terminator, last write. Aborts on short bodies (rule 3)."""
        self.auto_flush = False
        if self.head is None:
            self._make_head(0)
        if not self.head_out:
            self._out(b"")
        if self.chunked:
            self._out(b"0\r\n\r\n")
        h = self.flush_handle
        if h is not None:
            self.flush_handle = None
            h.cancel()
        self._write_pending()
        if self.length is not None and self.written < self.length and not self.no_body:
            log.error("%s %s: the app sent %d of %d bytes (Content-Length); closing",
                      self.req.method, self.req.url.decode("latin-1"), self.written, self.length)
            self.keep = False
            self.conn.abort()

    def discard_pending(self) -> None:
        h = self.flush_handle
        if h is not None:
            self.flush_handle = None
            h.cancel()
        self.pending = None
        self.pending_len = 0

    # -- sendfile -------------------------------------------------------------------------

    def sendfile(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with loop.sendfile. False: not possible here,
        iterate the wrapper instead."""
        f = wrapper.filelike
        try:
            fd = f.fileno()
            st = os.fstat(fd)
            offset = f.tell()
        except (AttributeError, OSError, ValueError):
            return False
        loop = self.server.loop
        if not stat.S_ISREG(st.st_mode) or not hasattr(loop, "sendfile"):
            return False
        count = max(st.st_size - offset, 0)
        if self.head is None:
            self._make_head(count)
        elif self.chunked:
            return False  # a write() came first and the head promised chunks
        self._out(b"")
        if self.no_body:
            return True
        if self.length is not None:
            count = min(count, self.length - self.written)
        self._flush_now()
        conn = self.conn
        try:
            t = conn.transport
            # tgreen's own transport sends files itself; a loop transport (TLS)
            # goes through loop.sendfile.
            sent = wait(t.sendfile(f, offset, count) if isinstance(t, SocketTransport)
                        else loop.sendfile(t, f, offset, count))
        except (ConnectionError, RuntimeError) as e:
            if conn.closed or conn.transport.is_closing():
                raise ClientDisconnected(str(e)) from e
            raise
        self.written += sent
        try:
            f.seek(offset + sent)
        except (OSError, ValueError):
            pass
        return True


def close_iterable(result: Any) -> None:
    """Call the app result's ``close()`` if it has one (PEP 3333); an error
    there is logged, never raised into the server."""
    if result is not None and hasattr(result, "close"):
        try:
            result.close()
        except Exception as e:
            log.error("error in the close() of %r", result, exc_info=e)


class _TakenOver(Exception):
    """The app returned after taking the connection over (``_takeover.py``)."""


def run_request(server: Any, conn: Any, req: Any) -> bool:
    """Serve ``req`` in the current core greenlet; return whether the
    connection may carry another request."""
    resp = _Response(server, conn, req,
                     # A client that half-closed still gets an answer to every
                     # request it sent before; the last one ends the connection.
                     req.keep_alive and not server.draining
                     and not (conn.client_eof and not conn.queue))
    result: Any = None
    env: Any = None
    getcurrent().gr_context = server.context.copy()
    try:
        env = build(server, conn, req)
        if req.upgrade:
            offer(conn, env)   # environ['gunicorn.socket'] (_takeover.py)
        result = server.app(env, resp.start_response)
        if conn.taken_over:
            raise _TakenOver   # the app spoke the new protocol itself: no response
        if type(result) is list or type(result) is tuple:
            if resp.head is None and len(result) == 1 and type(result[0]) is bytes:
                # The common case, in one write and few calls: a single
                # chunk whose length is the Content-Length.
                body = result[0]
                resp._make_head(len(body))
                if resp.no_body or resp.length == len(body):
                    resp.written = len(body)
                    if not conn.closed:
                        resp.sent = resp.head_out = True
                        conn.transport.write(  # head: set by _make_head() above
                            resp.head if resp.no_body else resp.head + body)  # type: ignore[operator]
                    if server.after_request is not None:
                        server.after_request(conn, req, resp, env)
                    return resp.keep
            _write_sequence(resp, result)
        elif isinstance(result, FileWrapper) and resp.status is not None and resp.sendfile(result):
            pass
        else:
            _write_iterable(resp, result)
        resp.finish()
    except ClientDisconnected:
        resp.keep = False
        resp.discard_pending()
        conn.abort()
    except RequestError as e:
        _fail(resp, conn, e.status, None)
    except RequestTimeout as e:
        timed_out(resp, conn, e)
    except GreenletExit:
        resp.keep = False
        resp.discard_pending()
        conn.abort()
        raise
    except HTTPError as e:
        _fail(resp, conn, e.status, None)
    except (Exception, Timeout) as e:
        if conn.taken_over:
            taken_over(resp, conn, None if e.__class__ is _TakenOver else e)
        else:
            # A tgreen.Timeout of the app's own that it let escape is its error.
            _fail(resp, conn, 500, e)
    finally:
        if result is not None and result.__class__ is not list:  # a list has no close()
            close_iterable(result)
        if conn.takeover_socket is not None:
            release(conn)
    if server.after_request is not None:
        server.after_request(conn, req, resp, env)   # metrics, access log
    return resp.keep


def _write_sequence(resp: _Response, result: Iterable[bytes]) -> None:
    """A list/tuple body: all of it is here, one write (Content-Length known);
    ``finish()`` follows at once, so no flush is scheduled."""
    resp.auto_flush = False
    if resp.head is None:
        total = 0
        for chunk in result:
            if type(chunk) is not bytes:
                raise TypeError(f"the app returned {type(chunk).__name__} in its body, not bytes")
            total += len(chunk)
        resp._make_head(total)
    for chunk in result:
        if type(chunk) is not bytes:
            raise TypeError(f"the app returned {type(chunk).__name__} in its body, not bytes")
        if chunk:
            resp._body(chunk)
    if resp.conn.write_paused:
        resp._flush_now()


def _write_iterable(resp: _Response, result: Iterable[bytes]) -> None:
    resp.slice_start = time.monotonic()
    for chunk in result:
        if type(chunk) is not bytes:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(f"the app yielded {type(chunk).__name__}, not bytes")
            chunk = bytes(chunk)
        if not chunk:
            continue
        if resp.head is None:
            resp._make_head(None)
        resp._body(chunk)
        resp._after_chunk()


def _fail(resp: _Response, conn: Any, status: int, exc: BaseException | None) -> None:
    """The request failed: answer ``status`` if nothing went out yet, else
    abort (rule 3). ``exc`` (an app error) is logged with its traceback."""
    if exc is not None:
        req = resp.req
        log.error("error handling %s %s", req.method, req.url.decode("latin-1", "replace"),
                  exc_info=exc)
    resp.keep = False
    resp.code = status
    resp.discard_pending()
    if resp.sent or conn.closed:
        conn.abort()
        return
    conn.transport.write(error_response(status, resp.server.date_line))
