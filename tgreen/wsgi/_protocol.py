"""The HTTP/1.1 connection: an asyncio Protocol with the httptools (llhttp) parser.

Theory of operation
-------------------
Everything on the wire side of a connection happens here, in loop callbacks;
the app side happens in a *core* greenlet (``_cores.py``) running
``_response.run_request``. ::

    data_received --feed--> llhttp --callbacks--> Request objects --> self.queue
        after feed: wake a core blocked in wsgi.input; hand the queue to a core
    core greenlet: _serve() pops requests in order, runs the app, writes the
        response through write()/wait_drain(); parks when the queue is empty

A request is *ready* (queued for a core) once its body is complete, or once
``PREBUFFER`` body bytes are in, or when the client waits for
``100 Continue``. So a slow client trickling a small body never holds a core;
only big bodies stream into a running app.

Rules of this file:

1. Parser callbacks only record: they build ``Request`` objects and feed
   bodies. No greenlet is switched to from inside ``feed_data``: app code must
   never run inside the parser.
2. Responses leave in request order. A parse error is queued behind the
   requests before it (``_ErrorItem``) and answered in turn, then the
   connection closes. After an error or a ``Connection: close`` request no
   further byte is parsed, so a malformed or smuggled request can never be
   read as the start of another (no desync).
3. Reading is paused for named reasons (``PAUSE_*`` bits): unread body past
   the high-water mark, a pipelined request waiting behind the current one,
   every core busy. Reading resumes only when no reason is left.
4. Timeouts are deadlines (``self.deadline``), checked by the server's
   once-a-tick sweep, not one timer per request: setting a float per request
   is free, a loop timer is not.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from http import HTTPStatus
from typing import Any

import httptools

from ._errors import HTTPError, error_response
from ._input import ClientDisconnected, Input, RequestError
from ._response import run_request
from ._timeout import stamp

__all__ = ["HttpProtocol", "Request"]

# Reasons to pause reading (rule 3).
PAUSE_BODY = 1        # unread request body above HIGH_WATER
PAUSE_PIPELINE = 2    # a parsed request waits behind the one being served
PAUSE_CORES = 4       # waiting for a free core
PAUSE_TAKEOVER = 8    # the app owns the socket (``take_over``, ``_takeover.py``)

#: Seconds an idle keep-alive connection stays open once the server drains
#: (see ``drain``).
DRAIN_IDLE = 1.0

#: Body bytes a request may collect before a core takes it.
PREBUFFER = 64 * 1024

# Deadline kinds (rule 4).
DL_IDLE, DL_HEADERS, DL_BODY, DL_LINGER = 1, 2, 3, 4

#: Seconds to keep reading (and discarding) after a response that ends the
#: connection while the client may still be sending, so that closing does not
#: reset the connection and destroy the response before the client reads it.
LINGER = 2.0

# Header fields that must not appear in a chunked body's trailer (RFC 9110
# 6.5.1): framing, routing, connection control, authentication. Trailers are
# never passed to the app; these are refused because a proxy that merges
# trailers into the header section would act on them.
_FORBIDDEN_TRAILERS = frozenset(
    b"host content-length transfer-encoding trailer te expect connection keep-alive upgrade "
    b"proxy-connection authorization proxy-authorization".split())

# request-target forms (RFC 9112 3.2) other than origin-form "/..." and "*".
_ABSOLUTE_FORM = re.compile(
    rb"[A-Za-z][A-Za-z0-9+.\-]*://(?:[A-Za-z0-9\-._~%!$&'()*+,;=:]*@)?"
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?(?:[/?][^\s#]*)?(?:#\S*)?\Z")
_AUTHORITY_FORM = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+):[0-9]+\Z")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request:
    """One parsed request: line, headers, framing, and its body stream.

    No ``__slots__``: the class attributes are the defaults, so a new
    request sets three attributes instead of fifteen (it is made per request
    on the hot path)."""

    method = "GET"
    version = "1.1"
    keep_alive = True
    expect = False
    chunked = False
    content_length: int | None = None
    input: Input | None = None
    queued = False
    host_seen = False
    ctype_seen = False
    headers_done = False
    upgrade = False
    forwarded = False
    run_deadline = 0.0     # --timeout: when the running app is interrupted (_timeout.py)
    core: Any = None       # --timeout: the core greenlet running it

    def __init__(self, start: float) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.start = start


class _ErrorItem:
    """A refused request, answered in its turn (rule 2)."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.x connection. Created by the server's acceptor."""

    # An Upgrade request's app took the socket over (``_takeover.py``): class
    # defaults, so connections that never upgrade pay nothing for them.
    taken_over = False
    takeover_socket: Any = None

    def __init__(self, server: Any, listener: Any) -> None:
        self.server = server
        self.cfg = server.cfg
        self.hub = server.hub
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.closed = False            # connection_lost seen (or we aborted)
        self.closing = False           # we decided to close; nothing more is parsed
        self.client_eof = False        # the client half-closed its side
        self.discarded = False         # bytes arrived after parsing stopped
        self.peer: Any = None
        self.trusted = False           # X-Forwarded-* from this peer are believed
        self.environ: dict = {}        # per-connection environ base
        self.requests = 0              # responses completed on this connection
        self.deadline = 0.0
        self.deadline_kind = 0
        self._cur: Request | None = None          # being parsed
        self.queue: collections.deque = collections.deque()  # ready, in order
        self.serving: Any = None                 # the item a core is on
        self.waiting_core = False                 # in the core pool's waiting line
        self._pauses = 0
        self._header_bytes = 0
        self._to_wake: Input | None = None
        #: The transport's buffer is above its high mark (``pause_writing``):
        #: the response code waits (``wait_drain``) before writing more.
        self.write_paused = False
        self._drain_waiter: Any = None
        self.cores = server.cores
        # Limits with "0 = unlimited" resolved to plain numbers (hot path).
        limits = server.limits
        self._max_line, self._max_field, self._max_fields, self._max_head = limits
        self._header_timeout = self.cfg.header_timeout
        self._req_timeout = self.cfg.timeout
        self._keep_alive = server.keep_alive

    # -- connection lifecycle ---------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        self.peer = peer
        self.environ = env = self.listener.environ.copy()
        if isinstance(peer, tuple):
            env["REMOTE_ADDR"] = peer[0]
            env["REMOTE_PORT"] = str(peer[1])
            self.trusted = server.is_trusted(peer[0])
        else:  # unix socket: the peer is a local process (nginx, a sidecar)
            env["REMOTE_ADDR"] = ""
            self.trusted = True
        self.deadline = time.monotonic() + self.cfg.header_timeout if self.cfg.header_timeout else 0.0
        self.deadline_kind = DL_HEADERS
        server.connection_made(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = self.closing = True
        self.deadline = 0.0
        # The parser and this protocol refer to each other: break the cycle so
        # refcounting frees the connection at once, not the cyclic GC later.
        self.parser = None  # type: ignore[assignment]  # no data comes after this
        cur = self._cur
        if cur is not None and cur.input is not None:
            cur.input.fail(ClientDisconnected("client disconnected"))
            cur.input.wake()
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            w.switch(False)
        self.queue.clear()
        self.server.connection_lost(self)

    def eof_received(self) -> bool | None:
        self.client_eof = True
        cur = self._cur
        if cur is not None and cur.input is not None:
            # A body that can never complete.
            cur.input.fail(ClientDisconnected("client closed while sending the body"))
            cur.input.wake()
        if self.serving is not None or self.queue:
            # A half-closed client may still read the response(s) in progress.
            self.closing = True
            return True
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        w = self._drain_waiter
        if w is not None:
            self._drain_waiter = None
            w.switch(True)

    # -- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            # After an error or Connection: close nothing more is parsed.
            self.discarded = True
            return
        cur = self._cur
        if cur is None or not cur.headers_done:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or "Upgrade:": served as a plain request, then the
            # connection ends (the bytes after it belong to another protocol).
            self.closing = True
        except httptools.HttpParserError as e:
            if self.closing:
                self.discarded = True  # bytes after a Connection: close request
            else:
                ctx = e.__context__
                self._refuse(ctx.status if isinstance(ctx, HTTPError) else _status_for(e))
        if self._header_bytes > self._max_head:
            # Still inside one request head after more bytes than the limits
            # allow in total: llhttp itself would keep buffering any header
            # line however long, so the bound is enforced here, per read.
            cur = self._cur
            if cur is not None and not cur.headers_done and not self.closing:
                # A too-long URL fails in on_url first; past it, this is the head.
                self._refuse(431 if cur.url else 414)
        if self._to_wake is None and self.serving is None and not self.waiting_core:
            q = self.queue
            if q and q[0].__class__ is Request:
                self.cores.submit(self)   # the common case: one new request
                return
        self._after_feed()

    def _after_feed(self) -> None:
        inp = self._to_wake
        if inp is not None:
            self._to_wake = None
            inp.wake()       # may run a core until it blocks again
        q = self.queue
        if not q or self.closed:
            return
        if self.serving is None and not self.waiting_core:
            if q[0].__class__ is _ErrorItem:
                # Nothing in flight: answer a refused request right here.
                status = q[0].status
                q.clear()
                self.send_error(status)
            else:
                self.cores.submit(self)
        elif not self._pauses & PAUSE_PIPELINE:
            self.pause(PAUSE_PIPELINE)

    def _refuse(self, status: int) -> None:
        """Stop parsing and answer ``status`` in turn (rule 2)."""
        self.closing = True
        cur = self._cur
        self._cur = None
        if cur is not None and cur.queued:
            # Its app is already running (a streamed body): fail its reads;
            # the response code answers ``status`` if it can.
            inp = cur.input
            assert inp is not None   # a queued request has its input
            inp.fail(RequestError(status, HTTPStatus(status).phrase))
            self._to_wake = inp
            return
        self.queue.append(_ErrorItem(status))

    # -- parser callbacks (rule 1: record only) ---------------------------------

    # llhttp reports the start of a message before its URL; there is no
    # ``on_message_begin`` here because ``on_url`` always comes first and can
    # open the Request itself: one Python call less per request.

    def on_url(self, url: bytes) -> None:
        r = self._cur
        if r is None:
            r = self._cur = Request(time.monotonic())
            ht = self._header_timeout
            if ht:
                self.deadline = r.start + ht
                self.deadline_kind = DL_HEADERS
        r.url += url
        if len(r.url) > self._max_line:
            raise HTTPError(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only collected here; checked in one pass by on_headers_complete
        # (the head-size guard in data_received bounds what piles up).
        r = self._cur
        assert r is not None
        if r.headers_done:
            # A trailer field of a chunked body: not passed to the app, but
            # one that would change framing or routing is refused.
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise HTTPError(400, "forbidden trailer field")
            return
        r.headers.append((name, value))

    def _clean_headers(self, headers: list) -> list:
        """Strip trailing whitespace (not part of a field value) and apply
        the underscore_headers policy."""
        policy = self.cfg.underscore_headers
        out = []
        for name, value in headers:
            if 95 in name:  # "_"
                if policy == "drop":
                    continue
                if policy == "refuse":
                    raise HTTPError(400, "underscore in header name")
            if value[-1:] in _OWS:
                value = value.rstrip(b" \t")
            out.append((name, value))
        return out

    def on_headers_complete(self) -> None:
        r = self._cur
        assert r is not None
        p = self.parser
        r.headers_done = True
        headers = r.headers
        if headers:
            # The header checks, inline (one Python call less per request).
            if len(headers) > self._max_fields:
                raise HTTPError(431)
            if self._header_bytes > self._max_field:
                # Only a head longer than the limit can hold a field that is.
                max_field = self._max_field
                for name, value in headers:
                    if len(name) + len(value) + 4 > max_field:  # "name: value\r\n"
                        raise HTTPError(431)
            rebuild = False
            for name, value in headers:
                special = _SPECIAL_SPELLINGS.get(name)
                if special is None and len(name) in _SPECIAL_LENGTHS:
                    special = _SPECIAL.get(name.lower())
                if special is not None:
                    if special is _h_host:   # in every request: no call for it
                        if r.host_seen:
                            raise HTTPError(400, "duplicate Host")
                        r.host_seen = True
                    else:
                        special(r, value)
                # 95 is "_"; 32/9 a trailing space or tab (int tests: see _environ)
                if 95 in name or (value and value[-1] in _OWS_CODES):
                    rebuild = True
            if rebuild:
                r.headers = self._clean_headers(headers)
        self._header_bytes = 0
        version = p.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise HTTPError(505)
            r.version = version
            r.expect = False  # RFC 9110 10.1.1: ignored in an HTTP/1.0 request
        m = p.get_method()
        method = _METHODS.get(m)
        r.method = method if method is not None else m.decode("ascii")
        if r.url[:1] != b"/":
            _check_target(r)
        r.keep_alive = p.should_keep_alive() and self._keep_alive
        if p.should_upgrade():
            if r.chunked or r.content_length:
                raise HTTPError(400, "upgrade with a body is not supported")
            r.upgrade = True
            r.keep_alive = False
        if r.chunked or r.content_length:
            self._body_begins(r)
        else:
            r.input = EMPTY_INPUT

    def _body_begins(self, r: Request) -> None:
        if r.chunked and r.version == "1.0":
            raise HTTPError(400, "chunked body in HTTP/1.0")
        limit = self.cfg.limit_request_body
        if limit and r.content_length is not None and r.content_length > limit:
            raise HTTPError(413)
        r.input = Input(self, r.expect, self.cfg.body_timeout or None)
        if r.expect:
            self._ready(r)  # the client waits for 100 Continue before sending
        bt = self.cfg.body_timeout
        if bt:
            self.deadline = time.monotonic() + bt
            self.deadline_kind = DL_BODY

    def on_body(self, body: bytes) -> None:
        r = self._cur
        assert r is not None
        inp = r.input
        assert inp is not None
        inp.feed(body)
        limit = self.cfg.limit_request_body
        if limit and inp.received > limit:
            raise HTTPError(413)
        if r.queued:
            self._to_wake = inp
            if inp.pause_if_full():
                self.pause(PAUSE_BODY)
        else:
            if inp.buffered >= PREBUFFER:
                self._ready(r)
            elif self.deadline_kind == DL_BODY and self.deadline:
                self.deadline = time.monotonic() + self.cfg.body_timeout

    def on_message_complete(self) -> None:
        r = self._cur
        assert r is not None   # the parser calls back only within a message
        self._cur = None
        inp = r.input
        assert inp is not None
        inp.end()
        if r.queued:
            self._to_wake = inp
        else:
            r.queued = True
            self.queue.append(r)
        if not r.keep_alive:
            self.closing = True   # nothing after this request is parsed (rule 2)
        self.deadline = 0.0

    def _ready(self, r: Request) -> None:
        r.queued = True
        self.queue.append(r)
        self.deadline = 0.0

    # -- pausing (rule 3) ---------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self._pauses and not self.closed:
            self.transport.pause_reading()
        self._pauses |= reason

    def unpause(self, reason: int) -> None:
        if self._pauses & reason:
            self._pauses &= ~reason
            if not self._pauses and not self.closed:
                self.transport.resume_reading()

    # -- called from the core greenlet ---------------------------------------------------

    def resume_body(self) -> None:
        """The app read the body below the low mark (``Input``, rule 2)."""
        self.unpause(PAUSE_BODY)

    def send_continue(self) -> None:
        """The app waits for a body announced with ``Expect: 100-continue``."""
        if not self.closed:
            self.transport.write(_CONTINUE)

    def body_timed_out(self) -> None:
        """A streamed body stalled (408 goes out from the response code)."""
        self.closing = True

    def wait_drain(self) -> None:
        """Block the core until the transport's buffer drains below its low
        mark (``resume_writing``); ClientDisconnected if the client is gone
        or does not read for ``write_timeout``."""
        from ..hub import TIMEDOUT, Waiter

        while self.write_paused and not self.closed:
            w = self._drain_waiter = Waiter(self.hub)
            result = w.get(self.cfg.write_timeout or None, "writing a response")
            self._drain_waiter = None
            if result is TIMEDOUT:
                self.abort()
                raise ClientDisconnected("client did not read the response in time")
        if self.closed:
            raise ClientDisconnected("client disconnected")

    def take_over(self) -> None:
        """The app took the connection over (``_takeover.py``; its first read
        or write on ``environ['gunicorn.socket']``): from now on every byte
        is the app's. Reading stops for good, nothing more is parsed, and
        the request timeout no longer applies (a WebSocket lives as long as
        the app keeps it)."""
        self.taken_over = True
        self.closing = True
        req = self.serving
        if req is not None:
            req.run_deadline = 0.0
        self.pause(PAUSE_TAKEOVER)

    def abort(self) -> None:
        if not self.closed:
            self.closing = True
            self.transport.abort()

    def serve(self) -> bool:
        """Serve the ready requests in order (in a core greenlet). Returns
        True if the connection should queue for a core again (it still has
        work, but others are waiting: fairness)."""
        queue = self.queue
        server = self.server
        while queue:
            item = queue.popleft()
            if item.__class__ is _ErrorItem:
                queue.clear()
                self.send_error(item.status)
                return False
            self.serving = item
            if self._req_timeout:
                stamp(item, self._req_timeout)
            try:
                keep = run_request(server, self, item)
            finally:
                self.serving = None
            self.requests += 1
            server.requests += 1
            if server.max_requests and server.requests == server.max_requests:
                server.max_requests_reached()
            if self.closed:
                return False
            if not keep or not item.input.complete:
                queue.clear()
                if item.input.complete and not self.discarded and self._cur is None:
                    self.close()
                else:
                    # Part of the body (or more requests) still in flight:
                    # closing now could reset the connection under the response.
                    self.close_lingering()
                return False
            if queue and self.cores.waiting:
                return True
        if self._pauses & PAUSE_PIPELINE:
            self.unpause(PAUSE_PIPELINE)
        if self.client_eof:
            self.close()   # every request it sent is answered; it sends no more
        elif server.draining:
            self.close_lingering()
        elif self._cur is None:
            ka = self.cfg.keepalive_timeout
            if ka:
                self.deadline = time.monotonic() + ka
                self.deadline_kind = DL_IDLE
        return False

    def send_error(self, status: int) -> None:
        """Answer a refused request and close (lingering)."""
        if self.closed:
            return
        self.transport.write(error_response(status, self.server.date_line))
        self.server.log_refused(self, status)
        self.close_lingering()

    def close_lingering(self) -> None:
        """Close after the buffered response is sent, without resetting a
        client that is still sending: shut our side, read and drop what comes
        until the client closes or ``LINGER`` seconds pass."""
        self.closing = True
        self._cur = None
        if self.closed:
            return
        t = self.transport
        if self._pauses:
            self._pauses = 0
            t.resume_reading()
        if self.client_eof or not t.can_write_eof():
            t.close()
            return
        try:
            t.write_eof()
        except (OSError, RuntimeError):
            t.close()
            return
        self.deadline = time.monotonic() + LINGER
        self.deadline_kind = DL_LINGER

    def close(self) -> None:
        self.closing = True
        if not self.closed:
            self.transport.close()

    # -- the server's sweep and shutdown -------------------------------------------------

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        if self.closed:
            return
        if kind == DL_IDLE or kind == DL_LINGER:
            self.transport.abort() if kind == DL_LINGER else self.close()
        elif self.serving is None and not self.queue:
            # Slow request head, or a body that stalls before any core took
            # the request: answer 408 without ever having held a core.
            cur = self._cur
            if cur is None:
                self.close()  # never started a request: nobody to answer
            else:
                self._cur = None
                self.closing = True
                self.send_error(408)
        else:
            # Data piles up behind a running request: nothing to time out.
            pass

    def drain(self) -> None:
        """The server is stopping: finish what is in flight, then close.
        An idle keep-alive connection closes within ``DRAIN_IDLE`` seconds; a
        new one that has not sent its first request yet gets
        ``header_timeout`` to do so."""
        if self.closed:
            return
        if self.serving is None and not self.queue and self._cur is None and self.requests:
            # Closing it right now races with a client sending its next
            # request at this moment: that client would see the connection
            # closed without an answer (a reload under keep-alive load failed
            # requests so). A request that comes within the grace is answered
            # with "Connection: close"; a connection still idle then closes.
            grace = time.monotonic() + DRAIN_IDLE
            if not self.deadline or self.deadline > grace:
                self.deadline = grace
                self.deadline_kind = DL_IDLE

    def __repr__(self) -> str:
        return f"<HttpProtocol peer={self.peer!r} requests={self.requests}>"


# -- header fields the framing and routing depend on (table, not ifs) ----------------

def _h_host(r: Request, value: bytes) -> None:
    if r.host_seen:
        raise HTTPError(400, "duplicate Host")
    r.host_seen = True


def _h_content_type(r: Request, value: bytes) -> None:
    if r.ctype_seen:
        raise HTTPError(400, "duplicate Content-Type")
    r.ctype_seen = True


def _h_content_length(r: Request, value: bytes) -> None:
    # llhttp already refused non-digits, duplicates and CL with TE.
    r.content_length = int(value)  # int() ignores surrounding whitespace


def _h_transfer_encoding(r: Request, value: bytes) -> None:
    if b"chunked" in value.lower():
        r.chunked = True


def _h_expect(r: Request, value: bytes) -> None:
    if value.strip().lower() == b"100-continue":
        r.expect = True
    else:
        raise HTTPError(417)


def _h_forwarded(r: Request, value: bytes) -> None:
    r.forwarded = True


_SPECIAL = {
    b"host": _h_host,
    b"content-type": _h_content_type,
    b"content-length": _h_content_length,
    b"transfer-encoding": _h_transfer_encoding,
    b"expect": _h_expect,
    b"x-forwarded-for": _h_forwarded,
    b"x-forwarded-proto": _h_forwarded,
    b"x-forwarded-protocol": _h_forwarded,
    b"x-forwarded-ssl": _h_forwarded,
}
_SPECIAL_LENGTHS = frozenset(len(k) for k in _SPECIAL)
# The spellings clients actually send, to skip lower() on the common path.
_SPECIAL_SPELLINGS = {}
for _name, _fn in _SPECIAL.items():
    for _spelling in (_name, _name.title(), _name.upper()):
        _SPECIAL_SPELLINGS[_spelling] = _fn
_SPECIAL_SPELLINGS[b"X-Forwarded-SSL"] = _SPECIAL_SPELLINGS[b"X-Forwarded-Ssl"]
del _name, _fn, _spelling
_OWS = (b" ", b"\t")
_OWS_CODES = (32, 9)

_METHODS = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")}

#: The wsgi.input of every request without a body: always at its end.
EMPTY_INPUT = Input(None, complete=True)


def _check_target(r: Request) -> None:
    """A request-target that is not origin-form ("/..."), RFC 9112 3.2."""
    url = r.url
    if url == b"*":
        if r.method != "OPTIONS":
            raise HTTPError(400, "* is only for OPTIONS")
    elif r.method == "CONNECT":
        if not _AUTHORITY_FORM.match(url):
            raise HTTPError(400, "bad CONNECT target")
    elif not _ABSOLUTE_FORM.match(url):
        raise HTTPError(400, "bad request target")


def _status_for(e: Exception) -> int:
    """Every llhttp refusal (bad line, header, framing, chunk) is a 400."""
    return 400
