"""A green ``select`` module: ``select``, ``poll`` and ``epoll`` that block
only the calling greenlet.

Each call first asks the OS with a zero timeout (which also gives the
stdlib's own errors for bad arguments and closed fds). Only if nothing is
ready does it wait on the hub, then it asks the OS again for the exact
answer. ``epoll`` wraps a real epoll object and waits for *its* fd to become
readable, so edge-triggered and one-shot registrations behave as the kernel
defines them. ::

    from tgreen import select
    r, w, x = select.select([sock], [], [], 5.0)
"""

from __future__ import annotations

import operator as _operator
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Iterable

from . import _originals
from .hub import Waiter, current_hub_if_any

if TYPE_CHECKING:   # the snapshot is the stdlib module, typed as such
    import select as _std
else:
    _std = _originals.module("select")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value
if TYPE_CHECKING:   # copied by the loop above; named for readers and checkers
    from select import EPOLLIN, EPOLLOUT, EPOLLPRI, POLLIN, POLLOUT, POLLPRI

    from .hub import Hub

__all__ = [n for n in dir(_std) if not n.startswith("_")]

_select = _std.select
_poll = _std.poll
_epoll: Any = getattr(_std, "epoll", None)   # None where the OS has no epoll
error = OSError


def _fileno(obj: Any) -> int:
    if isinstance(obj, int):
        return obj
    return obj.fileno()


def _yield_when_ready() -> None:
    """Called when a wait that may block finds fds ready at once: yield to the
    loop once anyway, or a greenlet polling in a loop (an asyncore server in
    a green thread) would never let another greenlet run. gevent does the
    same (its test_ftplib hangs otherwise). The greenlet running the loop
    cannot yield and just goes on."""
    if current_hub_if_any() is None:
        return
    from .hub import BlockingFromHubError
    from .sleep import sleep

    try:
        sleep(0)
    except BlockingFromHubError:
        pass


def _wait_until_ready(hub: Hub, rfds: list, wfds: list, timeout: float | None,
                      check: Any) -> Any:
    """Wait on the hub until ``check()`` (a zero-timeout OS poll) reports
    something or ``timeout`` passes; return its last answer.

    A wake-up can be stale: the loop may deliver a readiness event it
    collected before another greenlet, run earlier in the same loop turn,
    drained the fd. So the answer is re-checked and the wait resumed for
    the time that is left, never returned empty early."""
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - _monotonic()
        if remaining is not None and remaining <= 0:
            return check()
        wait_fds(hub, rfds, wfds, remaining)
        result = check()
        if _any(result):
            return result


def _any(result: Any) -> bool:
    if isinstance(result, tuple):  # select()'s (r, w, x)
        return bool(result[0] or result[1] or result[2])
    return bool(result)


def wait_fds(hub: Hub, rfds: Iterable[int], wfds: Iterable[int], timeout: float | None) -> None:
    """Block until any of the fds may be ready, or ``timeout`` passes."""
    waiter = Waiter(hub)

    def ready(fd: int, event: int) -> None:
        waiter.switch(None)

    handles = []
    try:
        events: dict[int, int] = {}
        for fd in rfds:
            events[fd] = events.get(fd, 0) | 1
        for fd in wfds:
            events[fd] = events.get(fd, 0) | 2
        for fd, ev in events.items():
            try:
                handles.append(hub.add_listener(fd, ev, ready))
            except (PermissionError, ValueError, OSError):
                # Regular files are always ready for epoll's purposes: the
                # zero-timeout check after waking reports them.
                return
        waiter.get(timeout, "select()")
    finally:
        for h in handles:
            hub.remove_listener(h)


