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
    # must be woken by stopping the loop (hub._resume); otherwise a direct
    # switch is the cheapest wake-up there is.
    wake = cur.switch if loop.is_running() else _resumer(hub, cur)
    if seconds == 0:
        handle = loop.call_soon(wake)
    else:
        handle = loop.call_later(seconds, wake)
    try:
        hub.switch("sleep()")
    finally:
        handle.cancel()


def _resumer(hub: Hub, cur: greenlet) -> Callable[[], None]:
    return lambda: hub._resume(cur, None)


def idle() -> None:
    """Yield until the loop has run everything already scheduled."""
    sleep(0)
