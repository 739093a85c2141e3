"""The hub: the greenlet that runs the Tornado/asyncio loop, and the waits on it.

Theory of operation
-------------------
A green blocking call (``sock.recv`` on an empty socket, ``sleep``, ``Event.wait``)
registers interest with the loop and then *switches to the greenlet that is
running the loop*. When the loop sees the event, the callback switches straight
back into the waiting greenlet, which retries its syscall. ::

    user greenlet: sock.recv(n) -> EAGAIN -> hub.wait_read(fd) -> runner.switch()
    loop callback (in the runner): fd readable -> waiter.switch() -> recv retried

Who runs the loop ("the runner") depends on how tgreen is used:

* **Adopted**: an IOLoop/asyncio loop is already running (a Tornado app,
  ``asyncio.run``, ``tgreen-serve``). The greenlet that started it, the thread's
  root greenlet, is the runner. Code running *in* the runner (an IOLoop
  callback, a coroutine) must never block: it gets ``BlockingFromHubError``.
* **Plain script**: no loop is running. The first greenlet that blocks (usually
  the main greenlet) becomes the runner for as long as it waits: it calls
  ``loop.run_forever()`` itself, and the callback that wakes it stops the loop.
  Between waits the loop is not running, so a script may still call
  ``IOLoop.current().start()`` or ``loop.run_until_complete`` later.

  The rejected simpler design was a dedicated hub greenlet parked inside
  ``run_forever`` forever (gevent's shape). With asyncio that leaves the loop
  "running" while the main greenlet executes ordinary code, so an unmodified
  Tornado script's ``IOLoop.current().start()`` fails with "This event loop is
  already running".

What asyncio sees: a greenlet is synchronous code. Only the runner (while it
runs the loop) sees the loop as running; in every other greenlet
``asyncio._get_running_loop()`` is None, as in a plain thread
(``_asyncio_state.py`` keeps one running-loop slot per greenlet). Hence:

* Adoption: a running loop is adopted as a hub only when the thread's root
  greenlet runs it. A loop that sync code runs *inside a greenlet*
  (``asyncio.run`` in a greenlet) is that greenlet's own; tgreen calls from
  its coroutines use the thread's hub, and block that greenlet only.
* Such a nested loop waits through the hub: its selector (``LoopSelector``,
  or any of ``tgreen.selectors``) waits on the hub for the selector's fd, so
  the other greenlets run meanwhile (``hub_to_wait_through``). When the hub's
  loop is not running, the nested loop's greenlet becomes the runner for that
  wait: ``_run_as_runner`` sets its running-loop slot aside meanwhile.

Rules of this file:

1. Every wake-up happens in a loop callback, i.e. in the runner. Greenlets
   never switch into each other directly; primitives schedule
   ``Waiter.switch`` with ``call_soon``. This keeps one place (``_resume``) that
   knows how to wake the runner itself (stop the loop) versus another greenlet
   (switch to it).
2. An fd's reader is registered with the loop on its first wait and kept while
   the fd lives; later waits only swap the waiting greenlet. The registration
   is dropped lazily when the fd fires with nobody waiting, or when the socket
   closes. Adding/removing the reader on every wait costs more than half the
   ping-pong throughput (measured in DESIGN.md).
3. Waits return sentinels (``_TIMEDOUT``, ``_CLOSED``) instead of having
   exceptions thrown into them, so the runner can be woken the same way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
import threading
import traceback
from typing import Any, Callable

from greenlet import getcurrent, greenlet

from . import _asyncio_state, _originals

__all__ = [
    "Hub",
    "get_hub",
    "BlockingFromHubError",
    "LoopExit",
    "ConcurrentWaitError",
    "Waiter",
    "use_uvloop",
]

_thread_get_ident = _originals.get("_thread", "get_ident")
_main_thread_ident = _thread_get_ident()


class BlockingFromHubError(RuntimeError):
    """A blocking call was made from the greenlet that runs the event loop.

    Blocking there would freeze every greenlet, coroutine and callback on the
    loop, so tgreen refuses instead of deadlocking.
    """


class LoopExit(RuntimeError):
    """The waiting greenlet can never be woken: nothing else can run.

    Raised in the main greenlet instead of hanging when it waits on something
    (an Event, a join, a queue) while no I/O, timer or thread job is pending.
    Locks, semaphores and events are thread-safe, so while another OS thread
    lives (one that could still release or set them) a wait on them is not
    "forever" and no LoopExit is raised.
    """


class ConcurrentWaitError(RuntimeError):
    """Two greenlets waited for the same event (read or write) on one fd."""


_TIMEDOUT = object()
_CLOSED = object()

_BLOCKING_HELP = (
    "tgreen: {what} would block the event loop: it was called from the greenlet "
    "that runs the loop (an IOLoop callback or a coroutine). Run blocking-style "
    "code in a greenlet instead: `await tgreen.run_green(fn, ...)`, "
    "`tgreen.spawn(fn)`, or await the asynchronous API directly."
)


class _Watch:
    """Who waits on one fd. One reader and one writer greenlet at most, plus
    any number of listeners (green select/poll), which never conflict."""

    __slots__ = ("fd", "reader", "writer", "rreg", "wreg", "listeners")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reader: greenlet | None = None
        self.writer: greenlet | None = None
        self.rreg = False
        self.wreg = False
        self.listeners: list | None = None


class Waiter:
    """A one-shot wake-up token for one blocked greenlet.

    ``get()`` blocks the calling greenlet; ``switch(value)`` (from a loop
    callback) wakes it. Once the greenlet has left ``get`` (woken, timed out
    or killed) the token is dead and a late ``switch`` is ignored: stale
    wake-ups can never resume a greenlet that now waits on something else.
    """

    __slots__ = ("hub", "greenlet")

    def __init__(self, hub: "Hub | None" = None) -> None:
        self.hub = hub or get_hub()
        self.greenlet: greenlet | None = None

    def get(self, timeout: float | None = None, what: str = "wait") -> Any:
        hub = self.hub
        self.greenlet = getcurrent()
        timer = None
        if timeout is not None:
            timer = hub.loop.call_later(max(timeout, 0.0), self.switch, _TIMEDOUT)
        try:
            return hub.switch(what)
        finally:
            self.greenlet = None
            if timer is not None:
                timer.cancel()

    def switch(self, value: Any = None) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            self.hub._resume(g, value)

    def throw(self, exc: BaseException) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            self.hub._throw(g, exc)

    def schedule(self, value: Any = None) -> None:
        """Wake the waiter from anywhere in this thread (deferred to the loop)."""
        self.hub.loop.call_soon(self.switch, value)


def _root_of(g: greenlet) -> greenlet:
    while g.parent is not None:
        g = g.parent
    return g


class Hub:
    """One per event loop (so one per thread in practice).

    ``loop`` is the asyncio loop; ``switch()`` blocks the current greenlet
    until a loop callback resumes it. See the module docstring for the
    runner protocol.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.root = _root_of(getcurrent())
        self.thread_ident = _thread_get_ident()
        self._watches: dict[int, _Watch] = {}
        # The greenlet running loop.run_forever() on our behalf (plain mode).
        self._runner: greenlet | None = None
        self._runner_wake: tuple | None = None
        self._loop_exit = False
        # Work that can wake a greenlet but that the loop cannot see: jobs in
        # OS threads, and bridged waits on futures resolved by other threads.
        self.pending_jobs = 0
        self._selector_guard = _install_selector_guard(self)
        _asyncio_state.install()
        self.handle_error = self._default_handle_error
        if os.environ.get("TGREEN_MONITOR_MS"):  # the blocking detector, tgreen.monitor
            from . import monitor
            monitor.maybe_start_from_env(self)

    # -- the switch protocol -------------------------------------------------

    def switch(self, what: str = "this call") -> Any:
        """Block the current greenlet until a loop callback resumes it.

        Returns the value the waker passed. Raises ``BlockingFromHubError``
        when called from the runner of an already-running loop.
        """
        cur = getcurrent()
        runner = self._runner
        if runner is None:
            if not self.loop.is_running():
                return self._run_as_runner(cur)
            runner = self.root
        if cur is runner:
            raise BlockingFromHubError(_BLOCKING_HELP.format(what=what))
        return runner.switch()

    def _run_as_runner(self, cur: greenlet) -> Any:
        if self.thread_ident != _thread_get_ident():
            raise RuntimeError("tgreen: a hub cannot be used from another thread")
        self._runner = cur
        self._runner_wake = None
        loop = self.loop
        # A greenlet running a loop of its own (asyncio.run in it) waits by
        # running ours: asyncio allows one running loop per slot.
        own_loop = _asyncio_state.swap_running_loop(None)
        try:
            while True:
                self._loop_exit = False
                loop.run_forever()
                wake = self._runner_wake
                if wake is not None:
                    break
                if self._loop_exit:
                    raise LoopExit(
                        "tgreen: this greenlet would block forever: it waits for "
                        "something that nothing running can ever wake (no other "
                        "greenlet can run, no fd, timer or thread job is pending)"
                    )
                # Stopped by someone else's loop.stop(): our wait is not over.
        finally:
            self._runner = None
            self._runner_wake = None
            if own_loop is not None:
                _asyncio_state.swap_running_loop(own_loop)
        kind, value = wake
        if kind:
            raise value
        return value

    def _resume(self, g: greenlet, value: Any = None) -> None:
        """Wake ``g`` from a loop callback, passing ``value`` to its switch()."""
        if g is self._runner:
            if self._runner_wake is None:
                self._runner_wake = (False, value)
                self.loop.stop()
        elif not g.dead:
            g.switch(value)

    def _throw(self, g: greenlet, exc: BaseException) -> None:
        """Raise ``exc`` in ``g`` from a loop callback."""
        if g is self._runner:
            # The runner resumes only when the loop turn ends, so a plain
            # wake-up may already be pending: the exception wins over it
            # (a spawned greenlet would have been interrupted at its next
            # wait just the same). Primitives re-check their state after
            # waking, so nothing granted to the waiter is lost.
            wake = self._runner_wake
            if wake is None or not wake[0]:
                self._runner_wake = (True, exc)
                self.loop.stop()
        elif g is getcurrent():
            # The runner of an adopted loop never waits, so there is nothing
            # to interrupt; raising here would only break an unrelated callback.
            return
        elif not g.dead:
            g.throw(exc)

    # -- fd waits ---------------------------------------------------------------

    def wait_read(self, fd: int, timeout: float | None = None) -> bool:
        """Block until ``fd`` is readable. False on timeout; OSError(EBADF) if
        the fd is closed through tgreen while waiting."""
        return self._wait(fd, timeout, True)

    def wait_write(self, fd: int, timeout: float | None = None) -> bool:
        """Block until ``fd`` is writable. See ``wait_read``."""
        return self._wait(fd, timeout, False)

    def _wait(self, fd: int, timeout: float | None, reading: bool) -> bool:
        w = self._watches.get(fd)
        if w is None:
            w = self._watches[fd] = _Watch(fd)
        cur = getcurrent()
        if reading:
            if w.reader is not None:
                raise ConcurrentWaitError(
                    f"tgreen: fd {fd} is already being read by {w.reader!r}; "
                    "two greenlets cannot wait to read one socket at once")
            if not w.rreg:
                self.loop.add_reader(fd, self._on_readable, w)
                w.rreg = True
            w.reader = cur
        else:
            if w.writer is not None:
                raise ConcurrentWaitError(
                    f"tgreen: fd {fd} is already being written by {w.writer!r}; "
                    "two greenlets cannot wait to write one socket at once")
            if not w.wreg:
                self.loop.add_writer(fd, self._on_writable, w)
                w.wreg = True
            w.writer = cur
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(max(timeout, 0.0), self._on_wait_timeout,
                                         w, cur, reading)
        try:
            result = self.switch("reading a socket" if reading else "writing a socket")
        finally:
            if reading:
                if w.reader is cur:
                    w.reader = None
            elif w.writer is cur:
                w.writer = None
            if timer is not None:
                timer.cancel()
        if result is None:
            return True
        if result is _TIMEDOUT:
            return False
        if result is _CLOSED:
            raise OSError(errno.EBADF, "File descriptor was closed in another greenlet")
        return True

    def _on_readable(self, w: _Watch) -> None:
        if not w.rreg:
            return  # a stale event for a registration dropped this turn
        if w.listeners:
            self._notify_listeners(w, 1)
            # A listener's greenlet ran and may have unregistered this watch
            # (and registered a new one for the same fd): leave it alone.
            if not w.rreg:
                return
        g = w.reader
        if g is not None:
            w.reader = None
            self._resume(g)
        elif not w.listeners:
            # Level-triggered: unregister now or the loop spins on this fd.
            self.loop.remove_reader(w.fd)
            w.rreg = False
            self._maybe_forget(w)

    def _on_writable(self, w: _Watch) -> None:
        if not w.wreg:
            return
        if w.listeners:
            self._notify_listeners(w, 2)
            if not w.wreg:
                return
        g = w.writer
        if g is not None:
            w.writer = None
            self._resume(g)
        elif not w.listeners:
            self.loop.remove_writer(w.fd)
            w.wreg = False
            self._maybe_forget(w)

    def _maybe_forget(self, w: _Watch) -> None:
        if not (w.rreg or w.wreg or w.reader or w.writer or w.listeners):
            if self._watches.get(w.fd) is w:
                del self._watches[w.fd]

    def _on_wait_timeout(self, w: _Watch, g: greenlet, reading: bool) -> None:
        if reading:
            if w.reader is not g:
                return
            w.reader = None
        else:
            if w.writer is not g:
                return
            w.writer = None
        self._resume(g, _TIMEDOUT)

    # -- listeners: many greenlets watching one fd (green select/poll) -----------

    def add_listener(self, fd: int, events: int, callback: Callable[[int, int], None]) -> Any:
        """Call ``callback(fd, event)`` (event 1=read, 2=write, 0=closed) from
        the loop while registered. Returns a token for ``remove_listener``."""
        w = self._watches.get(fd)
        if w is None:
            w = self._watches[fd] = _Watch(fd)
        if w.listeners is None:
            w.listeners = []
        token = (events, callback)
        w.listeners.append(token)
        if events & 1 and not w.rreg:
            self.loop.add_reader(fd, self._on_readable, w)
            w.rreg = True
        if events & 2 and not w.wreg:
            self.loop.add_writer(fd, self._on_writable, w)
            w.wreg = True
        return (w, token)

    def remove_listener(self, handle: Any) -> None:
        w, token = handle
        if w.listeners and token in w.listeners:
            w.listeners.remove(token)
        # Unlike a green socket, a select()ed fd may be closed behind our
        # back (os.close, C libraries); a registration kept for it would
        # silently blind the loop to the next fd with the same number.
        self._forget_if_idle(w)

    def forget(self, fd: int) -> None:
        """Drop ``fd``'s loop registration unless a greenlet waits on it.

        For fds tgreen does not close itself (``os.close``, C libraries such
        as libpq): call it before waiting on such an fd and after, so a
        registration kept for a closed fd cannot hide the next fd that gets
        the same number."""
        w = self._watches.get(fd)
        if w is not None:
            self._forget_if_idle(w)

    def _forget_if_idle(self, w: _Watch) -> None:
        if not w.listeners and w.reader is None and w.writer is None:
            self._unregister(w)

    def _unregister(self, w: _Watch) -> None:
        if w.rreg:
            w.rreg = False
            try:
                self.loop.remove_reader(w.fd)
            except (OSError, ValueError):
                pass
        if w.wreg:
            w.wreg = False
            try:
                self.loop.remove_writer(w.fd)
            except (OSError, ValueError):
                pass
        self._maybe_forget(w)

    def _notify_listeners(self, w: _Watch, event: int) -> None:
        for events, cb in list(w.listeners or ()):
            if events & event or event == 0:
                cb(w.fd, event)

    # -- closing ---------------------------------------------------------------

    def notify_close(self, fd: int) -> None:
        """``fd`` is about to be closed (or detached): drop it from the loop
        and wake whoever waits on it with an EBADF error."""
        w = self._watches.pop(fd, None)
        if w is None:
            return
        self._unregister(w)
        waiters = [g for g in (w.reader, w.writer) if g is not None]
        w.reader = w.writer = None
        for g in waiters:
            self.loop.call_soon(self._resume, g, _CLOSED)
        if w.listeners:
            listeners, w.listeners = w.listeners, None
            for _events, cb in listeners:
                self.loop.call_soon(cb, fd, 0)

    # -- the would-block-forever check ------------------------------------------

    def _is_idle_forever(self, selector: Any) -> bool:
        """Called by the selector guard when the loop is about to sleep with
        no timeout: can anything at all still happen?"""
        if self._runner is None or self.pending_jobs:
            return False
        ours = 0
        for w in self._watches.values():
            if w.reader is not None or w.writer is not None or w.listeners:
                return False
            if w.rreg or w.wreg:
                ours += 1
        # Every fd in the selector that is not ours or the loop's self-pipe
        # belongs to someone else (a Tornado server, an asyncio transport):
        # it may wake us.
        return len(selector.get_map()) - ours - 1 <= 0

    # -- errors ----------------------------------------------------------------

    def _default_handle_error(self, context: Any, exc: BaseException) -> None:
        """Report an exception that escaped a spawned greenlet, and carry on."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"{tb}{context!r} failed with {type(exc).__name__}\n\n")
        try:
            sys.stderr.flush()
        except Exception:
            pass

    def raise_in_main(self, exc: BaseException) -> None:
        """Deliver KeyboardInterrupt/SystemExit to whoever runs the loop: asyncio
        re-raises these two out of run_forever() into the runner."""

        def _raise() -> None:
            raise exc

        self.loop.call_soon(_raise)

    def __repr__(self) -> str:
        return f"<Hub loop={type(self.loop).__name__} thread={self.thread_ident}>"


class _SelectorGuard:
    """Wraps a selector loop's selector to notice "the loop would sleep
    forever while a greenlet waits", which becomes LoopExit in that greenlet."""

    def __init__(self, selector: Any, hub: Hub) -> None:
        self._sel = selector
        self._hub = hub

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            hub = self._hub
            if hub._runner is not None and hub._is_idle_forever(self._sel):
                hub._loop_exit = True
                hub.loop.stop()
                return []
        return self._sel.select(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sel, name)


