"""Re-binding stdlib functions to other globals.

tgreen's green modules reuse the stdlib's own Python functions (socket's
``create_connection``, ssl's ``create_default_context``, subprocess's
``Popen.__init__``...) so their argument checks and error handling stay
CPython's to the letter; only the names they look up at call time change.
"""

from __future__ import annotations

import types
from typing import Any


def rebind(func: Any, namespace: dict, module: str, qualname: str | None = None) -> Any:
    """``func`` (same code, defaults, closure) with its globals looked up in
    ``namespace``, reported as defined in ``module``."""
    new = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__doc__ = func.__doc__
    new.__qualname__ = qualname or func.__qualname__
    new.__module__ = module
    new.__dict__.update(getattr(func, "__dict__", {}))
    return new
