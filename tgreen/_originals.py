"""Frozen copies of the standard library modules tgreen patches.

Rules of this file:

1. It is imported before anything in tgreen touches ``socket``, ``select``,
   ``selectors`` or ``time``, so the snapshots hold the real, blocking objects
   even when ``monkey.patch_all()`` runs later.
2. The hub, the DNS thread pool and the event loop itself use only these
   snapshots. A green ``selectors.DefaultSelector`` inside asyncio's own loop
   would make the loop wait on itself: other green libraries on asyncio broke
   exactly there.

``module(name)`` returns a module object whose attributes are the originals;
``monkey`` rebinds asyncio's and Tornado's references to these copies.
"""

from __future__ import annotations

import importlib
import types

_frozen: dict[str, types.ModuleType] = {}


def _freeze(name: str) -> types.ModuleType:
    mod = importlib.import_module(name)
    copy = types.ModuleType(name, mod.__doc__)
    copy.__dict__.update(mod.__dict__)
    copy.__dict__["__tgreen_original__"] = True
    return copy


def module(name: str) -> types.ModuleType:
    """The unpatched snapshot of stdlib module ``name``."""
    try:
        return _frozen[name]
    except KeyError:
        pass
    _frozen[name] = copy = _freeze(name)
    return copy


def get(modname: str, attr: str):
    """One original attribute of a stdlib module."""
    return getattr(module(modname), attr)


for _n in ("socket", "select", "selectors", "time", "threading", "_thread", "queue"):
    module(_n)