def _install_selector_guard(hub: Hub) -> bool:
    # Only asyncio's selector loops expose their selector; on uvloop the
    # would-block-forever check is not available and such a wait just waits.
    sel = getattr(hub.loop, "_selector", None)
    if sel is None or isinstance(sel, _SelectorGuard) or not hasattr(sel, "get_map"):
        return False
    hub.loop._selector = _SelectorGuard(sel, hub)  # type: ignore[attr-defined]
    return True


# -- finding the hub -------------------------------------------------------------

_local = threading.local()
_hubs_by_loop: dict[int, Hub] = {}
_hubs_lock = _originals.get("_thread", "allocate_lock")()


def _new_loop() -> asyncio.AbstractEventLoop:
    from .loop import new_event_loop

    return new_event_loop()


def get_hub() -> Hub:
    """The hub for the running event loop, or this thread's default one.

    Inside a running loop (a Tornado app, ``asyncio.run``) the hub adopts that
    loop. Otherwise the thread gets a loop of its own (set as its current
    event loop so Tornado's ``IOLoop.current()`` finds it), created lazily.

    Only a loop run by the thread's root greenlet is adopted. A loop that
    synchronous code runs inside a greenlet (``asyncio.run`` in a greenlet)
    is that greenlet's private business, as it would be a thread's: tgreen
    calls made from its coroutines block the greenlet on the thread's hub.
    """
    loop = asyncio._get_running_loop()
    hub = getattr(_local, "hub", None)
    if loop is not None:
        if hub is not None and hub.loop is loop:
            return hub
        found = _known_hub(loop)
        if found is None and getcurrent().parent is None:
            found = _hub_for_loop(loop)
        if found is not None:
            _local.hub = found
            return found
    if hub is not None and not hub.loop.is_closed():
        return hub
    hub = _local.default = _default_hub()
    _local.hub = hub
    return hub


