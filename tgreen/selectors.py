"""A green ``selectors`` module: the stdlib's selector classes over the green
``select`` primitives, so ``sel.select(timeout)`` blocks only the greenlet. ::

    from tgreen import selectors
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    events = sel.select(timeout=1.0)
"""

from __future__ import annotations

from . import _originals
from . import select as _green_select

_std = _originals.module("selectors")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value

__all__ = [n for n in dir(_std) if not n.startswith("_") and n[0].isupper()]


class SelectSelector(_std.SelectSelector):
    """``selectors.SelectSelector`` over green ``select``."""

    def _select(self, r, w, _, timeout=None):
        r, w, x = _green_select.select(r, w, w, timeout)
        return r, w + x, []


class PollSelector(_std.PollSelector):
    """``selectors.PollSelector`` over green ``poll``."""

    _selector_cls = staticmethod(_green_select.poll)


if hasattr(_green_select, "epoll"):

    class EpollSelector(_std.EpollSelector):
        """``selectors.EpollSelector`` over green ``epoll``."""

        _selector_cls = _green_select.epoll

    DefaultSelector = EpollSelector
else:
    DefaultSelector = PollSelector

__implements__ = ["SelectSelector", "PollSelector", "DefaultSelector"] + (
    ["EpollSelector"] if hasattr(_green_select, "epoll") else [])
