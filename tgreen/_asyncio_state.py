"""What asyncio sees in each greenlet: its running-loop slot.

A greenlet that is not the hub is synchronous code, like a plain thread:
there ``asyncio.get_running_loop()`` raises and ``asyncio._get_running_loop()``
is None, so libraries that ask "am I in async code?" (Django's
``async_unsafe``, asgiref, sniffio, ``asyncio.run`` itself) answer as they
would in a thread. Coroutines and callbacks on the hub's loop still see it,
and a greenlet that runs a loop of its own (``asyncio.run`` inside a
greenlet) sees that one.

asyncio keeps the running loop in one slot per OS thread
(``asyncio.events._set_running_loop``), and greenlet does not switch it. So
this module gives each greenlet its own slot: a greenlet switch tracer
(``greenlet.settrace``, per thread) saves the slot into the greenlet being
left and loads the one being entered. A greenlet never seen with a loop
gets None.

Rules of this file:

1. The tracer, not the hub's switch points, owns the slot. The hub's
   switches are few, but user code also switches greenlets directly (a
   greenlet started from a coroutine with ``greenlet.switch``) and a
   finished greenlet returns to its parent without going through the hub;
   the tracer sees every switch. Cost: one Python call per switch (measured
   in ``benchmarks/RESULTS.md``, "running-loop slot").
2. A saved slot is an attribute of the greenlet, so it dies with it: no
   table that could keep a dead greenlet or loop alive.
3. Async generator hooks (``sys.set_asyncgen_hooks``) are per thread too,
   and set by ``run_forever``. They are swapped only when a switch goes
   from one running loop to another (the hub and a loop run inside a
   greenlet), which never happens on the hub's hot path: otherwise an async
   generator started by a coroutine on the hub would be finalized by the
   greenlet's private loop.
4. A tracer installed before ours (a profiler) is chained, not replaced.

The thread's *current* loop (``asyncio.set_event_loop``, what
``get_event_loop()`` and Tornado's ``IOLoop.current()`` answer outside a
running loop) stays per thread, so greenlets keep finding the hub's loop:
``tgreen.wait(AsyncHTTPClient().fetch(url))`` in a greenlet relies on it.
But ``asyncio.run`` sets it to its own loop and then to None; run inside a
greenlet, that would leave the whole thread without a current loop. So the
policy's per-thread state is wrapped (``_PolicyState``): a greenlet other
than the thread's root greenlet that sets a current loop sets it for itself
only, until it sets None again; a tgreen greenlet in a thread with no current
loop gets the loop its hub runs on.
"""

from __future__ import annotations

import sys
from asyncio import events as _events
from typing import Any

import greenlet as _greenlet

from . import _originals

__all__ = ["forget_thread_event_loop", "install", "running_loop", "set_thread_event_loop",
           "swap_running_loop", "thread_event_loop"]

_get_running_loop = _events._get_running_loop
#: The loop running in this greenlet, or None: asyncio's C-level
#: ``_get_running_loop`` itself (asyncio exports it to loop implementers;
#: the hub calls it on every ``get_hub()``, so no wrapper around it).
running_loop = _get_running_loop
_set_running_loop = _events._set_running_loop
_set_hooks = sys.set_asyncgen_hooks

# The greenlet attribute holding a left greenlet's running loop.
_SLOT = "_tgreen_running_loop"

_installed = _originals.get("threading", "local")()


def _make_tracer(previous: Any) -> Any:
    get, set_ = _get_running_loop, _set_running_loop

    def tracer(event: str, args: tuple) -> None:
        origin, target = args
        try:
            loop = get()
            if loop is not None:
                origin.__dict__[_SLOT] = loop
            theirs = target.__dict__.pop(_SLOT, None)
            if theirs is not loop:
                set_(theirs)
                if theirs is not None and loop is not None:  # rule 3
                    _set_hooks(theirs._asyncgen_firstiter_hook,
                               theirs._asyncgen_finalizer_hook)
        except Exception:  # noqa: BLE001 - a tracer must never break a switch
            pass
        if previous is not None:
            previous(event, args)

    tracer._tgreen_slot_tracer = True  # type: ignore[attr-defined]
    return tracer


