"""A green ``socket`` module: the stdlib's API, blocking only the calling greenlet.

Every name of the stdlib ``socket`` module is here. The socket class keeps its
file descriptor non-blocking at the OS level and remembers the timeout the
user asked for; a call that gets EAGAIN waits on the hub and retries, with
CPython's timeout rules (``None`` blocks, ``0.0`` is non-blocking, otherwise
each call, and ``sendall`` as a whole, has that many seconds). ::

    from tgreen import socket
    with socket.create_connection(("127.0.0.1", 8080), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        print(s.recv(65536))

Module-level helpers whose stdlib versions only differ from ours in which
``socket`` class and ``getaddrinfo`` they call (``create_connection``,
``socketpair``, ``fromfd``, ...) are the stdlib's own functions re-bound to
this module's globals, so their behaviour (argument checks, error
aggregation) is CPython's to the letter.

In an OS thread that never used tgreen (asyncio's executor threads, say) a
green socket simply blocks that thread, as the stdlib one would.
"""

from __future__ import annotations

import _socket
import errno as _errno
import os as _os
import socket as __socket__
import types as _types
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from . import _originals
from . import dns as _dns
from . import selectors as _green_selectors
from ._rebind import rebind as _rebind_to
from .hub import current_hub_if_any as _current_hub
from .hub import peek_hub as _peek_hub

__all__ = list(__socket__.__all__)

_std = _originals.module("socket")
# Start from every stdlib name (public and private: the re-bound stdlib
# functions look some of them up), then override the blocking ones below.
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value
if TYPE_CHECKING:   # copied by the loop above; named for readers and checkers
    from socket import SO_ERROR, SOL_SOCKET

    from .hub import Hub

selectors = _green_selectors  # used by the re-bound sendfile implementation

_csock = _socket.socket
# Subclassed, private internals included (typeshed does not declare them): Any.
_StdSocket: Any = _std.socket
_poll = _originals.get("select", "poll")
_POLLIN = _originals.get("select", "POLLIN")
_POLLOUT = _originals.get("select", "POLLOUT")
_EINPROGRESS_LIKE = (_errno.EINPROGRESS, _errno.EAGAIN, _errno.EWOULDBLOCK, _errno.EALREADY)


def _rebind(func: _types.FunctionType) -> _types.FunctionType:
    """The stdlib function ``func`` with this module's globals."""
    return _rebind_to(func, globals(), __name__)


def _wait(sock: "socket", reading: bool, deadline: float | None) -> bool:
    """Wait until ``sock`` is ready; False once ``deadline`` has passed."""
    if deadline is None:
        timeout = None
    else:
        timeout = deadline - _monotonic()
        if timeout <= 0:
            return False
    fd = _csock.fileno(sock)
    hub = _current_hub()
    if hub is not None:
        if sock._hub is not hub:  # noqa: SLF001 - the socket class of this module
            sock._hub = hub  # noqa: SLF001  # where close/collection must end the registration
        if reading:
            return hub.wait_read(fd, timeout, sock)
        return hub.wait_write(fd, timeout, sock)
    # A plain OS thread: block it, as the stdlib would.
    p = _poll()
    p.register(fd, _POLLIN if reading else _POLLOUT)
    return bool(p.poll(None if timeout is None else timeout * 1000.0))


# Where each method takes its ``flags`` argument, positionally (and the
# smallest argument count at which that position is the flags).
_FLAGS_AT = {"recv": (1, 2), "recv_into": (2, 3), "recvfrom": (1, 2), "recvfrom_into": (2, 3),
             "recvmsg": (2, 3), "recvmsg_into": (2, 3), "send": (1, 2), "sendto": (1, 3),
             "sendmsg": (2, 3)}
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)


def _dontwait(cname: str, args: tuple, kwargs: dict) -> bool:
    """The caller passed MSG_DONTWAIT: EAGAIN is their answer, not ours to wait out."""
    at = _FLAGS_AT.get(cname)
    if at is None:
        return False
    idx, need = at
    flags = args[idx] if len(args) >= need else kwargs.get("flags", 0)
    return isinstance(flags, int) and bool(flags & _MSG_DONTWAIT)


def _io_method(cname: str, reading: bool):
    cmeth = getattr(_csock, cname)
    need = _FLAGS_AT.get(cname, (0, 999))[1]

    def method(self, *args, **kwargs):
        try:
            return cmeth(self, *args, **kwargs)
        except BlockingIOError:
            timeout = self._timeout
            if timeout == 0.0 or ((kwargs or len(args) >= need) and _dontwait(cname, args, kwargs)):
                raise
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            if not _wait(self, reading, deadline):
                raise TimeoutError("timed out")
            try:
                return cmeth(self, *args, **kwargs)
            except BlockingIOError:
                pass

    method.__name__ = cname
    method.__qualname__ = f"socket.{cname}"
    method.__doc__ = getattr(_csock, cname).__doc__
    return method


