"""Green versions of the blocking ``os`` calls: child waits, pipe reads and
writes, and a ``fork`` that leaves the child a fresh hub. ::

    import tgreen.os
    pid = tgreen.os.fork()
    if pid == 0:
        tgreen.sleep(0.1)            # the child gets a loop of its own
        tgreen.os._exit(3)
    pid, status = tgreen.os.waitpid(pid, 0)   # other greenlets run meanwhile
    assert tgreen.os.waitstatus_to_exitcode(status) == 3

Theory of operation
-------------------
*Child exits.* A waiting greenlet must learn that a child exited without the
loop blocking in ``waitpid``. tgreen opens a pidfd (``os.pidfd_open``, Linux
5.3 and later): an fd that becomes readable when the process exits, waited on
the hub like a socket, then reaped with ``waitpid(WNOHANG)``. It was chosen
over SIGCHLD because a SIGCHLD handler is process-wide state: asyncio's child
watchers, Tornado's ``Subprocess`` and user code each want to own it, it can
only be installed from the main thread, and it reaps children it does not
own. A pidfd is private to one wait, works in every thread, and does not
reap. Where pidfds are unavailable (older kernels, seccomp sandboxes, other
systems), or for waits a pidfd cannot express (any child: ``pid <= 0``;
``WUNTRACED``/``WCONTINUED``), the wait polls ``waitpid(WNOHANG)`` with a
backoff from 1 ms to 20 ms, as CPython's own ``Popen.wait(timeout)`` does.

*Pipes.* ``read``/``write`` on a *blocking* fd that is not ready wait on the
hub first (a zero-timeout ``poll`` says whether the call would block). A
non-blocking fd keeps its stdlib behaviour, ``BlockingIOError`` included:
whoever made it non-blocking wants to see EAGAIN (asyncio's pipe transports
do). ``nb_read``/``nb_write`` are the gevent-style helpers for fds you made
non-blocking yourself: they wait on EAGAIN instead.

*fork.* After ``fork()`` the child must not touch the parent's event loop: its
epoll instance and self-pipe are shared with the parent, so a registration or
an unregistration in the child changes what the *parent* waits on. The at-fork
hook here abandons that loop in the child without closing it through asyncio
(closing would unregister fds from the shared epoll), so the child's first
green call creates a new hub on a new loop.

Rules of this file:

1. Calls made outside green code (plain OS threads, see
   ``hub.current_hub_if_any``) are the stdlib's, unchanged.
2. Every pidfd opened here is dropped from the hub (``notify_close``) before
   it is closed, so a recycled fd number never inherits a stale registration.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from fcntl import F_GETFL as _F_GETFL, fcntl as _fcntl

from . import _originals
from .hub import current_hub_if_any
from .sleep import sleep as _green_sleep

if TYPE_CHECKING:   # the snapshot is the stdlib module, typed as such
    import os as _std
else:
    _std = _originals.module("os")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value

__implements__ = ["fork", "forkpty", "waitpid", "wait", "wait3", "wait4", "waitid",
                  "read", "write"]
__extensions__ = ["nb_read", "nb_write", "make_nonblocking", "poll_now", "wait_child_exit"]
__all__ = __implements__ + __extensions__

_read = _std.read
_write = _std.write
_waitpid = _std.waitpid
_fork = _std.fork
# None where the OS lacks the call (Any: called only where it exists).
_forkpty: Any = getattr(_std, "forkpty", None)
_wait3: Any = getattr(_std, "wait3", None)
_wait4: Any = getattr(_std, "wait4", None)
_waitid: Any = getattr(_std, "waitid", None)
_pidfd_open: Any = getattr(_std, "pidfd_open", None)
_get_blocking = _std.get_blocking
_WNOHANG = _std.WNOHANG
# Waits a pidfd cannot express: it only signals exit.
_NOT_EXIT_ONLY = getattr(_std, "WUNTRACED", 0) | getattr(_std, "WCONTINUED", 0)

_select = _originals.module("select")
_POLLIN = _select.POLLIN
_POLLOUT = _select.POLLOUT
_PIPE_BUF = getattr(_select, "PIPE_BUF", 512)

_BACKOFF_FIRST = 0.001
_BACKOFF_MAX = 0.02


# -- readiness ---------------------------------------------------------------------

def poll_now(fd: int, events: int) -> bool:
    """Would a read (POLLIN) / write (POLLOUT) on ``fd`` proceed right now?"""
    p = _select.poll()
    p.register(fd, events)
    return bool(p.poll(0))


def _block_until(fd: int, events: int) -> None:
    """Wait for ``fd`` the blocking way (plain OS threads)."""
    p = _select.poll()
    p.register(fd, events)
    p.poll()


def wait_fd(fd: int, write: bool = False, hub: Any = None, keep: bool = False,
            owner: Any = None) -> None:
    """Block the current greenlet (or, outside green code, the thread) until
    ``fd`` is readable, or writable with ``write=True``.

    The hub keeps an fd registered after a wait, expecting to be told when
    it closes (``notify_close``). Fds here are closed by whoever owns them,
    often with a plain ``os.close``, and a later fd with the same number
    would then inherit a registration the kernel has already dropped. So
    unless ``keep`` (the caller notifies the hub on close, as
    ``tgreen.fileobject`` does), the registration is removed after the wait,
    and a stale one left by others is removed before it. ``owner`` is the
    object a kept registration belongs to (see hub.py "Registrations").
    """
    if hub is None:
        hub = current_hub_if_any()
    if hub is None:
        _block_until(fd, _POLLOUT if write else _POLLIN)
        return
    restore_blocking = False
    if not keep:
        hub.forget(fd)
        # uvloop (libuv's uv_poll) puts every fd it watches in non-blocking
        # mode; an fd somebody else owns must come back as it was.
        restore_blocking = type(hub.loop).__module__.startswith("uvloop") and _get_blocking(fd)
    try:
        if write:
            hub.wait_write(fd, None, owner)
        else:
            hub.wait_read(fd, None, owner)
    except PermissionError:
        # epoll refuses regular files and directories; those never block on
        # readiness anyway, so the call can go ahead.
        pass
    finally:
        if not keep:
            hub.forget(fd)
            if restore_blocking:
                try:
                    _std.set_blocking(fd, True)
                except OSError:
                    pass


# -- reads and writes ----------------------------------------------------------------

_O_ACCMODE = _std.O_ACCMODE
_O_RDONLY = _std.O_RDONLY
_O_WRONLY = _std.O_WRONLY
_O_NONBLOCK = _std.O_NONBLOCK


def _may_block(fd: int, wrong_mode: int) -> bool:
    """Could this read/write block? Only on a blocking fd opened for it: a
    non-blocking fd keeps its EAGAIN, and an fd opened the other way (a
    pipe's read end given to ``write``) fails at once with EBADF."""
    try:
        flags = _fcntl(fd, _F_GETFL)
    except (OSError, ValueError, TypeError, OverflowError):
        # A bad fd (closed, negative, not an int): the syscall raises the
        # stdlib's own error (os.read(-1, 1) is OSError EBADF, not ValueError).
        return False
    return not flags & _O_NONBLOCK and (flags & _O_ACCMODE) != wrong_mode



def make_nonblocking(fd: int) -> bool:
    """Put ``fd`` in non-blocking mode. True if it was blocking before."""
    if _get_blocking(fd):
        _std.set_blocking(fd, False)
        return True
    return False


def nb_read(fd: int, n: int) -> bytes:
    """``os.read`` on a non-blocking fd that waits (greenly) instead of
    raising ``BlockingIOError``."""
    hub = None
    while True:
        try:
            return _read(fd, n)
        except BlockingIOError:
            if hub is None:
                hub = current_hub_if_any()
            wait_fd(fd, False, hub)


def nb_write(fd: int, data: Any) -> int:
    """``os.write`` on a non-blocking fd that waits (greenly) instead of
    raising ``BlockingIOError``. Returns the bytes written (maybe fewer than
    ``len(data)``, as ``os.write``)."""
    hub = None
    while True:
        try:
            return _write(fd, data)
        except BlockingIOError:
            if hub is None:
                hub = current_hub_if_any()
            wait_fd(fd, True, hub)


def read(fd: int, n: int) -> bytes:
    """``os.read`` that waits on the hub while a blocking fd has nothing to read."""
    hub = current_hub_if_any()
    if hub is None or n <= 0 or not _may_block(fd, _O_WRONLY) or poll_now(fd, _POLLIN):
        return _read(fd, n)
    wait_fd(fd, False, hub)
    return _read(fd, n)


def write(fd: int, data: Any) -> int:
    """``os.write`` that waits on the hub while a blocking fd is full.

    A blocking pipe write of more than ``PIPE_BUF`` bytes could still block
    after the fd polled writable, so it goes out in ``PIPE_BUF`` pieces, each
    after a readiness check; like the blocking call, it returns only once
    everything is written (or raises, e.g. ``BrokenPipeError``, having
    written nothing of the failing piece).
    """
    hub = current_hub_if_any()
    if hub is None or not _may_block(fd, _O_RDONLY):
        return _write(fd, data)
    view = memoryview(data).cast("B")
    total = len(view)
    if total <= _PIPE_BUF:
        if not poll_now(fd, _POLLOUT):
            wait_fd(fd, True, hub)
        return _write(fd, view)
    done = 0
    while done < total:
        if not poll_now(fd, _POLLOUT):
            wait_fd(fd, True, hub)
        try:
            done += _write(fd, view[done:done + _PIPE_BUF])
        except OSError:
            if done:
                return done
            raise
    return done


# -- child processes -----------------------------------------------------------------

_pidfd_works = _pidfd_open is not None


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None when pidfds cannot be used here (then
    the caller polls). Raises ProcessLookupError for a reaped pid."""
    global _pidfd_works
    if not _pidfd_works:
        return None
    try:
        return _pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EINVAL):
            _pidfd_works = False  # not on this kernel / in this sandbox
        return None  # EMFILE and friends: poll this time


def wait_child_exit(pid: int, timeout: float | None = None, _attempt: int = 0) -> bool:
    """Block the current greenlet until child ``pid`` *may* have exited.

    With a pidfd that is exactly when it exits (or ``timeout`` passes; then
    the result is False). Without one it is one step of the polling backoff
    (``_attempt`` counts the steps), after which the caller checks with
    ``waitpid(WNOHANG)``. Never reaps the child.
    """
    hub = current_hub_if_any()
    fd = None
    if pid > 0:
        try:
            fd = _open_pidfd(pid)
        except ProcessLookupError:
            return True  # reaped already; the caller's waitpid will say so
    if fd is not None:
        if hub is None:
            try:
                p = _select.poll()
                p.register(fd, _POLLIN)
                return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000))))
            finally:
                _std.close(fd)
        try:
            return hub.wait_read(fd, timeout)
        finally:
            hub.notify_close(fd)
            _std.close(fd)
    delay = min(_BACKOFF_FIRST * (2 ** min(_attempt, 10)), _BACKOFF_MAX)
    if timeout is not None:
        delay = max(0.0, min(delay, timeout))
    if hub is None:
        _originals.get("time", "sleep")(delay)
    else:
        _green_sleep(delay)
    return True


def _green_wait(call: Any, nohang_result: Any, pid: int, options: int) -> Any:
    """Repeat ``call(options | WNOHANG)`` until it reports a child, waiting
    greenly in between. ``nohang_result(r)`` says "no child changed state"."""
    if options & _WNOHANG or current_hub_if_any() is None:
        return call(options)
    exit_only = pid > 0 and not (options & _NOT_EXIT_ONLY)
    attempt = 0
    while True:
        r = call(options | _WNOHANG)
        if not nohang_result(r):
            return r
        wait_child_exit(pid if exit_only else 0, None, attempt)
        attempt += 1


def waitpid(pid: int, options: int) -> tuple[int, int]:
    """``os.waitpid`` that blocks only the calling greenlet."""
    return _green_wait(lambda o: _waitpid(pid, o), lambda r: r[0] == 0, pid, options)


def wait() -> tuple[int, int]:
    """``os.wait`` (any child) that blocks only the calling greenlet."""
    return waitpid(-1, 0)


if _wait3 is not None:
    def wait3(options: int) -> tuple[int, int, Any]:
        """``os.wait3`` that blocks only the calling greenlet."""
        return _green_wait(_wait3, lambda r: r[0] == 0, -1, options)

if _wait4 is not None:
    def wait4(pid: int, options: int) -> tuple[int, int, Any]:
        """``os.wait4`` that blocks only the calling greenlet."""
        return _green_wait(lambda o: _wait4(pid, o), lambda r: r[0] == 0, pid, options)

if _waitid is not None:
    def waitid(idtype: int, ident: int, options: int) -> Any:
        """``os.waitid`` that blocks only the calling greenlet (``P_PIDFD``
        waits on the given pidfd itself)."""
        if options & _WNOHANG or current_hub_if_any() is None:
            return _waitid(idtype, ident, options)
        p_pidfd = getattr(_std, "P_PIDFD", None)
        exit_only = options & _std.WEXITED and not options & (
            getattr(_std, "WSTOPPED", 0) | getattr(_std, "WCONTINUED", 0))
        attempt = 0
        while True:
            r = _waitid(idtype, ident, options | _WNOHANG)
            if r is not None:
                return r
            if idtype == p_pidfd and exit_only:
                wait_fd(ident)
            else:
                pid = ident if idtype == _std.P_PID and exit_only else 0
                wait_child_exit(pid, None, attempt)
            attempt += 1


# -- fork ----------------------------------------------------------------------------

from ._fork import abandon_parent_loop as _abandon_parent_loop  # noqa: E402


def _after_fork_in_child() -> None:
    _abandon_parent_loop()


if hasattr(_std, "register_at_fork"):
    _std.register_at_fork(after_in_child=_after_fork_in_child)


def fork() -> int:
    """``os.fork``; the child starts with a fresh hub on a fresh loop.

    Greenlets of the parent exist in the child too, but nothing will run
    them: the child should ``exec`` or ``os._exit`` from the greenlet that
    forked (multiprocessing does).
    """
    pid = _fork()
    if pid == 0:
        _after_fork_in_child()  # idempotent with the at-fork hook
    return pid


if _forkpty is not None:
    def forkpty() -> tuple[int, int]:
        """``os.forkpty``; the child starts with a fresh hub (see ``fork``)."""
        pid, fd = _forkpty()
        if pid == 0:
            _after_fork_in_child()
        return pid, fd


__implements__ = [n for n in __implements__ if n in globals()]
__all__ = __implements__ + __extensions__ + ["wait_fd"]
