"""``Timeout``: raise an exception in the current greenlet after some time. ::

    import tgreen
    with tgreen.Timeout(0.5):            # raises Timeout after 0.5 s
        tgreen.sleep(10)

    with tgreen.Timeout(0.5, False):     # just leaves the block quietly
        tgreen.sleep(10)

    with tgreen.Timeout(0.5, ValueError("slow")):
        tgreen.sleep(10)                 # raises ValueError("slow")

``Timeout`` derives from BaseException (as gevent's does) so that a bare
``except Exception`` in the guarded code cannot swallow it by accident.
"""

from __future__ import annotations

from typing import Any

from greenlet import getcurrent

from .hub import get_hub

__all__ = ["Timeout", "with_timeout"]


class Timeout(BaseException):
    """Raise ``exception`` (or this Timeout itself) in the greenlet that
    started it once ``seconds`` have passed, interrupting whatever it waits on.

    ``exception`` may be None (raise this Timeout), False (only in a ``with``
    block: leave the block silently), an exception class or an instance.
    ``seconds=None`` never fires.
    """

    def __init__(self, seconds: float | None = None, exception: Any = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._handle: Any = None

    @classmethod
    def start_new(cls, seconds: float | None = None, exception: Any = None) -> "Timeout":
        """Create and start a Timeout (a Timeout instance is returned as is)."""
        if isinstance(seconds, Timeout):
            t = seconds
        else:
            t = cls(seconds, exception)
        t.start()
        return t

    @property
    def pending(self) -> bool:
        """True while the timer is armed."""
        return self._handle is not None

    def start(self) -> None:
        """Arm the timer for the current greenlet."""
        if self._handle is not None:
            raise AssertionError("tgreen: this Timeout is already started")
        if self.seconds is None:
            return
        hub = get_hub()
        self._handle = hub.loop.call_later(max(self.seconds, 0.0), self._fire, hub, getcurrent())

    def _fire(self, hub: Any, g: Any) -> None:
        self._handle = None
        exc = self.exception
        if exc is None or exc is False:
            exc = self
        elif isinstance(exc, type):
            exc = exc()
        hub.throw(g, exc)

    def cancel(self) -> None:
        """Disarm the timer (safe to call more than once)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    close = cancel

    def __enter__(self) -> "Timeout":
        if self._handle is None:
            self.start()
        return self

    def __exit__(self, typ: Any, value: Any, tb: Any) -> bool:
        self.cancel()
        return value is self and self.exception is False

    def __str__(self) -> str:
        if self.seconds is None:
            return ""
        suffix = "" if self.seconds == 1 else "s"
        if self.exception is None or self.exception is False:
            return f"{self.seconds} second{suffix}"
        return f"{self.seconds} second{suffix}: {self.exception}"

    def __repr__(self) -> str:
        return f"<Timeout seconds={self.seconds!r} exception={self.exception!r} pending={self.pending}>"


def with_timeout(seconds: float, fn: Any, *args: Any, timeout_value: Any = ..., **kwargs: Any) -> Any:
    """Call ``fn`` under a Timeout; return ``timeout_value`` instead of
    raising when it is given."""
    t = Timeout.start_new(seconds)
    try:
        return fn(*args, **kwargs)
    except Timeout as e:
        if e is t and timeout_value is not ...:
            return timeout_value
        raise
    finally:
        t.cancel()
