"""Green ``Semaphore``, ``BoundedSemaphore``, ``Lock`` and ``RLock``.

They follow ``threading``'s signatures (``acquire(blocking=True, timeout=-1)``)
so patched code and green code can share them. Release schedules the wake-up
of waiters on the loop; a woken waiter re-checks the counter, so a timed-out
or killed waiter never strands a permit.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from greenlet import getcurrent

from .hub import Waiter, get_hub

__all__ = ["Semaphore", "BoundedSemaphore", "Lock", "RLock"]


class Semaphore:
    """A counter of permits; ``acquire`` blocks the greenlet while it is 0."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.counter = value
        self._waiters: deque[Waiter] = deque()
        self._notify_pending = False

    def locked(self) -> bool:
        return self.counter <= 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False if none came within ``timeout`` (or at once
        when not ``blocking``)."""
        if timeout is not None and timeout < 0:
            if timeout != -1:
                raise ValueError("timeout value must be a non-negative number")
            timeout = None
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        if self.counter > 0:
            self.counter -= 1
            return True
        if not blocking:
            return False
        hub = get_hub()
        deadline = None if timeout is None else hub.loop.time() + timeout
        while self.counter <= 0:
            w = Waiter(hub)
            self._waiters.append(w)
            try:
                remaining = None if deadline is None else deadline - hub.loop.time()
                if remaining is not None and remaining <= 0:
                    return False
                w.get(remaining, "acquiring a lock")
            finally:
                try:
                    self._waiters.remove(w)
                except ValueError:
                    pass
                # If we were woken but leave without the permit (timeout,
                # kill), pass the wake-up on.
                if self.counter > 0 and self._waiters:
                    self._schedule_notify()
        self.counter -= 1
        return True

    def release(self, n: int = 1) -> None:
        self.counter += n
        if self._waiters:
            self._schedule_notify()

    def _schedule_notify(self) -> None:
        if not self._notify_pending:
            self._notify_pending = True
            self._waiters[0].hub.loop.call_soon(self._notify)

    def _notify(self) -> None:
        self._notify_pending = False
        # Each switch runs the waiter until it blocks again, so the counter
        # we test is always current.
        while self._waiters and self.counter > 0:
            w = self._waiters.popleft()
            w.switch(True)

    def wait(self, timeout: float | None = None) -> int:
        """Block until a permit is free without taking it."""
        if self.counter > 0:
            return self.counter
        if self.acquire(timeout=timeout):
            self.release()
        return self.counter

    def __enter__(self) -> "Semaphore":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} counter={self.counter} waiters={len(self._waiters)}>"


class BoundedSemaphore(Semaphore):
    """A Semaphore that refuses to be released above its initial value."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial = value

    def release(self, n: int = 1) -> None:
        if self.counter + n > self._initial:
            raise ValueError("Semaphore released too many times")
        super().release(n)


class Lock(Semaphore):
    """A non-reentrant lock (a semaphore of 1, released by anyone)."""

    def __init__(self) -> None:
        super().__init__(1)

    def release(self, n: int = 1) -> None:
        if self.counter >= 1:
            raise RuntimeError("release unlocked lock")
        super().release()

    def _at_fork_reinit(self) -> None:
        self.counter = 1
        self._waiters.clear()


class RLock:
    """A reentrant lock owned by the greenlet that acquired it."""

    def __init__(self) -> None:
        self._block = Lock()
        self._owner: Any = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = getcurrent()
        if self._owner is me:
            self._count += 1
            return True
        if timeout is None or timeout == -1:
            ok = self._block.acquire(blocking)
        else:
            ok = self._block.acquire(blocking, timeout)
        if ok:
            self._owner = me
            self._count = 1
        return ok

    def release(self) -> None:
        if self._owner is not getcurrent():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def locked(self) -> bool:
        return self._block.locked()

    def _is_owned(self) -> bool:
        return self._owner is getcurrent()

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()
