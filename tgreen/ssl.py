"""A green ``ssl`` module: the stdlib's TLS sockets, blocking only the calling greenlet.

Every name of the stdlib ``ssl`` module is here; ``SSLContext.wrap_socket``
returns a green ``SSLSocket``, and ``create_default_context()`` & co. build
such contexts. ``SSLObject``/``MemoryBIO`` (what asyncio and Tornado's
non-socket paths use) are the stdlib's, untouched. ::

    from tgreen import socket, ssl
    ctx = ssl.create_default_context(cafile="ca.pem")
    with socket.create_connection(("127.0.0.1", 8443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(s.recv(65536))

    # serving: a context for tgreen-serve --certfile/--keyfile or asyncio
    ctx = ssl.server_context("cert.pem", "key.pem")

Theory of operation
-------------------
The green ``SSLSocket`` is at once a stdlib ``ssl.SSLSocket`` and a green
``tgreen.socket.socket``; its MRO is ::

    tgreen.ssl.SSLSocket -> ssl.SSLSocket -> tgreen.socket.socket -> socket.socket

so the stdlib's Python code (argument checks, ``recv``/``recv_into`` through
``read``, ``makefile``, ``sendfile``'s send() fallback, ``connect``,
``accept``) runs unchanged, and wherever it reaches for the plain socket
(``super().recv``, ``super().connect``) it gets the green one. The green
socket keeps the fd non-blocking at the OS level, so the C ``_ssl`` object
never blocks: an operation OpenSSL cannot finish raises
``SSLWantReadError``/``SSLWantWriteError``. The four methods that call into
``_ssl`` and can want I/O (``do_handshake``, ``read``, ``write``/``send``/
``sendall``, ``unwrap``) catch those, wait on the hub for the direction
OpenSSL asked for (a write may want to read, a read to write), and retry.
The socket's timeout is a deadline for the whole call, as in ``_ssl.c``,
and expiry raises ``TimeoutError("The read operation timed out")`` with
``_ssl.c``'s words. With timeout 0 the Want errors reach the caller, exactly
as the stdlib's non-blocking sockets do.

Rules of this file:

1. Patching (``__patch__``) replaces ``ssl.SSLSocket`` and sets the
   *stdlib* ``ssl.SSLContext.sslsocket_class`` to the green SSLSocket. It
   does not replace ``ssl.SSLContext``. So every context, whenever and by
   whomever it was created, wraps green sockets: urllib3's
   ``from ssl import SSLContext``, a context made at import time by
   requests or by a user module, Tornado's module-level defaults. The
   classic "ssl patched too late" failure cannot happen through a context.

   The rejected design is gevent's: replace ``ssl.SSLContext`` with a
   subclass. Contexts created before patching, and every
   ``from ssl import SSLContext`` copy, then keep wrapping blocking sockets.
   There is a worse problem too: the stdlib property setters
   (``options``, ``verify_mode``, ...) call
   ``super(SSLContext, SSLContext)``, which looks the *module global* up. Once
   that global names a subclass, every original context (Tornado's
   ``ctx.options |= OP_NO_COMPRESSION``) recurses until RecursionError.
2. The stdlib ``SSLSocket._create`` does ``super(SSLSocket, self)`` through
   the module global too. Our class uses a copy of it bound to the frozen
   original module (``_originals``), where ``SSLSocket`` is the stdlib
   class: ``super`` then lands on ``tgreen.socket.socket.__init__``, next in
   our MRO. Patching pins the stdlib method the same way, so subclasses of
   the original class still construct after ``ssl.SSLSocket`` is replaced.
3. The event loop's own TLS keeps working. asyncio's sslproto uses
   ``SSLObject`` over memory BIOs, which is untouched. Tornado's SSLIOStream
   wraps its non-blocking socket and so gets a green SSLSocket with timeout
   0, which behaves like the stdlib's to the letter.
4. What patching cannot turn green: ``SSLSocket`` objects that exist
   already, and subclasses of the original ``ssl.SSLSocket`` (a class
   statement ran before patching, or later through a stale
   ``from ssl import SSLSocket``). Patching warns about such subclasses by
   name (``MonkeyPatchWarning``); they still work, blocking.
"""

from __future__ import annotations

import types as _types
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from . import _originals
from . import socket as _gsocket
from .socket import _wait

_std = _originals.module("ssl")

# Start from every stdlib name, then override the green ones below.
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value
if TYPE_CHECKING:   # copied by the loop above; named for readers and checkers
    from ssl import CERT_REQUIRED, OP_NO_COMPRESSION, PROTOCOL_TLS_SERVER, TLSVersion

