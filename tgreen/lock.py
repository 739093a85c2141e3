"""``Semaphore``, ``BoundedSemaphore``, ``Lock`` and ``RLock`` for greenlets
and OS threads alike.

One implementation of waiting backs every tgreen lock: ``tgreen._waitqueue``'s
``WaitQueue``, where a greenlet parks a Waiter and switches to the loop while a
plain OS thread blocks for real. ``Lock`` and ``RLock`` *are* the green
``_thread`` locks that ``patch_all()`` installs, so a ``tgreen.Lock`` and a
patched ``threading.Lock`` are the same thing. They follow ``threading``'s
signatures (``acquire(blocking=True, timeout=-1)``).

The waiting itself (re-check after registering; a woken waiter that leaves
empty-handed passes the wake-up on) is ``WaitQueue.park_until``.
"""

from __future__ import annotations


from . import _originals
from ._locks import LockType, RLock, allocate_lock, check_timeout
from ._waitqueue import WaitQueue

__all__ = ["BoundedSemaphore", "Lock", "RLock", "Semaphore"]

_c_allocate_lock = _originals.get("_thread", "allocate_lock")


def Lock() -> LockType:
    """A non-reentrant lock, released by anyone; parks greenlets, blocks OS threads."""
    lock: LockType = allocate_lock()
    return lock


class Semaphore:
    """A counter of permits; ``acquire`` waits while it is 0."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.counter = value
        # Guards the counter only (never held across a wait): a release
        # from another OS thread must not interleave with a take.
        self._mutex = _c_allocate_lock()
        self._waiters = WaitQueue()

    def locked(self) -> bool:
        return self.counter <= 0

    def _take(self) -> bool:
        with self._mutex:
            if self.counter > 0:
                self.counter -= 1
                return True
            return False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False if none came within ``timeout`` (or at once
        when not ``blocking``)."""
        timeout = check_timeout(blocking, -1 if timeout is None else timeout)
        if self._take():
            return True
        if not blocking:
            return False
        return self._waiters.park_until(self._take, self._available, timeout, "acquiring a semaphore")

    def _available(self) -> bool:
        return self.counter > 0

    def release(self, n: int = 1) -> None:
        """Return ``n`` permits and wake as many waiters."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._mutex:
            self._check_release(n)
            self.counter += n
        waiters = self._waiters
        for _ in range(n):
            if not waiters.wake_one():
                break

    def _check_release(self, n: int) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        """Block until a permit is free without taking it."""
        if self.counter > 0:
            return self.counter
        if self.acquire(timeout=timeout):
            self.release()
        return self.counter

    def _at_fork_reinit(self) -> None:
        self._mutex = _c_allocate_lock()
        self._waiters = WaitQueue()

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} counter={self.counter} waiters={len(self._waiters)}>"


class BoundedSemaphore(Semaphore):
    """A Semaphore that refuses to be released above its initial value."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial = value

    def _check_release(self, n: int) -> None:
        if self.counter + n > self._initial:
            raise ValueError("Semaphore released too many times")
