"""Green file objects over pipes, FIFOs and other pollable fds.

``GreenFileIO`` is an ``io.RawIOBase`` whose reads and writes wait on the hub
instead of blocking the thread; ``open_fd`` stacks the usual buffered and text
layers on it, like ``io.open(fd, ...)`` does on a ``FileIO``. ``Popen`` builds
its ``stdin``/``stdout``/``stderr`` with it. ::

    import os, tgreen.fileobject
    r, w = os.pipe()
    reader = tgreen.fileobject.open_fd(r, "rb")
    writer = tgreen.fileobject.open_fd(w, "wb", 0)
    tgreen.spawn(writer.write, b"hi")
    assert reader.read(2) == b"hi"

Rules of this file:

1. The fd is put in non-blocking mode when wrapped, and every syscall is
   tried first; only EAGAIN waits on the hub. If someone flips the fd back to
   blocking (``Popen`` does for a pipe handed to another child as its stdin:
   O_NONBLOCK lives in the open file description, which the child shares),
   reads and writes still never block: they check readiness first.
2. ``write`` writes everything before returning, as a blocking pipe write
   does; a short count only ever comes with the error that cut it short.
3. Closing drops the fd from the hub first, waking any greenlet waiting on it
   with EBADF, then closes it.
"""

from __future__ import annotations

import io
import os
import warnings
import weakref
from typing import Any

from . import _originals
from . import os as gos
from .hub import current_hub_if_any, peek_hub

__all__ = ["GreenFileIO", "open_fd", "for_fd"]

_read = _originals.get("os", "read")
_write = _originals.get("os", "write")
_select = _originals.module("select")
_POLLIN = _select.POLLIN
_POLLOUT = _select.POLLOUT
_PIPE_BUF = getattr(_select, "PIPE_BUF", 512)
_readv = os.readv
_CHUNK = 64 * 1024
# fd -> the open GreenFileIO over it (so an fd number handed around can be
# traced back to its object; Popen uses it for rule 1).
_by_fd: "weakref.WeakValueDictionary[int, GreenFileIO]" = weakref.WeakValueDictionary()


def for_fd(fd: int) -> "GreenFileIO | None":
    """The open GreenFileIO over ``fd``, if there is one."""
    f = _by_fd.get(fd)
    return f if f is not None and not f.closed else None


class GreenFileIO(io.RawIOBase):
    """Unbuffered binary I/O on an fd that blocks only the calling greenlet."""

    def __init__(self, fd: int, mode: str = "rb", closefd: bool = True) -> None:
        super().__init__()
        if not isinstance(fd, int) or fd < 0:
            raise ValueError(f"tgreen: GreenFileIO needs an fd, not {fd!r}")
        self._fd = fd
        self._readable = "r" in mode or "+" in mode
        self._writable = "w" in mode or "a" in mode or "+" in mode
        self._mode = ("rb+" if self._readable else "wb") if self._writable else "rb"
        self._closefd = closefd
        self._hub: Any = None  # where this object's registration lives (hub.py "Registrations")
        self.name = fd
        self._nonblocking = True
        gos.make_nonblocking(fd)
        hub = peek_hub()
        if hub is not None:
            # A new fd: a registration under its number is a leftover of a
            # closed one (see tgreen.os.wait_fd).
            hub.forget(fd)
        _by_fd[fd] = self

    # -- io.RawIOBase --------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def closefd(self) -> bool:
        return self._closefd

    def fileno(self) -> int:
        self._checkClosed()
        return self._fd

    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        return False

    def isatty(self) -> bool:
        self._checkClosed()
        return os.isatty(self._fd)

    def set_shared_blocking(self) -> None:
        """Make the fd blocking (for a child that inherits it) while this
        object keeps reading and writing greenly (rule 1)."""
        if self._nonblocking and not self.closed:
            os.set_blocking(self._fd, True)
            self._nonblocking = False

    def _wait(self, write: bool) -> None:
        hub = current_hub_if_any()
        if hub is not None and hub is not self._hub:
            self._hub = hub
        gos.wait_fd(self._fd, write, hub, keep=True, owner=self)

    def _ready_or_wait(self, write: bool) -> None:
        if not self._nonblocking and not gos.poll_now(
                self._fd, _POLLOUT if write else _POLLIN):
            self._wait(write)

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        if not len(memoryview(b)):
            return 0
        while True:
            self._ready_or_wait(False)
            try:
                return _readv(self._fd, [b])
            except BlockingIOError:
                self._wait(False)

    def read(self, size: int = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        if size == 0:
            return b""
        while True:
            self._ready_or_wait(False)
            try:
                return _read(self._fd, size)
            except BlockingIOError:
                self._wait(False)

    def readall(self) -> bytes:
        chunks = []
        while True:
            data = self.read(_CHUNK)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def write(self, b: Any) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        view = memoryview(b).cast("B")
        total = len(view)
        done = 0
        while done < total:
            if not self._nonblocking:
                # A blocking pipe takes PIPE_BUF bytes without blocking once
                # it polls writable; more could block.
                self._ready_or_wait(True)
                piece = view[done:done + _PIPE_BUF]
            else:
                piece = view[done:]
            try:
                n = _write(self._fd, piece)
            except BlockingIOError:
                self._wait(True)
                continue
            except OSError:
                if done:
                    return done
                raise
            done += n
        return done

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if _by_fd.get(self._fd) is self:
                del _by_fd[self._fd]
            if self._closefd:
                hub = self._hub or peek_hub()
                if hub is not None:
                    hub.release(self._fd, self)
                os.close(self._fd)

    def __repr__(self) -> str:
        if self.closed:
            return "<tgreen.GreenFileIO [closed]>"
        return f"<tgreen.GreenFileIO fd={self._fd} mode={self._mode!r}>"


def open_fd(fd: int, mode: str = "rb", buffering: int = -1, encoding: str | None = None,
            errors: str | None = None, newline: str | None = None,
            closefd: bool = True) -> Any:
    """``io.open(fd, mode, buffering, ...)`` for a pipe-like fd, green.

    Text modes return a ``TextIOWrapper`` over a buffered green stream;
    ``buffering=0`` (binary only) returns the ``GreenFileIO`` itself.
    """
    text = "b" not in mode
    raw_mode = mode.replace("t", "").replace("b", "")
    raw = GreenFileIO(fd, raw_mode + "b", closefd)
    line_buffering = False
    if buffering == 1:
        if text:
            line_buffering = True
        else:
            warnings.warn("line buffering (buffering=1) isn't supported in binary mode, "
                          "the default buffer size will be used", RuntimeWarning, 2)
        buffering = -1
    if buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if text:
            raise ValueError("can't have unbuffered text I/O")
        return raw
    readable, writable = raw.readable(), raw.writable()
    if readable and writable:
        buf: Any = io.BufferedRWPair(raw, raw, buffering)
    elif writable:
        buf = io.BufferedWriter(raw, buffering)
    else:
        buf = io.BufferedReader(raw, buffering)
    if not text:
        return buf
    return io.TextIOWrapper(buf, encoding, errors, newline, line_buffering)
