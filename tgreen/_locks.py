"""The green ``_thread`` locks: ``LockType`` (``_thread.lock``) and ``RLock``.

Theory of operation
-------------------
A green lock is a real ``_thread.lock`` (the *state*: held or not, changed
atomically by C) plus a ``WaitQueue`` of parked waiters (``_waitqueue.py``).
``acquire`` first tries the real lock without blocking; only on contention
does it park, and *how* depends on who is asking:

* a greenlet in a thread that has a hub (the main thread, or any thread that
  uses tgreen): it parks and switches to the loop;
* a plain OS thread (an asyncio executor worker, a ``tgreen.threadpool``
  worker): it blocks on the real lock, as the stdlib would;
* the greenlet that runs an adopted loop (a coroutine or a loop callback) may
  not switch: if the holder is another OS thread it blocks on the real lock
  for the moment that thread needs; if the holder is a greenlet of its own
  thread, blocking could never end, and it raises ``BlockingFromHubError``.

``release`` releases the real lock and wakes the oldest parked waiter on
*the waiter's* loop. The woken waiter retries; if someone else got there
first it parks again. So the locks are safe to share with real threads.

Rules of this file:

1. The lock objects look like C's: same names and reprs, ``_thread.lock``
   not subclassable, ``LockType`` callable only where C's is (3.13+).
2. The fast path (uncontended acquire/release) is a C lock call and an
   attribute test, nothing more: ``tgreen.queue`` inlines it in ``put``/``get``
   (``_block``, ``_waiters``, ``_os_owner`` are shared with it on purpose).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from . import _originals
from ._waitqueue import WaitQueue
from ._threads import get_ident
from .hub import BlockingFromHubError, current_hub_if_any

__all__ = ["TIMEOUT_MAX", "LockType", "RLock", "allocate_lock", "check_timeout", "new_lock"]

_c_allocate_lock = _originals.get("_thread", "allocate_lock")
_c_get_ident = _originals.get("_thread", "get_ident")
_c_LockType = _originals.module("_thread").LockType
TIMEOUT_MAX = _originals.get("_thread", "TIMEOUT_MAX")
try:
    _c_LockType()
    _LOCK_TYPE_CALLABLE = True  # 3.13+: threading.Lock is the type itself
except TypeError:
    _LOCK_TYPE_CALLABLE = False


def check_timeout(blocking: Any, timeout: Any) -> float | None:
    """Validate ``acquire(blocking, timeout)`` like the C lock; None = forever."""
    if timeout is None or timeout == -1:
        return None
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


class LockType:
    """A non-reentrant lock (``_thread.lock``) that parks greenlets.

    See the module docstring: the state is a real lock, so any thread may
    acquire and release it; only contended waits differ by caller.
    """

    __slots__ = ("__weakref__", "_block", "_os_owner", "_waiters")

    _block: Any
    _waiters: WaitQueue | None
    _os_owner: int

    def __new__(cls, *args: Any, **kwargs: Any) -> LockType:
        # Like the C type: before 3.13 locks come from allocate_lock() only;
        # since 3.13 the type makes them too (``threading.Lock()``).
        if not _LOCK_TYPE_CALLABLE:
            raise TypeError("cannot create '_thread.lock' instances")
        if args or kwargs:
            raise TypeError(f"lock expected 0 arguments, got {len(args) + len(kwargs)}")
        return new_lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The C lock type was never subclassable; 3.13 made that a test.
        raise TypeError("type '_thread.lock' is not an acceptable base type")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; False if ``blocking`` is false or ``timeout`` passed."""
        if self._block.acquire(False):
            if timeout != -1 or not blocking:
                try:
                    check_timeout(blocking, timeout)
                except BaseException:
                    self._block.release()
                    raise
            self._os_owner = _c_get_ident()
            return True
        wait: float | None = None   # forever
        if timeout != -1 or not blocking:
            wait = check_timeout(blocking, timeout)
            if not blocking or wait == 0:
                return False
        return self._acquire_contended(wait)

    def _acquire_contended(self, timeout: float | None) -> bool:
        me = _c_get_ident()
        if current_hub_if_any() is None:  # a plain OS thread blocks for real
            return self._real_acquire(timeout)
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = WaitQueue()
        try:
            ok = waiters.park_until(self._block_try, self._free, timeout, "acquiring a lock")
        except BlockingFromHubError:
            if self._os_owner != me:
                # Held by another OS thread: it does not need our loop to
                # release the lock, so a short real wait is safe.
                return self._real_acquire(timeout)
            raise
        if ok:
            self._os_owner = me
        return ok

    def _block_try(self) -> bool:
        return self._block.acquire(False)

    def _free(self) -> bool:
        return not self._block.locked()

    def _real_acquire(self, timeout: float | None) -> bool:
        if self._block.acquire(True, -1 if timeout is None else max(timeout, 0)):
            self._os_owner = _c_get_ident()
            return True
        return False

    def release(self) -> None:
        """Release the lock (from any greenlet or thread) and wake one waiter."""
        self._block.release()
        if self._waiters:
            self._waiters.wake_one()

    def locked(self) -> bool:
        return self._block.locked()

    def _at_fork_reinit(self) -> None:
        self._block = _c_allocate_lock()
        self._waiters = None

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked
    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self._block.release()
        if self._waiters:
            self._waiters.wake_one()

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '_thread.lock' object")

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return f"<{state} _thread.lock object at {id(self):#x}>"


class RLock:
    """A reentrant lock owned by the greenlet (the "thread") that acquired it."""

    __slots__ = ("__weakref__", "_block", "_count", "_owner")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments are accepted and ignored, as by the C type (3.13's
        # threading.RLock warns about them before passing them on).
        self._block = new_lock()
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        g = getcurrent()
        me = _c_get_ident() if g.parent is None else id(g)
        if self._owner == me:
            if timeout != -1 or not blocking:
                check_timeout(blocking, timeout)
            self._count += 1
            return True
        block = self._block
        if blocking is True and timeout == -1 and block._block.acquire(False):
            block._os_owner = _c_get_ident()  # the lock's fast path, inline
        elif not block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        if self._owner != get_ident() or not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            block = self._block
            block._block.release()
            if block._waiters:
                block._waiters.wake_one()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return self._count > 0 and self._owner == get_ident()

    def locked(self) -> bool:
        """Whether any thread holds it (3.14's ``RLock.locked``)."""
        return self._block.locked()

    def _recursion_count(self) -> int:
        return self._count if self._owner == get_ident() else 0

    def _release_save(self) -> tuple:
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '_thread.RLock' object")

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return (f"<{state} _thread.RLock object owner={self._owner or 0} "
                f"count={self._count} at {id(self):#x}>")


RLock.__module__ = LockType.__module__ = "_thread"
LockType.__name__ = LockType.__qualname__ = "lock"
_object_new = object.__new__


def new_lock() -> LockType:
    """A new green lock (``_thread.allocate_lock``)."""
    lock = _object_new(LockType)
    lock._block = _c_allocate_lock()
    lock._waiters = None
    lock._os_owner = 0
    return lock


class _Builtin:
    """Wraps a function so that, like a C builtin, it does not bind as a
    method when stored on a class (``locktype = _thread.allocate_lock``)."""

    __slots__ = ("__name__", "__qualname__", "_fn")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<built-in function {self.__name__}>"


allocate_lock = allocate = _Builtin(new_lock, "allocate_lock")
_Builtin.__module__ = "_thread"
