"""Hooks that run in each ``tgreen-serve`` worker after fork, and the worker id.

A module served by ``tgreen-serve`` is imported in every worker process. A
function decorated with ``@tgreen.postfork`` runs there after the import,
before the worker's loop starts: the place to open connections, start
background greenlets, or make a Tornado app listen beside the WSGI app. ::

    import tgreen
    import tornado.web

    tornado_app = tornado.web.Application([...])

    @tgreen.postfork
    def listen():
        tornado_app.listen(8000 + tgreen.worker_id())

``worker_id()`` is 1..M in the M workers of ``tgreen-serve --workers M`` (a
respawned worker keeps the id of the one it replaces) and 0 outside them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["postfork", "worker_id", "run_postfork_hooks"]

F = TypeVar("F", bound=Callable[[], object])

_hooks: list[Callable[[], object]] = []
_worker_id = 0


def postfork(fn: F) -> F:
    """Register ``fn()`` to run in each worker after fork, before its loop
    starts. Returns ``fn`` unchanged, so it can be used as a decorator."""
    if not callable(fn):
        raise TypeError("tgreen.postfork needs a callable")
    _hooks.append(fn)
    return fn


def worker_id() -> int:
    """1..M inside the M workers of ``tgreen-serve``; 0 outside them."""
    return _worker_id


def run_postfork_hooks() -> None:
    """Run the registered hooks in order (the worker calls this). An
    exception propagates: a worker whose hook fails does not serve."""
    for fn in list(_hooks):
        fn()


def set_worker_id(n: int) -> None:
    global _worker_id
    _worker_id = n
