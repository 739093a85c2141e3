"""``Event`` and ``AsyncResult``: wait until something has happened. ::

    import tgreen
    from tgreen.event import Event
    ev = Event()
    tgreen.spawn(ev.set)
    assert ev.wait(1)
"""

from __future__ import annotations

from typing import Any

from .hub import Waiter, get_hub

__all__ = ["Event", "AsyncResult"]


class Event:
    """A flag greenlets can wait on, like ``threading.Event``."""

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[Waiter] = []

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        """Set the flag and wake every waiter (on the next loop turn)."""
        self._flag = True
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            loop = waiters[0].hub.loop
            for w in waiters:
                loop.call_soon(w.switch, True)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set; return the flag (False on timeout)."""
        if self._flag:
            return True
        w = Waiter(get_hub())
        self._waiters.append(w)
        try:
            w.get(timeout, "Event.wait()")
        finally:
            try:
                self._waiters.remove(w)
            except ValueError:
                pass
        return self._flag


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