__all__ = [n for n, v in _std.__dict__.items()
           if not n.startswith("_") and not isinstance(v, _types.ModuleType)]
__all__.append("server_context")

# Subclassed, private internals included (typeshed does not declare them): Any.
_StdSSLSocket: Any = _std.SSLSocket
_StdSSLContext: Any = _std.SSLContext
_SSLError = _std.SSLError
_SSLWantReadError = _std.SSLWantReadError
_SSLWantWriteError = _std.SSLWantWriteError
_SSL_ERROR_EOF = _std.SSL_ERROR_EOF

# What the stdlib ssl module calls these names: the green versions here.
socket = _gsocket.socket
create_connection = _gsocket.create_connection


from ._rebind import rebind as _rebind  # noqa: E402


def _retry(sock: SSLSocket, fn: Callable[..., Any], args: tuple, what: str | None,
           timeout: float | None, deadline: float | None = None) -> Any:
    """``fn(*args)`` until OpenSSL stops asking for I/O, waiting on the hub
    in between; ``timeout`` 0 lets the Want errors through (non-blocking).
    ``what`` names the operation in the timeout message (None: read or write,
    whichever was awaited)."""
    while True:
        try:
            return fn(*args)
        except _SSLWantReadError:
            if timeout == 0.0:
                raise
            reading = True
        except _SSLWantWriteError:
            if timeout == 0.0:
                raise
            reading = False
        if deadline is None and timeout is not None:
            deadline = _monotonic() + timeout
        if not _wait(sock, reading, deadline):
            raise TimeoutError(f"The {what or ('read' if reading else 'write')} operation timed out")


