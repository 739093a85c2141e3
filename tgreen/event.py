"""``Event`` and ``AsyncResult``: wait until something has happened. ::

    import tgreen
    from tgreen.event import Event
    ev = Event()
    tgreen.spawn(ev.set)
    assert ev.wait(1)
"""

from __future__ import annotations

from typing import Any

from ._waitqueue import WaitQueue

__all__ = ["AsyncResult", "Event"]


class Event:
    """A flag greenlets and OS threads can wait on, like ``threading.Event``.

    No Condition: the stdlib's Event waits through ``Condition.wait`` (a
    fresh waiter lock, two lock round trips and a notify per wake-up); this
    one parks the waiter directly in a ``WaitQueue`` (``tgreen._waitqueue``), at a
    quarter of the cost of a set/wait round trip. It is safe across OS
    threads: a waiter registers before re-checking the flag, and ``set``
    raises the flag before waking everyone registered, so no wake-up falls in
    between (no mutex needed). ``wait`` returns True when woken by ``set`` even
    if the flag was cleared again before the waiter ran, as the stdlib's does.
    Patched ``threading.Event`` is this class.
    """

    def __init__(self) -> None:
        self._flag = False
        self._waiters = WaitQueue()

    def is_set(self) -> bool:
        """Return true if and only if the internal flag is true."""
        return self._flag

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every waiter (each on its own loop's next turn)."""
        self._flag = True
        waiters = self._waiters
        while waiters:
            waiters.wake_one()

    def clear(self) -> None:
        """Reset the flag; later ``wait`` calls block until ``set``."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` passes; True unless it
        timed out."""
        if self._flag:
            return True
        if timeout is not None and timeout <= 0:
            return False
        waiters = self._waiters
        p = waiters.register()
        if self._flag:  # set between our check and registering
            waiters.unregister(p)
            return True
        try:
            woken = p.block(timeout, "Event.wait()")
        finally:
            waiters.unregister(p)
        return woken or self._flag

    def _at_fork_reinit(self) -> None:
        self._waiters = WaitQueue()


class AsyncResult:
    """A one-shot value or exception that greenlets can wait for."""

    _NOTSET = object()

    def __init__(self) -> None:
        self._event = Event()
        self._value: Any = self._NOTSET
        self._exc: BaseException | None = None

    def set(self, value: Any = None) -> None:
        self._value = value
        self._event.set()

    def set_exception(self, exc: BaseException) -> None:
        self._exc = exc
        self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        return self._event.is_set() and self._exc is None

    @property
    def value(self) -> Any:
        return None if self._value is self._NOTSET else self._value

    @property
    def exception(self) -> BaseException | None:
        return self._exc

    def wait(self, timeout: float | None = None) -> Any:
        self._event.wait(timeout)
        return self.value

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The value, or raise the exception; ``tgreen.Timeout`` if not ready."""
        if not self._event.is_set() and block:
            self._event.wait(timeout)
        if not self._event.is_set():
            from .timeout import Timeout

            raise Timeout(timeout)
        if self._exc is not None:
            raise self._exc
        return self._value
