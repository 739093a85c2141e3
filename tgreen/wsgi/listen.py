"""Listening sockets and the acceptors that turn them into connections.

``bind(spec, backlog)`` makes a listening socket from a parsed ``--bind``
value (``config.parse_bind``). An *acceptor* watches one listening socket on
the loop and creates a connection protocol per accepted socket; it can be
paused and resumed, which is how a server with every core busy stops
accepting (backpressure) and how a draining worker stops for good. ::

    sock = bind(("tcp", "127.0.0.1", 8000), backlog=2048)
    acc = make_acceptor(loop, sock, protocol_factory)
    acc.pause(); acc.resume(); acc.close()

Two kinds, chosen per listener:

* ``SocketAcceptor`` (plain TCP/unix, any loop: asyncio's selector loops and
  uvloop): registers the listening fd with ``add_reader``, accepts in
  batches and wraps each connection in a ``SocketTransport`` (``_transport``),
  which reads the first request at once, before the fd is ever registered
  with the poller. Pausing is one ``remove_reader``.
* ``ServerAcceptor`` (TLS): the loop's own ``create_server`` on a ``dup()``
  of the listening socket; pausing closes that server (only the dup: the
  listening socket stays open, so pending connections wait in the kernel
  queue), resuming creates a new one.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _originals
from ._transport import SocketTransport

# The real socket module, even under monkey.patch_all(): the loop's
# transports must get plain sockets.
if TYPE_CHECKING:   # the snapshot is the stdlib module, typed as such
    import socket
else:
    socket = _originals.module("socket")
# The C accept (fd, address): no Python socket object per connection.
_csock_accept = _socket.socket._accept  # type: ignore[attr-defined]  # noqa: SLF001 - CPython's, not in typeshed

__all__ = ["ServerAcceptor", "SocketAcceptor", "bind", "describe", "make_acceptor"]

_ACCEPT_ERRORS_RETRY = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_PEER_GONE = (errno.ECONNRESET, errno.ENOTCONN, errno.EINVAL)
_IPPROTO_TCP, _TCP_NODELAY = socket.IPPROTO_TCP, socket.TCP_NODELAY


def bind(spec: tuple, backlog: int) -> socket.socket:
    """A listening, non-blocking stdlib socket for one parsed bind spec."""
    kind = spec[0]
    if kind == "fd":
        sock = socket.socket(fileno=spec[1])
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"tgreen: fd://{spec[1]} is not a stream socket")
        try:
            sock.listen(backlog)
        except OSError:
            pass
    elif kind == "unix":
        path = spec[1]
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from a previous run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    else:
        _, host, port = spec
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    """``http://HOST:PORT`` or ``unix:PATH`` for log lines."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode()}"
    host, port = name[0], name[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class SocketAcceptor:
    """Accept plain connections into ``SocketTransport``s, on any loop."""

    #: Connections accepted per readiness callback, so one busy listener
    #: cannot monopolise a loop turn.
    BATCH = 64

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol], on_error: Callable[[BaseException], None]) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.factory = factory
        self.on_error = on_error
        self.reading = False
        self.want = False   # the server wants connections (not paused by it)
        self.closed = False
        self._retry: Any = None
        self._unix = sock.family == socket.AF_UNIX

    def resume(self) -> None:
        self.want = True
        if not self.reading and not self.closed and self._retry is None:
            self.loop.add_reader(self.fd, self._accept)
            self.reading = True

    def pause(self) -> None:
        self.want = False
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def accept_pending(self) -> None:
        """Accept whatever waits in the kernel queue now (used when stopping)."""
        if not self.closed:
            self._accept(limit=1 << 30, force=True)

    def _accept(self, limit: int = BATCH, force: bool = False) -> None:
        sock = self.sock
        loop = self.loop
        family, type_, proto = sock.family, sock.type, sock.proto
        new_socket = socket.socket
        tcp = not self._unix
        for _ in range(limit):
            if not self.reading and not force:
                # The last connection took the last free core and the server
                # paused accepting: the rest of the batch waits in the kernel.
                return
            try:
                fd, addr = _csock_accept(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ACCEPT_ERRORS_RETRY:
                    # Out of fds: stop accepting for a moment instead of spinning.
                    self._stop_reading()
                    self._retry = loop.call_later(0.5, self._retry_accept)
                    self.on_error(e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            conn = new_socket(family, type_, proto, fileno=fd)
            conn.setblocking(False)
            try:
                if tcp:
                    # Responses go out in one write each; Nagle would only delay them.
                    conn.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
                SocketTransport(loop, conn, self.factory(), addr if tcp else "").start()
            except OSError as e:
                # The peer reset before we got to it: routine, nothing to log.
                conn.close()
                if e.errno not in _PEER_GONE:
                    self.on_error(e)
            except Exception as e:
                conn.close()
                self.on_error(e)

    def _retry_accept(self) -> None:
        self._retry = None
        if self.want:
            self.resume()

    def close(self) -> None:
        self.pause()
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None


class ServerAcceptor:
    """Accept through the loop's ``create_server`` (TLS)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol], on_error: Callable[[BaseException], None],
                 ssl: Any = None, backlog: int = 2048) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.on_error = on_error
        self.ssl = ssl
        self.backlog = backlog
        self.server: asyncio.Server | None = None
        self.want = False
        self.closed = False
        self._starting = False

    @property
    def reading(self) -> bool:
        return self.want

    def resume(self) -> None:
        if self.closed or self.want:
            return
        self.want = True
        if self.server is None and not self._starting:
            self._start()

    def _start(self) -> None:
        dup = self.sock.dup()
        dup.setblocking(False)
        coro = self.loop.create_server(self.factory, sock=dup, backlog=self.backlog, ssl=self.ssl)
        # uvloop's create_server(sock=...) completes without suspending: run it
        # synchronously so pausing/resuming costs no loop turn. asyncio's
        # suspends once (it sleeps a turn before serving); finish it as a task.
        try:
            first = coro.send(None)
        except StopIteration as stop:
            self._started(stop.value)
            return
        except BaseException as e:
            dup.close()
            self.on_error(e)
            return
        self._starting = True
        task = asyncio.ensure_future(_Resume(coro, first), loop=self.loop)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future) -> None:
        self._starting = False
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.on_error(exc)
            return
        self._started(task.result())

    def _started(self, server: asyncio.Server) -> None:
        self.server = server
        if not self.want or self.closed:
            self._stop_server()

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()

    def pause(self) -> None:
        self.want = False
        self._stop_server()

    def accept_pending(self) -> None:
        """Accept what waits in the kernel queue now and hand it to the loop
        (``connect_accepted_socket``): used once, when the server stops."""
        if self.closed:
            return
        sock = self.sock
        family, type_, proto = sock.family, sock.type, sock.proto
        while True:
            try:
                fd, _addr = _csock_accept(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.on_error(e)
                return
            conn = socket.socket(family, type_, proto, fileno=fd)
            conn.setblocking(False)
            coro = self.loop.connect_accepted_socket(self.factory, conn, ssl=self.ssl)
            task = asyncio.ensure_future(coro, loop=self.loop)
            task.add_done_callback(self._accepted)

    def _accepted(self, task: asyncio.Future) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.on_error(exc)

    def close(self) -> None:
        self.closed = True
        self.pause()


class _Resume:
    """Awaitable that finishes a coroutine whose first step already ran and
    yielded ``first``: the rest of its yields pass through to the Task."""

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Any:
        coro = self.coro
        value = self.first
        while True:
            try:
                sent = yield value
            except BaseException as e:
                try:
                    value = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def make_acceptor(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                  factory: Callable[[], asyncio.Protocol], on_error: Callable[[BaseException], None],
                  ssl: Any = None, backlog: int = 2048) -> Any:
    if ssl is None:
        return SocketAcceptor(loop, sock, factory, on_error)
    return ServerAcceptor(loop, sock, factory, on_error, ssl=ssl, backlog=backlog)