class socket(_StdSocket):
    """A green ``socket.socket``: same API and semantics, blocking only the greenlet."""

    # _hub: the hub this socket's fd is registered with (the socket owns that
    # registration, see hub.py "Registrations"), so close, detach and
    # collection end it even from another thread.
    __slots__ = ("_hub", "_timeout")
    _hub: Hub | None
    _timeout: float | None

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
        self._hub = None
        _StdSocket.__init__(self, family, type, proto, fileno)
        # CPython already applied the default timeout (and SOCK_NONBLOCK);
        # take what it decided, then keep the fd non-blocking underneath.
        self._timeout = _csock.gettimeout(self)
        if self._timeout != 0.0:
            _csock.settimeout(self, 0.0)

    # -- timeouts --------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        _csock.settimeout(self, value)  # CPython's own argument checks
        self._timeout = _csock.gettimeout(self)
        if self._timeout != 0.0:
            _csock.settimeout(self, 0.0)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    # -- I/O -------------------------------------------------------------------

    recv = _io_method("recv", True)
    recv_into = _io_method("recv_into", True)
    recvfrom = _io_method("recvfrom", True)
    recvfrom_into = _io_method("recvfrom_into", True)
    recvmsg = _io_method("recvmsg", True)
    recvmsg_into = _io_method("recvmsg_into", True)
    _accept = _io_method("_accept", True)
    send = _io_method("send", False)
    sendto = _io_method("sendto", False)
    sendmsg = _io_method("sendmsg", False)

    accept = _rebind(_StdSocket.accept)
    # The stdlib socket.sendfile calls this private method by name.
    _sendfile_use_sendfile = _rebind(_StdSocket._sendfile_use_sendfile)  # noqa: SLF001

    def sendall(self, data, flags: int = 0) -> None:
        """Send all of ``data``; with a timeout, the whole call has that long."""
        timeout = self._timeout
        if timeout == 0.0:
            return _csock.sendall(self, data, flags)
        try:
            sent = _csock.send(self, data, flags)
        except BlockingIOError:
            sent = 0
        view = memoryview(data)
        total = view.nbytes
        if sent >= total:
            return None
        view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        deadline = None if timeout is None else _monotonic() + timeout
        while sent < total:
            if not _wait(self, False, deadline):
                raise TimeoutError("timed out")
            try:
                sent += _csock.send(self, view[sent:], flags)
            except BlockingIOError:
                pass
        return None

    def connect(self, address) -> None:
        address = self._resolve(address)
        if self._timeout == 0.0:
            return _csock.connect(self, address)
        err = self._connect(address)
        if err == -1:
            raise TimeoutError("timed out")
        if err:
            raise OSError(err, _os.strerror(err))
        return None

    def connect_ex(self, address) -> int:
        address = self._resolve(address)
        if self._timeout == 0.0:
            return _csock.connect_ex(self, address)
        err = self._connect(address)
        return _errno.EWOULDBLOCK if err == -1 else err

    def _connect(self, address) -> int:
        """0 on success, an errno, or -1 on timeout."""
        err = _csock.connect_ex(self, address)
        if err not in _EINPROGRESS_LIKE:
            return err
        deadline = None if self._timeout is None else _monotonic() + self._timeout
        if not _wait(self, False, deadline):
            return -1
        return _csock.getsockopt(self, SOL_SOCKET, SO_ERROR)

    def _resolve(self, address):
        # CPython's C connect() resolves a host name itself, blocking the
        # thread; resolve it greenly first.
        if (isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str)
                and self.family in (AF_INET, AF_INET6)):  # noqa: F821
            host = address[0]
            if host and not _dns.is_numeric_host(host, self.family):
                info = getaddrinfo(host, address[1], self.family, self.type, self.proto)
                if info:
                    sa = info[0][4]
                    if self.family == AF_INET6 and len(address) > 2:  # noqa: F821
                        sa = (sa[0], sa[1]) + tuple(address[2:])
                    return sa
        return address

    # -- closing ---------------------------------------------------------------

    def _release(self, fd: int) -> None:
        """End this socket's loop registration before its fd goes away."""
        hub = self._hub or _peek_hub()
        if hub is not None:
            hub.release(fd, self)

    def _real_close(self, _ss=_csock) -> None:
        fd = _ss.fileno(self)
        if fd >= 0:
            self._release(fd)
        _ss.close(self)

    def __del__(self, _fileno=_csock.fileno, _finalize=_csock.__del__) -> None:  # type: ignore[attr-defined]
        # Collected without close(): CPython's finalizer (below) closes the fd
        # in C, behind the hub's back. End the registration first, while the
        # fd still names this file, or the next fd with this number inherits it.
        try:
            fd = _fileno(self)
            hub = getattr(self, "_hub", None)
            if fd >= 0 and hub is not None:
                hub.release(fd, self)
        except Exception:  # noqa: BLE001, S110 - a finalizer must not raise
            pass
        finally:
            _finalize(self)

    def detach(self) -> int:
        fd = _csock.fileno(self)
        if fd >= 0:
            self._release(fd)
        # What we hand over should behave as the user configured it.
        if self._timeout != 0.0 and fd >= 0:
            try:
                _csock.settimeout(self, self._timeout)
            except OSError:
                pass  # the fd was closed behind our back; detach anyway
        return _StdSocket.detach(self)


SocketType = _socket.socket

# The stdlib helpers, re-bound to the green class and green DNS.
socketpair = _rebind(_std.socketpair)
fromfd = _rebind(_std.fromfd)
create_connection = _rebind(_std.create_connection)
create_server = _rebind(_std.create_server)
has_dualstack_ipv6 = _rebind(_std.has_dualstack_ipv6)
getfqdn = _rebind(_std.getfqdn)
send_fds = _rebind(_std.send_fds)
recv_fds = _rebind(_std.recv_fds)

getaddrinfo = _dns.getaddrinfo
gethostbyname = _dns.gethostbyname
gethostbyname_ex = _dns.gethostbyname_ex
gethostbyaddr = _dns.gethostbyaddr
getnameinfo = _dns.getnameinfo

#: The names ``monkey.patch_socket()`` replaces in the stdlib module. Only the
#: class: the stdlib's own helpers (create_connection, socketpair, ...) look
#: ``socket`` up at call time, so they turn green with it, and code that
#: swaps ``socket.socket`` for a mock keeps working.
__implements__ = ["socket"]
__dns__ = ["getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"]
