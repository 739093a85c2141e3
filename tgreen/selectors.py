"""A green ``selectors`` module: the stdlib's selector classes over the green
``select`` primitives, so ``sel.select(timeout)`` blocks only the greenlet. ::

    from tgreen import selectors
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    events = sel.select(timeout=1.0)

Selectors that serve an event loop
----------------------------------
A selector is also what an asyncio loop blocks in. A loop that synchronous
code runs inside a greenlet (``asyncio.run`` in a greenlet, a test that
drives its own loop) must not block the thread there, or every other
greenlet stops until it wakes. So when ``select()`` is called as the
selector of the running loop (``loop._selector`` is this selector), it
waits *through the hub the greenlet belongs to*: it asks the OS without
waiting, and if nothing is ready it waits on the hub for the selector's own
fd (an epoll fd is readable when it has events) and asks again. The other
greenlets run meanwhile. A loop's selector never waits on the loop it
serves; with no other hub in the thread it blocks for real.

``LoopSelector`` is the unpatched default selector with only that
behaviour: ``tgreen.monkey.patch_asyncio()`` (part of ``patch_all()``) makes
it the one asyncio gives new loops, so ``asyncio.run`` inside a greenlet
lets the other greenlets run while it waits. tgreen's own hub loops keep
the plain original selector.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, Callable

from . import _originals
from . import select as _green_select
from ._asyncio_state import running_loop as _get_running_loop
from .hub import serves as _serves

if TYPE_CHECKING:   # the snapshot is the stdlib module, typed as such
    import selectors as _std
else:
    _std = _originals.module("selectors")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value

__all__ = [n for n in dir(_std) if not n.startswith("_") and n[0].isupper()]

_real_poll = _originals.get("select", "poll")



def _fds_to_wait(sel: Any) -> tuple[list[int], list[int]]:
    """What to watch for ``sel.select`` to have something: its own fd when it
    has one (epoll), else every registered fd."""
    try:
        fd = sel.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd >= 0:
        return [fd], []
    rfds, wfds = [], []
    for key in sel.get_map().values():
        if key.events & _std.EVENT_READ:
            rfds.append(key.fd)
        if key.events & _std.EVENT_WRITE:
            wfds.append(key.fd)
    return rfds, wfds


def _block_for_real(sel: Any, timeout: float | None) -> None:
    """Wait in the OS until ``sel`` has events or ``timeout`` passes."""
    rfds, wfds = _fds_to_wait(sel)
    p = _real_poll()
    for fd in rfds:
        p.register(fd, _green_select.POLLIN)
    for fd in wfds:
        p.register(fd, _green_select.POLLOUT)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    try:
        p.poll(ms)
    except InterruptedError:
        pass


def _select_for_loop(sel: Any, loop: Any, timeout: float | None,
                     base: Callable[[float | None], list], base_is_real: bool) -> list:
    if timeout is not None and timeout <= 0:
        return base(timeout)
    from .hub import BlockingFromHubError, hub_to_wait_through

    hub = hub_to_wait_through(loop)
    if hub is None:
        if base_is_real:
            return base(timeout)
        _block_for_real(sel, timeout)
        return base(0)
    ready = base(0)
    if ready:
        return ready
    rfds, wfds = _fds_to_wait(sel)
    try:
        _green_select.wait_fds(hub, rfds, wfds, timeout)
    except BlockingFromHubError:
        _block_for_real(sel, timeout)
    return base(0)


class _LoopAware:
    """Mixin: ``select()`` as the selector of a running loop waits through
    the greenlet's hub (see the module docstring)."""

    _base_is_real = False

    def select(self, timeout: float | None = None) -> list:
        loop = _get_running_loop()
        base = super().select  # type: ignore[misc]
        if loop is None or not _serves(self, loop):
            return base(timeout)
        return _select_for_loop(self, loop, timeout, base, self._base_is_real)


class LoopSelector(_LoopAware, _std.DefaultSelector):
    """The original default selector; as a loop's selector inside a greenlet
    it waits through the hub instead of blocking the thread."""

    _base_is_real = True


def asyncio_selectors_module() -> types.ModuleType:
    """The ``selectors`` module asyncio sees after ``patch_asyncio()``: the
    originals, with ``LoopSelector`` as ``DefaultSelector``."""
    mod = types.ModuleType("selectors", _std.__doc__)
    mod.__dict__.update(_std.__dict__)
    mod.DefaultSelector = LoopSelector  # type: ignore[attr-defined]
    mod.__dict__["__tgreen_original__"] = True
    return mod


class SelectSelector(_LoopAware, _std.SelectSelector):
    """``selectors.SelectSelector`` over green ``select``."""

    def _select(self, r, w, _, timeout=None):
        r, w, x = _green_select.select(r, w, w, timeout)
        return r, w + x, []


class PollSelector(_LoopAware, _std.PollSelector):
    """``selectors.PollSelector`` over green ``poll``."""

    _selector_cls = staticmethod(_green_select.poll)


if hasattr(_green_select, "epoll"):

    class EpollSelector(_LoopAware, _std.EpollSelector):
        """``selectors.EpollSelector`` over green ``epoll``."""

        _selector_cls = _green_select.epoll

    DefaultSelector: type[_std.BaseSelector] = EpollSelector
else:
    DefaultSelector = PollSelector

__implements__ = ["SelectSelector", "PollSelector", "DefaultSelector"] + (
    ["EpollSelector"] if hasattr(_green_select, "epoll") else [])