# The greenlet attribute holding a greenlet's own current loop.
_OWN_CURRENT = "_tgreen_current_loop"


class _PolicyState:
    """Stands in for the event loop policy's per-thread state (``policy._local``,
    a ``threading.local`` with ``_loop`` and ``_set_called``): in a greenlet
    that is not the thread's root, ``_loop`` set to a loop holds for that
    greenlet only, until it is set to None (see the module docstring)."""

    __slots__ = ("_tgreen_thread_state",)

    def __init__(self, thread_state: Any) -> None:
        object.__setattr__(self, "_tgreen_thread_state", thread_state)

    def __getattr__(self, name: str) -> Any:
        if name != "_loop":
            return getattr(self._tgreen_thread_state, name)
        g = _greenlet.getcurrent()
        own = g.__dict__.get(_OWN_CURRENT)
        if own is not None:
            return own
        loop = self._tgreen_thread_state._loop
        if loop is None and g.parent is not None:
            # A greenlet of a loop nobody set as current (loop.run_until_complete
            # on a fresh loop): its current loop is the one it runs on, so that
            # Tornado's IOLoop.current() in it finds that loop as before.
            hub_loop = getattr(getattr(g, "hub", None), "loop", None)
            if hub_loop is not None and not hub_loop.is_closed():
                return hub_loop
        return loop

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_loop" and not getattr(_installed, "thread_wide", False):
            g = _greenlet.getcurrent()
            if g.parent is not None:
                if value is None:
                    g.__dict__.pop(_OWN_CURRENT, None)
                else:
                    g.__dict__[_OWN_CURRENT] = value
                return
        setattr(self._tgreen_thread_state, name, value)


def _wrap_policy_state() -> None:
    import asyncio

    policy = asyncio.get_event_loop_policy()
    state = getattr(policy, "_local", None)
    if state is None or isinstance(state, _PolicyState) or not hasattr(state, "_loop"):
        return
    try:
        policy._local = _PolicyState(state)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass  # a policy without a settable _local: left as it is


def set_thread_event_loop(loop: Any) -> None:
    """``asyncio.set_event_loop(loop)`` for the whole thread, from any greenlet."""
    import asyncio

    _installed.thread_wide = True
    try:
        asyncio.set_event_loop(loop)
    finally:
        _installed.thread_wide = False


def _policy_thread_state() -> Any:
    # asyncio has no public way to read the thread's current loop without
    # side effects: get_event_loop() creates one (3.10/3.11, main thread) or
    # warns and raises (3.12+) when there is none. The default policy keeps
    # it in ``_local._loop``; a policy without that state has no answer.
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14: policies
        policy = asyncio.get_event_loop_policy()
    return getattr(policy, "_local", None)


def thread_event_loop() -> Any:
    """The current event loop ``asyncio.set_event_loop`` left for this
    greenlet's thread (see the module docstring), or None; never creates
    one and never warns."""
    return getattr(_policy_thread_state(), "_loop", None)


def forget_thread_event_loop() -> None:
    """Leave this thread without a current event loop, without touching the
    old one (a forked child abandoning its parent's loop)."""
    state = _policy_thread_state()
    if state is not None:
        try:
            state._loop = None
        except AttributeError:
            pass


def install() -> None:
    """Give every greenlet of this thread its own running-loop slot, and the
    event loop policy its greenlet-aware state (idempotent)."""
    _wrap_policy_state()
    if getattr(_installed, "done", False):
        return
    previous = _greenlet.gettrace()
    if getattr(previous, "_tgreen_slot_tracer", False):
        _installed.done = True
        return
    _greenlet.settrace(_make_tracer(previous))
    _installed.done = True


def swap_running_loop(loop: Any) -> Any:
    """Set this greenlet's running loop to ``loop``; return the previous one.

    For the hub's runner: a greenlet that runs a loop of its own (an
    ``asyncio.run`` in it) and blocks runs the hub's loop inside its wait,
    and asyncio refuses to start a loop while another is running."""
    previous = _get_running_loop()
    if previous is not loop:
        _set_running_loop(loop)
    return previous

