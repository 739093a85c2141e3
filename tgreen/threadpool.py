"""Run a function in a real OS thread and wait for it without blocking the loop.

For calls that block in C and cannot be made green (DNS lookups through the
system resolver, file-system calls, C extensions). The worker threads are
started with the *original* ``_thread`` module, so they stay real OS threads
even after ``patch_all(thread=True)``. ::

    import tgreen.threadpool
    digest = tgreen.threadpool.run(hashlib.sha256(big).hexdigest)
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

from . import _originals
from .hub import Waiter, current_hub_if_any

__all__ = ["ThreadPool", "run", "get_default_pool"]

T = TypeVar("T")
_start_new_thread = _originals.get("_thread", "start_new_thread")
_allocate_lock = _originals.get("_thread", "allocate_lock")
_SimpleQueue = _originals.get("queue", "SimpleQueue")

#: Worker threads alive in every pool: tgreen's own machinery, which
#: ``threading``'s thread counts (green ``_thread._count``) leave out.
live_workers = 0


class ThreadPool:
    """A pool of at most ``maxsize`` real threads, started on demand."""

    def __init__(self, maxsize: int = 10) -> None:
        if maxsize < 1:
            raise ValueError("tgreen: ThreadPool maxsize must be >= 1")
        self.maxsize = maxsize
        self._queue = _SimpleQueue()
        self._lock = _allocate_lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
               done: Callable[[bool, Any], None], loop: Any) -> None:
        """Run ``fn`` in a thread; then ``done(ok, result_or_exc)`` runs on ``loop``."""
        with self._lock:
            if self._idle == 0 and self._threads < self.maxsize:
                global live_workers
                self._threads += 1
                live_workers += 1
                _start_new_thread(self._worker, ())
            else:
                self._idle -= 1 if self._idle else 0
        self._queue.put((fn, args, kwargs, done, loop))

    def _worker(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is None:
                global live_workers
                with self._lock:
                    self._threads -= 1
                    live_workers -= 1
                return
            fn, args, kwargs, done, loop = item
            try:
                res, ok = fn(*args, **kwargs), True
            except BaseException as e:  # noqa: BLE001 - delivered to the caller
                res, ok = e, False
            item = None
            try:
                loop.call_soon_threadsafe(done, ok, res)
            except RuntimeError:
                pass  # the loop was closed while we worked: nobody waits
            res = None
            with self._lock:
                self._idle += 1

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in a thread, block the current greenlet until it returns."""
        hub = current_hub_if_any()
        if hub is None:  # a plain OS thread: blocking it is fine
            return fn(*args, **kwargs)
        waiter = Waiter(hub)
        hub.pending_jobs += 1
        try:
            self.submit(fn, args, kwargs, lambda ok, res: waiter.switch((ok, res)), hub.loop)
            ok, res = waiter.get(None, "a thread-pool call")
        finally:
            hub.pending_jobs -= 1
        if ok:
            return res
        try:
            raise res
        finally:
            res = None

    def close(self) -> None:
        for _ in range(self._threads):
            self._queue.put(None)


_default: ThreadPool | None = None


def get_default_pool() -> ThreadPool:
    """The process-wide pool (size from ``TGREEN_THREADPOOL_SIZE``, default 10)."""
    global _default
    if _default is None:
        _default = ThreadPool(int(os.environ.get("TGREEN_THREADPOOL_SIZE", "10")))
    return _default


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in the default pool's real thread; return its result."""
    return get_default_pool().run(fn, *args, **kwargs)


def _after_fork() -> None:
    global _default, live_workers
    _default = None
    live_workers = 0  # the parent's threads do not exist in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
