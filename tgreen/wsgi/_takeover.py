"""Handing a connection over to the app: WebSockets and other ``Upgrade:`` protocols.

WSGI has no standard way to leave HTTP. The convention the WebSocket
libraries rely on (simple-websocket, hence flask-sock and python-engineio /
Flask-SocketIO in threading mode; ``tgreen.websocket`` too) is gunicorn's:
``environ['gunicorn.socket']`` is the client's socket, the app writes the
``101 Switching Protocols`` answer and speaks the new protocol on it itself,
and what it returns afterwards (flask-sock and engineio raise
``StopIteration`` under gunicorn) is not a response. This module implements
that convention for tgreen's server. ::

    run_request: env = build(...); if req.upgrade: offer(conn, env)
    app:         sock = env["gunicorn.socket"]; sock.sendall(b"HTTP/1.1 101 ...")
                 -> first read/write: conn.take_over()    (the protocol stops reading)
    run_request: app returns or raises -> taken_over(resp, conn) (no response, quiet)
                 finally: release(conn)  (the app's socket is closed; the core is free)

Theory of operation
-------------------
The offered socket is a green socket on a ``dup`` of the connection's fd.
While the server's transport reads the fd, a byte the client sends could go
to either reader; so on the app's first read or write through the socket
(``TakeoverSocket._claim``) the protocol stops reading for good
(``HttpProtocol.take_over``) before that I/O happens. A client must not send
WebSocket frames before it has read the 101 (RFC 6455 4.1), and the app
claims the socket by writing the 101, so no frame is ever read by the
server. Since the app does its I/O on a green socket, a slow client blocks
only the app's greenlet (backpressure: the kernel's send buffer is the bound)
and a vanished one wakes it with EOF or a reset at once.

Rules of this file:

1. Only ``Upgrade:`` requests on a plain TCP or unix socket get the socket,
   and only those pay the ``dup``. On a TLS connection the fd carries
   ciphertext the transport owns: no socket is offered (a WebSocket over TLS
   terminates TLS at a proxy in front).
2. A socket that was offered but never used changes nothing: the app's
   answer is an ordinary HTTP response.
3. Once taken over, nothing the server does writes to the connection: no
   response, no 500 for the app's exit exception, no 408/504. The iterable's
   ``close()`` is still called (PEP 3333).
4. The app owns the socket until it returns. Then the server closes it, even
   if a greenlet of the app still waits on it (that wait gets ``EBADF``, as
   under gunicorn, which closes the client socket after ``handle()``), and
   ends the connection.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import socket as green_socket
from ._transport import SocketTransport

__all__ = ["TakeoverSocket", "offer", "release", "taken_over"]

log = logging.getLogger("tgreen.wsgi")


class TakeoverSocket(green_socket.socket):
    """``environ['gunicorn.socket']`` of an ``Upgrade:`` request: a green
    socket whose first read or write hands the connection to the app."""

    __slots__ = ("_conn",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._conn: Any = None
        super().__init__(*args, **kwargs)

    def take_over(self) -> TakeoverSocket:
        """Claim the connection explicitly (``tgreen.websocket.accept`` does,
        before it writes anything); reading or writing claims it too."""
        self._claim()
        return self

    def _claim(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.take_over()

    # Every way of reading or writing the connection claims it first.
    def recv(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().recv(*args, **kwargs)

    def recv_into(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().recv_into(*args, **kwargs)

    def recvmsg(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().recvmsg(*args, **kwargs)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().send(*args, **kwargs)

    def sendall(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().sendall(*args, **kwargs)

    def sendmsg(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().sendmsg(*args, **kwargs)

    def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().sendfile(*args, **kwargs)

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        self._claim()
        return super().makefile(*args, **kwargs)

    def dup(self) -> Any:
        self._claim()
        return super().dup()

    def detach(self) -> int:
        self._claim()
        return super().detach()


def offer(conn: Any, env: dict) -> None:
    """Put the connection's socket in ``env['gunicorn.socket']`` (rule 1)."""
    transport = conn.transport
    if not isinstance(transport, SocketTransport) or conn.closed:
        return
    raw = transport.get_extra_info("socket")
    try:
        sock = TakeoverSocket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno()))
    except OSError:
        return
    sock._conn = conn  # noqa: SLF001 - TakeoverSocket, this module's
    conn.takeover_socket = sock
    env["gunicorn.socket"] = sock


def taken_over(resp: Any, conn: Any, exc: BaseException | None) -> None:
    """The app that took the connection over returned (``exc`` None) or
    raised: nothing is written (rule 3). flask-sock's and engineio's
    ``StopIteration``, werkzeug mode's ``ConnectionError`` and a socket error
    on a connection the client dropped are how such apps end, not errors."""
    resp.keep = False
    resp.code = 101
    resp.discard_pending()
    if exc is not None and not isinstance(exc, (StopIteration, OSError)):
        req = resp.req
        log.error("error in %s %s after it took the connection over", req.method,
                  req.url.decode("latin-1", "replace"), exc_info=exc)


def release(conn: Any) -> None:
    """The request is over: close the offered socket (rule 4). The
    connection itself ends through the normal path (``keep`` is False)."""
    sock = conn.takeover_socket
    conn.takeover_socket = None
    sock._conn = None  # noqa: SLF001
    sock.close()
