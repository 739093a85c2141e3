"""A lean stream transport for plain TCP and unix sockets, on any loop.

``SocketTransport`` is the subset of ``asyncio.Transport`` that the HTTP
protocol uses (write with flow control, pause/resume reading, close, abort,
write_eof, extra info) plus a non-blocking ``sendfile``, built directly on the
loop's ``add_reader``/``add_writer``. It replaces the loop's own transports for
plain sockets, on asyncio's selector loops and on uvloop alike. ::

    t = SocketTransport(loop, sock, protocol, peername)
    t.start()          # connection_made, then read at once

Why not the loop's transports: with ``Connection: close`` the transport's
life cycle *is* the request. asyncio's ``_SelectorSocketTransport`` costs
two ``call_soon`` handles and an ``epoll_ctl`` ADD before the first byte is
read. A fresh connection's request is usually in the socket by the time it is
accepted, so ``start()`` reads it at once; when the response ends the
connection, the fd was never registered with the poller at all. Measured with
a fixed-response protocol (benchmarks/RESULTS.md, "Server shape"): on
asyncio's loop 1.4x the connections/s of asyncio's own transports with
``Connection: close`` and at least par with keep-alive; on uvloop at par with
its C transports either way, and without their multi-second p99 tail at 1000
connections (RESULTS, "WSGI server vs peers").

Rules of this file:

1. Protocol callbacks run from loop callbacks or from ``start()`` (itself
   called from the acceptor's loop callback), never from inside ``write``:
   a write that fails schedules the loss instead of calling back into the
   protocol that is writing.
2. ``connection_lost`` is delivered once, through ``call_soon``, and the
   socket is closed right after it, as asyncio does.
3. Bytes leave in order: while a buffer or a sendfile is pending, ``write``
   appends instead of sending.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from .. import _originals

if TYPE_CHECKING:   # the snapshot is the stdlib module, typed as such
    import socket
else:
    socket = _originals.module("socket")

__all__ = ["SocketTransport"]

_MAX_READ = 256 * 1024
_HIGH, _LOW = 64 * 1024, 16 * 1024
_SENDFILE_CHUNK = 1 << 30


class SocketTransport(asyncio.Transport):
    __slots__ = (
        "_buf",
        "_closing",
        "_eof",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_paused",
        "_peer",
        "_protocol",
        "_protocol_paused",
        "_read_eof",
        "_reading",
        "_sendfile",
        "_sock",
        "_writing",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.Protocol, peername: Any) -> None:
        # No super().__init__: it only stores an ``extra`` dict this class
        # answers from its own fields.
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._peer = peername
        self._buf: bytearray | None = None
        self._reading = False      # registered with add_reader
        self._paused = False       # pause_reading() in effect
        self._closing = False
        self._eof = False          # write_eof() asked for
        self._lost = False         # connection_lost scheduled
        self._read_eof = False     # the peer shut its side: never read again
        self._writing = False      # registered with add_writer
        self._high = _HIGH
        self._low = _LOW
        self._protocol_paused = False
        self._sendfile: list | None = None   # [future, file fd, offset, count, sent]
        # No bound methods kept on self (they would make every transport
        # cyclic garbage): the loop's handle holds one while registered.

    def start(self) -> None:
        """``connection_made``, then read what is already there (usually
        the whole first request) before touching the poller."""
        self._protocol.connection_made(self)
        if not self._closing:
            self._read_ready()

    # -- reading -----------------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(_MAX_READ)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            self._fatal(exc)
            return
        if data:
            self._protocol.data_received(data)
        elif data is not None:
            self._eof_received()
            return
        if not self._reading and not self._paused and not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _eof_received(self) -> None:
        self._read_eof = True
        self._stop_reading()
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        if not self._reading and not self._read_eof:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    # -- writing -----------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or not data:
            return
        buf = self._buf
        if buf is None and self._sendfile is None:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal(exc)   # rule 1: the loss is scheduled, not delivered here
                return
            if n == len(data):
                return
            self._buf = bytearray(memoryview(data)[n:])
            self._start_writing()
        elif buf is None:
            self._buf = bytearray(data)
        else:
            buf += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _start_writing(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _write_ready(self) -> None:
        buf = self._buf
        if buf:
            try:
                n = self._sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fatal(exc)
                return
            del buf[:n]
            self._maybe_resume_protocol()
            if buf:
                return
            self._buf = None
        if self._sendfile is not None:
            self._sendfile_step()
            return
        self._drained()

    def _drained(self) -> None:
        """Everything is out: stop watching for writability, then finish a
        close or write_eof that waited for the buffer."""
        self._stop_writing()
        if self._closing:
            self._schedule_lost(None)
        elif self._eof:
            self._shutdown_write()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and self.get_write_buffer_size() > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self.get_write_buffer_size() <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buf) if self._buf else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if self._buf is None and self._sendfile is None:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- sendfile ----------------------------------------------------------------------

    def sendfile(self, file: Any, offset: int, count: int) -> asyncio.Future:
        """Send ``count`` bytes of ``file`` from ``offset`` with os.sendfile
        after whatever is buffered; a Future of the bytes sent."""
        fut = self._loop.create_future()
        if self._closing or self._eof or self._sendfile is not None:
            fut.set_exception(ConnectionError("transport is closing"))
            return fut
        self._sendfile = [fut, file.fileno(), offset, count, 0]
        if self._buf is None:
            self._sendfile_step()
        return fut

    def _sendfile_step(self) -> None:
        state = self._sendfile
        assert state is not None    # only called while a sendfile() runs
        fut, src, offset, count, sent = state
        exc: Exception | None = None
        while not fut.done() and sent < count:
            try:
                n = os.sendfile(self._fd, src, offset + sent, min(count - sent, _SENDFILE_CHUNK))
            except (BlockingIOError, InterruptedError):
                state[4] = sent
                self._start_writing()
                return
            except OSError as e:
                exc = e
                break
            if n == 0:
                break  # the file is shorter than promised
            sent += n
        self._sendfile = None
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(sent)
        if exc is not None:
            self._fatal(exc)
        elif self._buf is not None:
            self._start_writing()
        else:
            self._drained()

    # -- closing -----------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if self._buf is None and self._sendfile is None:
            self._schedule_lost(None)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal(self, exc: Exception) -> None:
        # A peer that resets or vanishes is routine for a server: no log.
        self._force_close(exc)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._buf = None
        self._stop_writing()
        sf = self._sendfile
        if sf is not None:
            self._sendfile = None
            if not sf[0].done():
                sf[0].set_exception(ConnectionError("connection lost during sendfile"))
        self._closing = True
        self._stop_reading()
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            if self._protocol_paused:
                self._protocol_paused = False
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._protocol = None  # type: ignore[assignment]

    # -- introspection ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<SocketTransport fd={self._fd} {state}>"
