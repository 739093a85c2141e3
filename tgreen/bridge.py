"""Bridges between greenlets and Tornado/asyncio coroutines.

From a greenlet, block on a coroutine or future as plain code::

    from tornado.httpclient import AsyncHTTPClient
    response = tgreen.wait(AsyncHTTPClient().fetch(url))

From a coroutine, run blocking-style code without blocking the loop::

    body = await tgreen.run_green(requests.get, url)

    @tgreen.green
    def fetch(url):
        return urllib.request.urlopen(url).read()

    body = await fetch(url)

Results and exceptions cross both ways. Cancellation too: killing (or timing
out) a greenlet blocked in ``wait`` cancels the task ``wait`` created for a
coroutine; cancelling the future returned by ``run_green`` kills the greenlet
with ``GreenletExit``. The coroutine side keeps its own task, so
``asyncio.current_task()`` inside it is unaffected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from typing import Any, Awaitable, Callable, TypeVar

from .greenlet import Greenlet
from .hub import Waiter, TIMEDOUT, get_hub

__all__ = ["wait", "run_green", "green"]

T = TypeVar("T")


def wait(awaitable: Any, timeout: float | None = None) -> Any:
    """Block the current greenlet until ``awaitable`` (a coroutine, an
    asyncio/Tornado future, a ``concurrent.futures.Future`` or any awaitable)
    completes; return its result or raise its exception.

    On ``timeout`` raises ``TimeoutError`` and cancels the work if ``wait``
    itself created the task for it. Called from a coroutine or IOLoop
    callback, raises ``BlockingFromHubError``: use ``await`` there.
    """
    hub = get_hub()
    loop = hub.loop
    owned = False
    if isinstance(awaitable, concurrent.futures.Future):
        fut = asyncio.wrap_future(awaitable, loop=loop)
        hub.pending_jobs += 1  # resolved by another thread: invisible to the loop
        counted = True
    else:
        counted = False
        if asyncio.isfuture(awaitable):
            fut = awaitable
        elif inspect.isawaitable(awaitable):
            fut = asyncio.ensure_future(awaitable, loop=loop)
            owned = True
        else:
            raise TypeError(f"tgreen.wait() needs an awaitable or a future, not {type(awaitable).__name__}")
    try:
        if not fut.done():
            waiter = Waiter(hub)
            done_cb = lambda f: waiter.switch(None)  # noqa: E731
            fut.add_done_callback(done_cb)
            try:
                result = waiter.get(timeout, "tgreen.wait()")
            except BaseException:
                if owned:
                    fut.cancel()
                raise
            finally:
                fut.remove_done_callback(done_cb)
            if result is TIMEDOUT:
                if owned:
                    fut.cancel()
                raise TimeoutError(f"tgreen.wait() timed out after {timeout} s")
    finally:
        if counted:
            hub.pending_jobs -= 1
    return fut.result()


def run_green(fn: Callable[..., T], *args: Any, **kwargs: Any) -> "asyncio.Future[T]":
    """Run ``fn(*args, **kwargs)`` in a new greenlet; return a future for its
    result, to be awaited from a coroutine. The greenlet runs in a copy of the
    caller's contextvars context."""
    hub = get_hub()
    fut: asyncio.Future[Any] = hub.loop.create_future()
    g = Greenlet(fn, *args, **kwargs)

    def on_done(g: Greenlet) -> None:
        if fut.done():
            return
        if g.exception is not None:
            fut.set_exception(g.exception)
        else:
            fut.set_result(g.value)

    def on_cancel(f: asyncio.Future[Any]) -> None:
        if f.cancelled() and not g.dead:
            g.kill(block=False)

    g.link(on_done)
    fut.add_done_callback(on_cancel)
    # An exception is delivered to the awaiting coroutine; don't also print it.
    g.report_errors = False
    g.start()
    return fut


def green(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Decorator: calling the blocking-style ``fn`` returns an awaitable that
    runs it in a greenlet (see ``run_green``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Awaitable[T]:
        return run_green(fn, *args, **kwargs)

    return wrapper