def _known_hub(loop: asyncio.AbstractEventLoop) -> Hub | None:
    h = _hubs_by_loop.get(id(loop))
    return h if h is not None and h.loop is loop else None


def hub_to_wait_through(loop: asyncio.AbstractEventLoop) -> Hub | None:
    """The hub that a selector serving ``loop`` (running in the current
    greenlet) waits through instead of blocking the thread, or None when
    nothing else can run and it should block for real.

    That is the hub the current greenlet belongs to, never ``loop``'s own:
    a loop's selector cannot wait on the loop it serves."""
    cur = getcurrent()
    for hub in (getattr(cur, "hub", None), getattr(_local, "hub", None),
                getattr(_local, "default", None)):
        if not isinstance(hub, Hub) or hub.loop is loop or hub.loop.is_closed():
            continue
        if hub._runner is cur or (hub._runner is None and cur is hub.root
                                  and hub.loop.is_running()):
            continue  # it runs below us in this very greenlet
        return hub
    return None


def _default_hub() -> Hub:
    hub = getattr(_local, "default", None)
    if hub is not None and not hub.loop.is_closed():
        return hub
    loop = None
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy = asyncio.get_event_loop_policy()
            loop = policy._local._loop  # type: ignore[attr-defined]
    except AttributeError:
        loop = None
    if loop is None or loop.is_closed():
        loop = _new_loop()
        _asyncio_state.set_thread_event_loop(loop)
    elif loop.is_running() and _known_hub(loop) is None:
        # The current loop of a greenlet's own asyncio.run(), not ours.
        loop = _new_loop()
    return _hub_for_loop(loop)


