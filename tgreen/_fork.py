"""What a forked child must do with the parent's event loop.

The child inherits the parent's asyncio loop object, whose epoll instance and
self-pipe are *shared* with the parent: if the child used it, it would steal
the parent's events (a reproduced bug: the child read data sent to the
parent's socket). Closing it normally would unregister the parent's fds from
that shared epoll. So the child marks the loop closed, closes only its own
copies of the fds with plain close(2), and lets the next green call build a
fresh hub on a fresh loop. The hub registers this with ``os.register_at_fork``.
"""

from __future__ import annotations

import asyncio

from . import _asyncio_state
from .hub import base_selector

_abandoned: list = []


def abandon_parent_loop() -> None:
    """In a forked child: forget the parent's asyncio loop without touching
    the epoll instance and self-pipe it shares with the parent (module
    docstring). The child's next green call then builds a fresh hub."""
    try:
        loop = _asyncio_state.thread_event_loop()
    except Exception:  # noqa: BLE001 - never break a fork over this
        return
    if loop is None or loop.is_closed():
        return
    sel = base_selector(loop)
    if not isinstance(loop, asyncio.BaseEventLoop) or sel is None:
        # uvloop: no way to close only our copies of its fds. Keep the object
        # alive (its deallocation would close it, unregistering fds from the
        # shared epoll) and let the child make a new loop.
        _abandoned.append(loop)
        _asyncio_state.forget_thread_event_loop()
        return
    # Mark it closed for asyncio (so close() and __del__ do nothing), then
    # close this process's copies of its fds with plain close(2)s, which do
    # not unregister anything from the shared epoll. asyncio has no public
    # way to do either: the attributes are BaseEventLoop's and
    # BaseSelectorEventLoop's own (``_closed``, ``_ssock``, ``_csock``) and
    # the selectors module's (``_selector``, the epoll object).
    loop._closed = True  # type: ignore[attr-defined]
    ep = getattr(sel, "_selector", None)
    for closer in (getattr(ep, "close", None),
                   getattr(getattr(loop, "_ssock", None), "close", None),
                   getattr(getattr(loop, "_csock", None), "close", None)):
        if closer is not None:
            try:
                closer()
            except OSError:
                pass
    _asyncio_state.forget_thread_event_loop()
