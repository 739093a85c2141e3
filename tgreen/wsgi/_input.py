"""``wsgi.input``: a request body streamed from the connection to the app.

The connection protocol (``_protocol.py``) feeds body bytes as the parser
produces them (``feed``), marks the end (``end``) or a failure (``fail``),
and wakes a waiting reader (``wake``); the app reads from its core
greenlet. Those four, ``pause_if_full``, ``buffered``, ``received`` and
``complete`` are the protocol's whole interface to a body. ::

    body = environ["wsgi.input"].read()          # whole body (chunked too)
    for line in environ["wsgi.input"]: ...       # or line by line

Rules of this file:

1. Only the core greenlet that serves the request reads; only loop callbacks
   feed. A read that needs more bytes parks the core on a ``Waiter`` that the
   protocol wakes *after* ``feed_data`` returns (never from inside a parser
   callback, so app code never runs inside the parser).
2. Backpressure: the protocol pauses reading the socket when unread body
   bytes pile up past ``HIGH_WATER`` while nobody is waiting for them; a read
   that drains the buffer below ``LOW_WATER``, or that has to wait, resumes it.
   A reader waiting for more never has reading paused under it.
3. ``Expect: 100-continue`` is answered lazily: the interim response goes out
   on the first read that has to wait for the body, and only if the app has
   not started its own response.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..hub import TIMEDOUT, Waiter

__all__ = ["Input", "ClientDisconnected", "RequestError", "HIGH_WATER", "LOW_WATER"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class ClientDisconnected(OSError):
    """The client went away before the request body or the response was done."""


class RequestError(IOError):
    """The request body is unacceptable; ``status`` is the answer to give
    (400 bad framing, 408 body timeout, 413 too large). Raised from
    ``wsgi.input`` reads; if the app lets it propagate before starting its
    response, the server answers with that status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Input:
    """A file-like, read-only request body (PEP 3333 ``wsgi.input``)."""

    __slots__ = ("_conn", "_buf", "complete", "_error", "_waiter", "_continue", "_paused",
                 "_timeout", "received")

    def __init__(self, conn: Any, expect_continue: bool = False, timeout: float | None = None,
                 complete: bool = False) -> None:
        self._conn = conn
        self._buf = bytearray()
        #: The whole body has been received (read or not). A plain attribute,
        #: not a property: the server reads it once per request.
        self.complete = complete
        self._error: BaseException | None = None
        self._waiter: Waiter | None = None
        self._continue = expect_continue
        self._paused = False      # the protocol paused reading on our behalf
        self._timeout = timeout   # seconds a read may wait for the next bytes
        self.received = 0         # body bytes received so far

    # -- the protocol's side ---------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """More body bytes arrived."""
        self._buf += data
        self.received += len(data)

    def end(self) -> None:
        """The body is complete."""
        self.complete = True

    def fail(self, exc: BaseException) -> None:
        """The body can never complete: reads raise ``exc`` (the first failure wins)."""
        if not self.complete and self._error is None:
            self._error = exc

    def wake(self) -> None:
        """Resume a reader waiting for bytes, the end or an error. Called
        from the loop after ``feed_data`` returned (rule 1)."""
        w = self._waiter
        if w is not None:
            self._waiter = None
            w.switch(None)

    def pause_if_full(self) -> bool:
        """True when the protocol should pause reading for this body now
        (rule 2): nobody waits and more than ``HIGH_WATER`` bytes are unread.
        The reader resumes it (``conn.resume_body()``) once it drains."""
        if self._waiter is None and not self._paused and len(self._buf) > HIGH_WATER:
            self._paused = True
            return True
        return False

    def response_started(self) -> None:
        """The response began: too late for ``100 Continue`` (rule 3)."""
        self._continue = False

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet read."""
        return len(self._buf)

    # -- waiting -------------------------------------------------------------------------

    def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        conn = self._conn
        if self._continue:
            self._continue = False
            conn.send_continue()
        if self._paused:
            self._paused = False
            conn.resume_body()
        w = self._waiter = Waiter(conn.hub)
        try:
            result = w.get(self._timeout, "reading wsgi.input")
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error
        if result is TIMEDOUT:
            exc = RequestError(408, "request body timed out")
            self._error = exc
            conn.body_timed_out()
            raise exc

    def _consumed(self) -> None:
        if self._paused and len(self._buf) < LOW_WATER:
            self._paused = False
            self._conn.resume_body()

    def _take(self, n: int) -> bytes:
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if self._paused:
            self._consumed()
        return data

    # -- the file API ----------------------------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at the end of the body), or all."""
        if size is None or size < 0:
            while not self.complete:
                self._wait()
            return self._take(len(self._buf))
        while len(self._buf) < size and not self.complete:
            self._wait()
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        """Read what is buffered (waiting only if nothing is), at most ``size``."""
        while not self._buf and not self.complete:
            self._wait()
        return self._take(len(self._buf) if size is None or size < 0 else size)

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line (up to and including ``\\n``), at most ``size`` bytes."""
        limit = -1 if size is None else size
        start = 0
        while True:
            buf = self._buf
            i = buf.find(b"\n", start)
            if i >= 0:
                n = i + 1
                return self._take(n if limit < 0 else min(n, limit))
            if 0 <= limit <= len(buf) or self.complete:
                return self._take(len(buf) if limit < 0 else min(len(buf), limit))
            start = len(buf)
            self._wait()

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Apps must not close ``wsgi.input``; tolerated and ignored."""

    def __repr__(self) -> str:
        state = "eof" if self.complete else ("error" if self._error else "streaming")
        return f"<tgreen.wsgi.Input {state} buffered={len(self._buf)} received={self.received}>"
