"""Which asyncio event loop the hub runs on.

The default is asyncio's own selector loop, built on the *original* selectors
module so that patching never reaches the loop itself. uvloop is an opt-in:
``tgreen.use_uvloop()`` before the first hub is created, or ``TGREEN_LOOP=uvloop``
in the environment. ::

    import tgreen
    tgreen.use_uvloop()
    tgreen.sleep(0)          # this thread's hub now runs on uvloop
"""

from __future__ import annotations

import asyncio
import os

from . import _originals

__all__ = ["new_event_loop", "set_loop_kind", "loop_kind"]

_KINDS = ("asyncio", "uvloop")
_kind = os.environ.get("TGREEN_LOOP", "asyncio") or "asyncio"


def set_loop_kind(kind: str) -> None:
    """Select the loop for hubs created from now on: "asyncio" or "uvloop"."""
    global _kind
    if kind not in _KINDS:
        raise ValueError(f"tgreen: unknown loop {kind!r}; choose one of {', '.join(_KINDS)}")
    if kind == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as e:
            raise ImportError("tgreen: uvloop is not installed: pip install 'tgreen[uvloop]'") from e
    _kind = kind


def loop_kind() -> str:
    """The loop kind new hubs will use."""
    return _kind


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the selected kind."""
    if _kind not in _KINDS:
        raise ValueError(f"tgreen: TGREEN_LOOP={_kind!r} is not one of {', '.join(_KINDS)}")
    if _kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    selector = _originals.get("selectors", "DefaultSelector")()
    return asyncio.SelectorEventLoop(selector)