def select(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> tuple:
    """``select.select`` that blocks only the current greenlet."""
    if timeout is not None:
        if not isinstance(timeout, float):
            timeout = _operator.index(timeout)  # CPython's TypeError for "1", None-likes
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    result = _select(rlist, wlist, xlist, 0)
    if result[0] or result[1] or result[2] or timeout == 0:
        if timeout != 0 and (result[0] or result[1] or result[2]):
            _yield_when_ready()
        return result
    hub = current_hub_if_any()
    if hub is None:
        return _select(rlist, wlist, xlist, timeout)
    rfds = [_fileno(o) for o in rlist]
    wfds = [_fileno(o) for o in wlist]
    return _wait_until_ready(hub, rfds, wfds, timeout,
                             lambda: _select(rlist, wlist, xlist, 0))


def poll() -> "_Poll":
    """``select.poll()`` whose ``poll()`` blocks only the current greenlet."""
    p = object.__new__(_Poll)
    p._poll = _poll()
    p._fds = {}
    p._polling = False
    return p


class _Poll:
    """The object ``poll()`` returns; like CPython's, it cannot be
    instantiated directly."""

    __slots__ = ("_poll", "_fds", "_polling")
    _poll: Any
    _fds: dict[int, int]
    _polling: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Poll":
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")

    def register(self, fd: Any, eventmask: int = POLLIN | POLLPRI | POLLOUT) -> None:
        self._poll.register(fd, eventmask)
        self._fds[_fileno(fd)] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        self._poll.modify(fd, eventmask)
        self._fds[_fileno(fd)] = eventmask

    def unregister(self, fd: Any) -> None:
        self._poll.unregister(fd)
        self._fds.pop(_fileno(fd), None)

    def poll(self, timeout: float | None = None) -> list:
        """Like ``select.poll().poll``: ``timeout`` in milliseconds, None or
        negative to wait forever."""
        if timeout is not None:
            ms = _std_poll_timeout(timeout)
        else:
            ms = -1
        if self._polling:
            raise RuntimeError("concurrent poll() invocation")
        result = self._poll.poll(0)
        if result or ms == 0:
            if result and ms != 0:
                _yield_when_ready()
            return result
        hub = current_hub_if_any()
        if hub is None:
            return self._poll.poll(ms)
        rfds = [fd for fd, m in self._fds.items() if m & (POLLIN | POLLPRI)]
        wfds = [fd for fd, m in self._fds.items() if m & POLLOUT]
        self._polling = True
        try:
            return _wait_until_ready(hub, rfds, wfds, None if ms < 0 else ms / 1000.0,
                                     lambda: self._poll.poll(0))
        finally:
            self._polling = False


def _std_poll_timeout(timeout: Any) -> int:
    """Validate like CPython: an int-like number of ms, rounded up."""
    if isinstance(timeout, float):
        import math

        if math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        if timeout < 0:
            return -1  # CPython keeps any negative timeout negative: forever
        ms = math.ceil(timeout)
    else:
        ms = timeout.__index__() if not isinstance(timeout, int) else timeout
    if ms < 0:
        return -1
    if ms > 2**31 - 1:
        raise OverflowError("Timeout value too large")
    return ms


if _epoll is not None:

    class epoll:
        """``select.epoll`` that blocks only the current greenlet."""

        def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
            self._ep = _epoll(sizehint, flags)

        @classmethod
        def fromfd(cls, fd: int) -> "epoll":
            self = cls.__new__(cls)
            self._ep = _epoll.fromfd(fd)
            return self

        @property
        def closed(self) -> bool:
            return self._ep.closed

        def fileno(self) -> int:
            return self._ep.fileno()

        def close(self) -> None:
            if not self._ep.closed:
                from .hub import peek_hub

                hub = peek_hub()
                if hub is not None:
                    hub.notify_close(self._ep.fileno())
            self._ep.close()

        def register(self, fd: Any, eventmask: int = EPOLLIN | EPOLLPRI | EPOLLOUT) -> None:
            self._ep.register(fd, eventmask)

        def modify(self, fd: Any, eventmask: int) -> None:
            self._ep.modify(fd, eventmask)

        def unregister(self, fd: Any) -> None:
            self._ep.unregister(fd)

        def poll(self, timeout: float | None = None, maxevents: int = -1) -> list:
            """Like ``select.epoll().poll``; ``timeout`` in seconds."""
            if timeout is None:
                secs = None
            else:
                secs = float(timeout)
                if secs < 0:
                    secs = None
            result = self._ep.poll(0, maxevents)
            if result or secs == 0:
                if result and secs != 0:
                    _yield_when_ready()
                return result
            hub = current_hub_if_any()
            if hub is None:
                return self._ep.poll(timeout, maxevents)
            # An epoll fd is readable when it has events to report.
            return _wait_until_ready(hub, [self._ep.fileno()], [], secs,
                                     lambda: self._ep.poll(0, maxevents))

        def __enter__(self) -> "epoll":
            if self._ep.closed:
                raise ValueError("I/O operation on closed epoll object")
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

__implements__ = ["select", "poll"] + (["epoll"] if _epoll is not None else [])