class SSLSocket(_StdSSLSocket, _gsocket.socket):
    """A green ``ssl.SSLSocket``: same API and semantics, blocking only the greenlet.

    Instances come from ``SSLContext.wrap_socket()`` (of any context once
    ``ssl`` is patched). The socket's timeout applies to each call as a
    whole: a handshake, a ``recv``, a ``sendall``.
    """

    _sslobj: Any    # the stdlib's: the TLS object (_ssl._SSLSocket), None unwrapped

    # Rule 2: the stdlib's constructor, reading the frozen original globals.
    # SSLContext.wrap_socket builds sockets through this private classmethod.
    _create: Any = classmethod(_rebind(_StdSSLSocket._create.__func__, _std.__dict__, __name__))  # noqa: SLF001

    def do_handshake(self, block: bool = False) -> None:
        """Perform the TLS handshake (``block=True``: even when non-blocking)."""
        self._check_connected()
        timeout = self._timeout
        if timeout == 0.0 and block:
            timeout = None
        _retry(self, self._sslobj.do_handshake, (), "handshake", timeout)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # the stdlib's parameter name
        """Read up to ``len`` bytes (into ``buffer`` if given); b'' at EOF."""
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return _retry(self, sslobj.read, (len, buffer), "read", self._timeout)
            return _retry(self, sslobj.read, (len,), "read", self._timeout)
        except _SSLError as x:
            if x.args[0] == _SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data: Any) -> int:
        """Write ``data`` to the TLS channel; returns the bytes written."""
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        return _retry(self, sslobj.write, (data,), "write", self._timeout)

    def send(self, data: Any, flags: int = 0) -> int:
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            return _gsocket.socket.send(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {self.__class__}")
        return _retry(self, sslobj.write, (data,), "write", self._timeout)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``; with a timeout, the whole call has that long."""
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            return _gsocket.socket.sendall(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to sendall() on {self.__class__}")
        timeout = self._timeout
        deadline = None if not timeout else _monotonic() + timeout
        count = 0
        with memoryview(data) as view, view.cast("B") as byte_view:
            amount = len(byte_view)
            while count < amount:
                count += _retry(self, sslobj.write, (byte_view[count:],), "write", timeout, deadline)
        return None

    def unwrap(self) -> Any:
        """Shut TLS down (close_notify both ways); returns the plain socket,
        which is this object, now speaking clear text."""
        sslobj = self._sslobj
        if not sslobj:
            raise ValueError("No SSL wrapper around " + str(self))
        s = _retry(self, sslobj.shutdown, (), None, self._timeout)
        self._sslobj = None
        return s


for _m in ("read", "write", "unwrap", "do_handshake"):
    getattr(SSLSocket, _m).__doc__ = getattr(_std.SSLObject, _m).__doc__ or getattr(SSLSocket, _m).__doc__
del _m


class SSLContext(_StdSSLContext):
    """A stdlib ``ssl.SSLContext`` whose ``wrap_socket()`` makes green sockets.

    Once ``ssl`` is patched every ``ssl.SSLContext`` does the same (rule 1);
    this class is for code using tgreen without patching.
    """

    sslsocket_class = SSLSocket


# The stdlib's module functions that build contexts or sockets
# (create_default_context, _create_unverified_context, wrap_socket,
# get_server_certificate and their aliases), re-bound to this module's
# globals so they build the green classes above.
_GREEN_GLOBALS = {"SSLContext", "SSLSocket", "socket", "create_connection"}
_rebound: dict[int, _types.FunctionType] = {}
for _name, _value in list(_std.__dict__.items()):
    if (isinstance(_value, _types.FunctionType) and _value.__module__ == "ssl"
            and _GREEN_GLOBALS & set(_value.__code__.co_names)):
        if id(_value) not in _rebound:
            _rebound[id(_value)] = _rebind(_value, globals(), __name__)
        globals()[_name] = _rebound[id(_value)]
del _name, _value, _rebound


def server_context(certfile: str, keyfile: str | None = None, password: Any = None, *,
                   cafile: str | None = None,
                   alpn_protocols: list[str] | tuple[str, ...] | None = ("http/1.1",)) -> SSLContext:
    """A server-side context for HTTPS: TLS 1.2+, no renegotiation, ALPN
    ``http/1.1``. ``cafile`` turns on client-certificate verification.

    For a green server (``tgreen-serve --certfile/--keyfile``), wrap each
    accepted connection in the greenlet that serves it, so a slow client's
    handshake holds up only that greenlet::

        ctx = tgreen.ssl.server_context("cert.pem", "key.pem")
        conn = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn.do_handshake()          # or let the first recv() do it

    The context is a subclass of ``ssl.SSLContext``, so
    ``loop.create_server(..., ssl=ctx)`` and Tornado's ``ssl_options=ctx``
    accept it too.
    """
    ctx = SSLContext(PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLSVersion.TLSv1_2
    ctx.options |= getattr(_std, "OP_NO_RENEGOTIATION", 0) | OP_NO_COMPRESSION
    ctx.load_cert_chain(certfile, keyfile, password)
    if cafile is not None:
        ctx.load_verify_locations(cafile)
        ctx.verify_mode = CERT_REQUIRED
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx


# -- patching ----------------------------------------------------------------

_pinned_create = _rebind(_StdSSLSocket._create.__func__, _std.__dict__, "ssl")  # noqa: SLF001
_is_patched = False


def __patch__(patch: Callable[[str, dict], None]) -> None:
    """Make ``ssl`` green (called by ``tgreen.monkey.patch_ssl()``); see rules 1, 2, 4."""
    global _is_patched
    if _is_patched:
        return
    _is_patched = True
    # Rule 2: the original constructor must not depend on the name we replace.
    _StdSSLSocket._create = classmethod(_pinned_create)  # noqa: SLF001
    import warnings

    from .monkey import MonkeyPatchWarning

    with warnings.catch_warnings():
        # monkey's generic warning would call every `from ssl import SSLSocket`
        # copy blocking. It is not: such a copy is still right for isinstance
        # (our class subclasses it), and contexts make green sockets whatever
        # the copy. Only subclassing it blocks; those are named below.
        warnings.filterwarnings("ignore", r".* is ssl\.SSLSocket imported before patching",
                                MonkeyPatchWarning)
        patch("ssl", {"SSLSocket": SSLSocket})
    # Rule 1: every context, old or new, wraps green sockets.
    _StdSSLContext.sslsocket_class = SSLSocket
    _warn_blocking_subclasses()


def _warn_blocking_subclasses() -> None:
    """Rule 4: name the subclasses of the original SSLSocket (they block)."""
    import warnings

    from .monkey import _EXEMPT_PREFIXES, MonkeyPatchWarning

    seen: set[type] = set()
    todo = list(_StdSSLSocket.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls in seen or issubclass(cls, SSLSocket):
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        mod = getattr(cls, "__module__", "") or ""
        if mod.startswith(_EXEMPT_PREFIXES):
            continue
        warnings.warn(
            f"tgreen.monkey: {mod}.{cls.__qualname__} subclasses ssl.SSLSocket from before "
            "patching; its sockets keep blocking the whole thread. Call "
            "tgreen.monkey.patch_all() before that class is defined.",
            MonkeyPatchWarning, stacklevel=5)