def _hub_for_loop(loop: asyncio.AbstractEventLoop) -> Hub:
    with _hubs_lock:
        hub = _hubs_by_loop.get(id(loop))
        if hub is None or hub.loop is not loop:
            hub = _hubs_by_loop[id(loop)] = Hub(loop)
            _forget_when_closed(loop)
    return hub


def _forget_when_closed(loop: asyncio.AbstractEventLoop) -> None:
    close = loop.close

    def _close() -> None:
        with _hubs_lock:
            if (h := _hubs_by_loop.get(id(loop))) is not None and h.loop is loop:
                del _hubs_by_loop[id(loop)]
        close()

    try:
        loop.close = _close  # type: ignore[method-assign]
    except (AttributeError, TypeError):
        pass  # uvloop loops are C objects without a __dict__


def current_hub_if_any() -> Hub | None:
    """The hub this thread would use, without creating one. The main thread
    always counts as green; other threads only once they use tgreen."""
    loop = asyncio._get_running_loop()
    hub = getattr(_local, "hub", None)
    if loop is not None and (hub is None or hub.loop is not loop):
        found = _known_hub(loop)
        if found is not None:
            return found
        if getcurrent().parent is None:
            # A loop the root greenlet runs: adopted on first use, in the main thread.
            return get_hub() if _thread_get_ident() == _main_thread_ident else None
        # A loop run inside a greenlet: that greenlet blocks on the thread's hub.
    if hub is not None:
        return hub
    if _thread_get_ident() == _main_thread_ident:
        return get_hub()
    return None


def use_uvloop() -> None:
    """Run hubs created from now on over uvloop (also: ``TGREEN_LOOP=uvloop``)."""
    from . import loop

    loop.set_loop_kind("uvloop")


def _reset_after_fork() -> None:
    """In a forked child the parent's loops are unusable; start fresh."""
    global _hubs_by_loop
    from ._fork import abandon_parent_loop

    abandon_parent_loop()
    _local.__dict__.clear()
    _hubs_by_loop = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def peek_hub() -> Hub | None:
    """This thread's hub if it already exists; never creates one."""
    hub = getattr(_local, "hub", None)
    if hub is not None:
        return hub
    loop = asyncio._get_running_loop()
    if loop is not None:
        return _known_hub(loop)
    return None
