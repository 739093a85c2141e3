"""``sleep``: the green replacement for ``time.sleep``. ::

    import tgreen
    tgreen.sleep(0.1)   # other greenlets run meanwhile
    tgreen.sleep(0)     # just yield to the loop once
"""

from __future__ import annotations

from collections.abc import Callable

from greenlet import getcurrent, greenlet

from .hub import Hub, get_hub

__all__ = ["sleep", "idle"]


# What sleep's own timer passes to the greenlet it wakes.
_SLEPT = object()


def sleep(seconds: float = 0) -> None:
    """Block the current greenlet for ``seconds``; ``sleep(0)`` yields once.

    Like ``time.sleep``: a negative value raises ValueError, a non-number TypeError.
    """
    if seconds != seconds or seconds < 0:  # NaN or negative, as time.sleep
        if seconds != seconds:
            raise ValueError("Invalid value NaN (not a number)")
        raise ValueError("sleep length must be non-negative")
    hub = get_hub()
    cur = getcurrent()
    loop = hub.loop
    # Cancelling the handle in `finally` makes a wake-up that arrives after the
    # greenlet was killed out of its sleep harmless.
    # While the loop is not running, this greenlet becomes its runner and
    # must be woken by stopping the loop (hub.resume); otherwise a direct
    # switch is the cheapest wake-up there is.
    if loop.is_running():
        # The timer switches straight in, passing _SLEPT: then it has run and
        # there is nothing to cancel (asyncio's TimerHandle.cancel() is four
        # Python calls, as much as the rest of a sleep).
        if seconds == 0:
            handle = loop.call_soon(cur.switch, _SLEPT)
        else:
            handle = loop.call_later(seconds, cur.switch, _SLEPT)
    else:
        wake = _resumer(hub, cur)
        handle = loop.call_soon(wake) if seconds == 0 else loop.call_later(seconds, wake)
    woke = None
    try:
        woke = hub.switch("sleep()")
    finally:
        # Woken another way (or killed out of the sleep): cancelling makes a
        # wake-up that arrives later harmless.
        if woke is not _SLEPT:
            handle.cancel()


def _resumer(hub: Hub, cur: greenlet) -> Callable[[], None]:
    return lambda: hub.resume(cur, None)


def idle() -> None:
    """Yield until the loop has run everything already scheduled."""
    sleep(0)
