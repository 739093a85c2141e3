"""WebSockets for WSGI apps, on the connection's green socket, with wsproto.

::

    from tgreen import websocket

    def application(environ, start_response):
        if not websocket.is_websocket(environ):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"a WebSocket endpoint"]
        with websocket.accept(environ, max_message_size=1 << 20) as ws:
            for message in ws:              # str (text) or bytes (binary)
                ws.send(message)
        return []                           # ignored: the connection was taken over

    # or, for a handler that is only a WebSocket endpoint:
    @websocket.route
    def echo(ws, environ):
        for message in ws:
            ws.send(message)

Design
------
* **Where the bytes go.** ``accept`` takes the connection over through
  ``environ['gunicorn.socket']``, the convention simple-websocket and
  flask-sock use (``tgreen/wsgi/_takeover.py`` implements it for
  tgreen-serve and ``gunicorn -k tgreen.gunicorn.Worker``): the server stops
  reading the connection, this module writes the ``101`` and then reads and
  writes WebSocket frames on that green socket. Under another server that
  offers ``gunicorn.socket`` (gunicorn's own workers) it works the same way.
* **The protocol is wsproto's.** Framing, masking, UTF-8 checks, control
  frames and the close handshake are ``wsproto``'s; this module only moves
  bytes between it and the socket, assembles fragmented messages, and
  enforces ``max_message_size``.
* **One greenlet per connection, blocking calls.** The request's core
  greenlet owns the connection while the handler runs. ``receive`` blocks
  only that greenlet; other greenlets may ``send`` to the same connection at
  any time (a broadcast): sends are serialized by a lock, so frames never
  interleave. Only one greenlet receives at a time.
* **Backpressure.** ``send`` returns when its frame is in the kernel's send
  buffer. A client that reads slowly fills that buffer and the sender then
  waits (greenly) for room: memory per connection stays bounded by the
  socket buffers plus one message, however fast the app sends.
  ``send_timeout`` bounds that wait; past it the connection is dropped (a
  frame cut in the middle cannot be resumed).
* **Limits.** A message (all of its fragments) longer than
  ``max_message_size`` closes the connection with 1009 (message too big)
  as soon as its size passes the limit, before the rest is buffered.
  Compression (permessage-deflate) is off unless asked for, since a small
  compressed frame may inflate to a large one; the limit counts inflated
  bytes.
* **Closing.** A close from the client is answered and ends iteration
  (``close_code``/``close_reason`` say why); ``close()`` sends ours, waits
  up to ``close_timeout`` for the client's answer, and shuts the socket. A
  client that vanishes (no close frame) shows up as code 1006 at once, and
  the handler returns, freeing its core. If the server kills the handler's
  greenlet (a shutdown past ``--graceful-timeout``), the client gets 1001
  (going away) first.

Errors: ``HandshakeError`` (before the connection is taken over; the app
can still answer HTTP, ``route`` answers 400/426 for it) and
``ConnectionClosed`` (sending on, or receiving from, a closed connection).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        Pong,
        RejectConnection,
        Request,
        TextMessage,
    )
    from wsproto.extensions import Extension, PerMessageDeflate
    from wsproto.utilities import LocalProtocolError, RemoteProtocolError
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("tgreen.websocket needs wsproto: pip install 'tgreen[websocket]'") from e

from greenlet import GreenletExit

from . import socket as green_socket
from .lock import Lock

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ConnectionClosed", "HandshakeError", "WebSocket", "accept", "is_websocket", "route"]

#: Close codes (RFC 6455 7.4.1) the API uses by name.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
ABNORMAL_CLOSURE = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011

#: Bytes asked of the socket per read.
RECV_SIZE = 65536


class HandshakeError(ValueError):
    """The request is not a valid WebSocket opening handshake (or the
    server offers no socket to take over). Raised by ``accept`` before any
    byte is written: the app can still answer with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ConnectionClosed(Exception):
    """The WebSocket is closed: ``code`` and ``reason`` are the close frame's
    (1006 when the connection dropped without one)."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(f"WebSocket closed: {code}" + (f" {reason}" if reason else ""))
        self.code = code
        self.reason = reason


def is_websocket(environ: dict) -> bool:
    """Whether the request asks for a WebSocket (``Upgrade: websocket``)."""
    return (environ.get("REQUEST_METHOD") == "GET"
            and "websocket" in environ.get("HTTP_UPGRADE", "").lower())


def accept(environ: dict, *, subprotocols: tuple[str, ...] | list[str] = (),
           max_message_size: int = 1 << 20, compression: bool = False,
           send_timeout: float | None = 60.0, close_timeout: float = 5.0,
           headers: list[tuple[str, str]] | None = None) -> WebSocket:
    """Complete the opening handshake of ``environ``'s request and return the
    open ``WebSocket``.

    ``subprotocols``: the ones this endpoint speaks, in order of preference;
    the first the client offers is chosen (``ws.subprotocol``).
    ``max_message_size``: longest message accepted, in bytes (text counted
    as UTF-8); a longer one closes the connection with 1009. ``0`` = no limit.
    ``compression``: negotiate permessage-deflate if the client offers it.
    ``send_timeout``: longest a ``send`` waits for a client that does not
    read (None: forever). ``close_timeout``: how long ``close`` waits for
    the client's close frame. ``headers``: extra response headers.

    Raises ``HandshakeError`` if the request is not a WebSocket handshake.
    """
    if max_message_size < 0:
        raise ValueError(f"max_message_size must be >= 0 (got {max_message_size})")
    if not is_websocket(environ):
        raise HandshakeError("not a WebSocket request (no Upgrade: websocket)", 426)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        raise HandshakeError("the server offers no socket to take over (environ['gunicorn.socket']); "
                             "WebSockets need tgreen-serve or gunicorn, over plain TCP", 500)
    conn = WSConnection(ConnectionType.SERVER)
    try:
        conn.receive_data(_request_bytes(environ))
        request = next((ev for ev in conn.events() if isinstance(ev, Request)), None)
    except RemoteProtocolError as e:
        hint = e.event_hint
        status = hint.status_code if isinstance(hint, RejectConnection) else 400
        raise HandshakeError(f"bad WebSocket handshake: {e}", status) from None
    if request is None:
        raise HandshakeError("bad WebSocket handshake")
    chosen = next((p for p in subprotocols if p in request.subprotocols), None)
    extensions: list[Extension] = [PerMessageDeflate()] if compression else []
    reply = conn.send(AcceptConnection(
        subprotocol=chosen, extensions=extensions,
        extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or ()]))
    take_over = getattr(sock, "take_over", None)
    if take_over is not None:
        take_over()          # tgreen's server: stop reading this connection first
    ws = WebSocket(sock, conn, environ, chosen, max_message_size, send_timeout, close_timeout)
    ws._write(reply)  # noqa: SLF001 - the class of this module
    return ws


def route(handler: Callable[[WebSocket, dict], Any] | None = None, **options: Any) -> Any:
    """Make ``handler(ws, environ)`` a WSGI app: a request that is not a
    WebSocket handshake gets 426 (or 400); otherwise the handler runs with
    the accepted socket, which is closed (1000) when it returns, or 1011 if
    it raises. ``options`` are ``accept``'s. Usable as ``@route`` or
    ``@route(max_message_size=...)``."""
    if handler is None:
        return lambda h: route(h, **options)

    def application(environ: dict, start_response: Callable) -> Any:
        try:
            ws = accept(environ, **options)
        except HandshakeError as e:
            body = f"{e}\n".encode()
            hdrs = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
            if e.status == 426:
                hdrs += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
            start_response(f"{e.status} {_PHRASES.get(e.status, 'Error')}", hdrs)
            return [body]
        try:
            with ws:
                handler(ws, environ)
        except ConnectionClosed:
            pass             # the client went away while the handler sent: its end
        if not hasattr(environ["gunicorn.socket"], "take_over"):
            # Another server that offers gunicorn.socket: its convention for
            # "no response" (what flask-sock does there).
            raise StopIteration
        return []

    application.__name__ = getattr(handler, "__name__", "application")
    application.__doc__ = getattr(handler, "__doc__", None)
    return application


_PHRASES = {400: "Bad Request", 426: "Upgrade Required", 500: "Internal Server Error"}


class WebSocket:
    """One accepted WebSocket connection (made by ``accept``).

    ``receive()`` and iteration give ``str`` for text messages and ``bytes``
    for binary ones; ``send`` picks the frame type the same way."""

    def __init__(self, sock: Any, conn: WSConnection, environ: dict, subprotocol: str | None,
                 max_message_size: int, send_timeout: float | None, close_timeout: float) -> None:
        self.environ = environ
        #: The subprotocol agreed on in the handshake, or None.
        self.subprotocol = subprotocol
        #: Once closed: the close code (1006: dropped without a close frame).
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.max_message_size = max_message_size
        self.send_timeout = send_timeout
        self.close_timeout = close_timeout
        self._sock = sock
        self._conn = conn
        self._messages: deque = deque()
        self._parts: list = []            # fragments of the message being received
        self._parts_len = 0
        self._pongs: deque = deque(maxlen=16)
        # Frames are encoded and written under one lock: wsproto's state (and
        # a compression context) must see them in the order they go out.
        self._send_lock = Lock()
        self._recv_lock = Lock()
        if isinstance(sock, green_socket.socket):
            # tgreen's socket keeps its fd non-blocking and only remembers the
            # timeout: set it directly instead of settimeout()'s two fcntl
            # calls per send and per receive.
            self._settimeout = _green_settimeout(sock)
        else:
            self._settimeout = sock.settimeout
        self._closed = False              # the socket is done with (close frame or drop)

    # -- receiving ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection is closed (either side, or dropped)."""
        return self._closed

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` (text) or ``bytes`` (binary).

        Blocks this greenlet until one arrives; with ``timeout`` (seconds),
        raises ``TimeoutError`` if none came by then (the connection stays
        open). Raises ``ConnectionClosed`` once the connection is closed and
        every message that came before the close was received."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._recv_lock:
            while not self._messages:
                if self._closed:
                    raise ConnectionClosed(self.close_code or ABNORMAL_CLOSURE, self.close_reason)
                self._read(deadline)
            return self._messages.popleft()

    def __iter__(self) -> Iterator[str | bytes]:
        """The messages until the connection closes (normally or not: see
        ``close_code``)."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def _read(self, deadline: float | None) -> None:
        """Read from the socket once and handle what it brings."""
        if deadline is None:
            self._settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no WebSocket message within the timeout")
            self._settimeout(left)
        try:
            data = self._sock.recv(RECV_SIZE)
        except TimeoutError:
            raise TimeoutError("no WebSocket message within the timeout") from None
        except OSError:
            data = b""       # reset, or the socket was closed under us: dropped
        if not data:
            self._dropped()
            return
        try:
            self._conn.receive_data(data)
        except LocalProtocolError:      # bytes after the close handshake: ignored
            return
        self._handle_events()

    def _handle_events(self) -> None:
        for ev in self._conn.events():
            if isinstance(ev, Message):
                if not self._message_part(ev):
                    break
            elif isinstance(ev, Ping):
                self._reply(ev.response(), ConnectionState.OPEN)
            elif isinstance(ev, Pong):
                self._pongs.append(ev.payload)
            elif isinstance(ev, CloseConnection):
                self.close_code = ev.code
                self.close_reason = ev.reason or None
                # Answer the client's close; or, if wsproto refused the
                # client's frames (bad UTF-8, bad opcode...; the state is
                # still OPEN), tell the client why.
                self._reply(ev.response(), ConnectionState.REMOTE_CLOSING)
                self._reply(CloseConnection(ev.code, (ev.reason or "")[:100] or None), ConnectionState.OPEN)
                self._closed = True
                break
        if self._closed:
            self._shut()

    def _reply(self, event: Any, state: ConnectionState) -> None:
        """Send a control frame the protocol calls for, if the connection is
        in ``state``; a client that is gone by now needs no answer."""
        with self._send_lock:
            if self._conn.state is state:
                try:
                    self._write(self._conn.send(event))
                except ConnectionClosed:
                    pass

    def _message_part(self, ev: Message) -> bool:
        """Collect one fragment; False if the message grew past the limit."""
        data = ev.data
        self._parts.append(data)
        limit = self.max_message_size
        if limit:
            self._parts_len += len(data.encode()) if isinstance(ev, TextMessage) else len(data)
            if self._parts_len > limit:
                self._parts.clear()
                self.close_code, self.close_reason = MESSAGE_TOO_BIG, "message too big"
                self._reply(CloseConnection(MESSAGE_TOO_BIG, "message too big"), ConnectionState.OPEN)
                self._closed = True
                return False
        if ev.message_finished:
            parts = self._parts
            if len(parts) == 1:
                msg = parts[0]
                msg = bytes(msg) if isinstance(ev, BytesMessage) and type(msg) is not bytes else msg
            else:
                msg = "".join(parts) if isinstance(ev, TextMessage) else b"".join(parts)
            self._messages.append(msg)
            self._parts = []
            self._parts_len = 0
        return True

    def _dropped(self) -> None:
        """The client went away without a close frame (RFC 6455: 1006)."""
        if not self._closed:
            self._closed = True
            if self.close_code is None:
                self.close_code = ABNORMAL_CLOSURE
        self._shut()

    # -- sending -----------------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for ``str``, binary for bytes-like.
        Blocks this greenlet while the client's buffers are full
        (backpressure); raises ``ConnectionClosed`` if the connection is
        closed or the client did not read for ``send_timeout`` seconds."""
        if isinstance(message, str):
            event: Any = TextMessage(data=message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(message))
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")
        self._send_event(event)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping; the client's pong shows up in ``pongs`` (received
        while a greenlet reads the connection). Client pings are answered
        automatically."""
        self._send_event(Ping(payload=bytes(payload)))

    def pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        self._send_event(Pong(payload=bytes(payload)))

    @property
    def pongs(self) -> list[bytes]:
        """Payloads of the last pongs received (at most 16), oldest first."""
        return list(self._pongs)

    def _send_event(self, event: Any) -> None:
        with self._send_lock:
            if self._closed or self._conn.state is not ConnectionState.OPEN:
                raise ConnectionClosed(self.close_code or ABNORMAL_CLOSURE, self.close_reason)
            self._write(self._conn.send(event))

    def _write(self, data: bytes) -> None:
        """All of ``data`` to the socket, or the connection is dropped.
        The caller holds ``_send_lock``."""
        try:
            # The socket's timeout is shared with the receiving greenlet,
            # which sets its own: set ours right before the call (no switch
            # in between).
            self._settimeout(self.send_timeout)
            self._sock.sendall(data)
        except TimeoutError:
            self._abort()
            raise ConnectionClosed(ABNORMAL_CLOSURE, "the client did not read in time") from None
        except OSError as e:
            self._dropped()
            raise ConnectionClosed(ABNORMAL_CLOSURE, str(e)) from None

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code`` (and ``reason``): send the close
        frame, wait up to ``close_timeout`` for the client's, shut the socket.
        Does nothing if the connection is already closed."""
        if self._closed:
            return
        with self._send_lock:
            if self._conn.state is not ConnectionState.OPEN:
                return
            try:
                self._write(self._conn.send(CloseConnection(code, reason or None)))
            except ConnectionClosed:
                return
        self.close_code, self.close_reason = code, reason or None
        deadline = time.monotonic() + self.close_timeout
        try:
            with self._recv_lock:
                while not self._closed:
                    self._read(deadline)
        except TimeoutError:
            pass
        self._closed = True
        self._shut()

    def _shut(self) -> None:
        try:
            self._sock.shutdown(2)    # SHUT_RDWR: the client sees the end now
        except OSError:
            pass

    def _abort(self) -> None:
        self._closed = True
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
        self._shut()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, ConnectionClosed):
            self.close()
        elif issubclass(exc_type, GreenletExit):
            self._close_quietly(GOING_AWAY, "server shutting down")
        else:
            self._close_quietly(INTERNAL_ERROR, "")

    def _close_quietly(self, code: int, reason: str) -> None:
        # While an exception unwinds: one close frame, no waiting for the answer.
        if self._closed:
            return
        try:
            with self._send_lock:
                if self._conn.state is ConnectionState.OPEN:
                    self._write(self._conn.send(CloseConnection(code, reason or None)))
        except (ConnectionClosed, OSError):
            pass
        self._abort()

    def __repr__(self) -> str:
        state = f"closed {self.close_code}" if self._closed else "open"
        return f"<tgreen.websocket.WebSocket {self.environ.get('PATH_INFO', '')!r} {state}>"


def _green_settimeout(sock: green_socket.socket) -> Callable[[float | None], None]:
    def settimeout(value: float | None) -> None:
        # tgreen.socket's timeout without settimeout()'s fcntl calls (above).
        sock._timeout = value  # noqa: SLF001
    return settimeout


def _request_bytes(environ: dict) -> bytes:
    """The opening handshake as wsproto reads it, rebuilt from the environ
    (the server has parsed the request already)."""
    target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/") or "/"
    lines = [f"GET {target} HTTP/1.1"]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = "-".join(part.capitalize() for part in key[5:].split("_"))
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
