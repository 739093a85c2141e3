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
``_asyncio_state.running_loop()`` is None, as in a plain thread
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
   ``Waiter.switch`` with ``call_soon``. This keeps one place (``resume``) that
   knows how to wake the runner itself (stop the loop) versus another greenlet
   (switch to it).
2. An fd's reader is registered with the loop on its first wait and kept while
   the fd lives; later waits only swap the waiting greenlet. Adding/removing the
   reader on every wait costs more than half the ping-pong throughput
   (measured: docs/design.md, section 8). Because registrations outlive waits, their
   lifetime has rules of its own, below ("Registrations").
3. Waits return sentinels (``TIMEDOUT``, ``CLOSED``) instead of having
   exceptions thrown into them, so the runner can be woken the same way.

Registrations
-------------
A *registration* is the hub's ``_Watch`` for one fd number plus the loop's
reader/writer callbacks for it. The kernel forgets an epoll entry when the
file is closed; the loop (asyncio's selector map, libuv's watcher table) does
not. A registration the hub keeps for a closed fd therefore blinds the next fd
that gets the same number (its wait never fires), breaks it (asyncio's
``epoll.modify`` raises FileNotFoundError; libuv aborts the process), or
steals it from Tornado. So:

* **Who owns it.** The object that waits: green sockets and ``GreenFileIO``
  pass themselves as ``owner`` to ``wait_read``/``wait_write``, and the watch
  keeps a weak reference to it. Waits without an owner (raw fds: pidfds,
  signalfds, psycopg's libpq socket, ``tgreen.os.wait_fd``) are anonymous;
  their callers drop the registration right after the wait (``forget``),
  because nobody tells the hub when such an fd closes.
* **When it ends.** When its owner closes, detaches or is garbage-collected
  (the green socket's ``__del__`` runs before CPython's finalizer closes the
  fd; ``GreenFileIO`` closes on collection), through ``notify_close(fd,
  owner)``, which only ever drops a registration of *that* owner: a stale
  owner closing late cannot take the number's new owner's registration.
  Also when it fires with nobody waiting or listening (level-triggered
  loops would spin on it), and when it is found stale (next point).
* **How a reused fd number is recognised.** A wait from an owner other than
  the recorded one (or an owned wait on an anonymous registration) checks
  the registration: if its owner is dead it is stale; otherwise the file's
  identity (``fstat``'s device and inode, recorded when the registration
  was made) decides. The same file under a second owner (``socket(fileno=
  s.fileno())``) keeps the registration; another file (the old one was
  closed behind tgreen's back with ``os.close`` or by a C library), or an
  identity fstat cannot give (eventfd/signalfd/timerfd share one anonymous
  inode), drops it: the loop callbacks are removed, greenlets still waiting
  on the old file get EBADF, and the new owner registers afresh. When the
  number's next user is not tgreen (Tornado's ``add_handler``, an asyncio
  transport), the selector guard (asyncio's selector loops) sees a foreign
  callback join a key that holds ours for another file: ours is dropped and
  the fd re-registered with the kernel (asyncio would otherwise
  ``epoll.modify`` an entry the kernel dropped, or with unchanged events never
  add the new file). uvloop needs no guard: libuv re-adds an fd to epoll
  whenever a poll handle is started.
* **Selector errors.** Every add/remove goes through ``_add``/``_remove``.
  Removal ignores errors for fds that are already gone (OSError, ValueError,
  KeyError, and RuntimeError for a number an asyncio transport now uses).
  If an add fails, the hub resynchronises: it removes whatever the loop holds
  for that number and adds its callbacks again; if that fails too the fd is
  closed, and the waiter gets ``OSError(EBADF)`` as any call on a closed fd
  would (epoll's EPERM for regular files still passes through: callers
  treat those as always ready). No selector error reaches the loop.
* **fork.** A child's hub starts empty; hubs from before the fork belong to
  the parent's loop and are never touched from the child (their epoll is
  shared with the parent), so a socket inherited by the child and closed
  there unregisters nothing.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys
import threading
import traceback
import weakref
from typing import TYPE_CHECKING, Any, Callable

from greenlet import getcurrent, greenlet

from . import _asyncio_state, _originals

if TYPE_CHECKING:
    import selectors

__all__ = [
    "Hub",
    "get_hub",
    "BlockingFromHubError",
    "LoopExit",
    "ConcurrentWaitError",
    "Waiter",
    "use_uvloop",
    "TIMEDOUT",
    "CLOSED",
    "SelectorWrapper",
    "base_selector",
    "wrap_selector",
    "unwrap_selector",
    "serves",
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


#: What a wait returns when its timeout passed (``Waiter.get``, the value a
#: timer passes to ``Hub.resume``): waits return sentinels instead of having
#: exceptions thrown into them (rule 3).
TIMEDOUT = object()
#: What a wait on an fd returns when the fd was closed through tgreen meanwhile.
CLOSED = object()

_BLOCKING_HELP = (
    "tgreen: {what} would block the event loop: it was called from the greenlet "
    "that runs the loop (an IOLoop callback or a coroutine). Run blocking-style "
    "code in a greenlet instead: `await tgreen.run_green(fn, ...)`, "
    "`tgreen.spawn(fn)`, or await the asynchronous API directly."
)


class _Watch:
    """Who waits on one fd. One reader and one writer greenlet at most, plus
    any number of listeners (green select/poll), which never conflict.
    ``owner`` (a weak reference, or None for anonymous waits) and ``ident``
    (the file's identity) say whose registration this is ("Registrations")."""

    __slots__ = ("fd", "ident", "listeners", "owner", "reader", "rreg", "wreg", "writer")

    def __init__(self, fd: int, owner: Any = None) -> None:
        self.fd = fd
        self.reader: greenlet | None = None
        self.writer: greenlet | None = None
        self.rreg = False
        self.wreg = False
        self.listeners: list[Any] | None = None
        self.owner: weakref.ref[Any] | None = None if owner is None else weakref.ref(owner)
        self.ident = _file_identity(fd)


_fstat = os.fstat


def _file_identity(fd: int) -> tuple[int, int] | None:
    """(device, inode) of the file behind ``fd``; None when that does not
    identify it (anonymous inodes: eventfd, signalfd, timerfd, epoll, older
    pidfds all share one) or the fd is not open."""
    try:
        st = _fstat(fd)
    except (OSError, ValueError, OverflowError):
        return None
    if stat.S_IFMT(st.st_mode) == 0:
        return None
    return (st.st_dev, st.st_ino)


# What removing a loop callback can raise for a number that is already closed
# or that an asyncio transport now owns: none of it matters once we let go.
_REMOVE_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


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
            timer = hub.loop.call_later(max(timeout, 0.0), self.switch, TIMEDOUT)
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
            self.hub.resume(g, value)

    def throw(self, exc: BaseException) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            self.hub.throw(g, exc)

    def schedule(self, value: Any = None) -> None:
        """Wake the waiter from anywhere in this thread, deferred to the loop
        (rule 1): for code that is not a loop callback itself (tgreen.celery
        hands a job to an idle worker this way)."""
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
        self._runner_wake: tuple[Any, ...] | None = None
        self._loop_exit = False
        # Work that can wake a greenlet but that the loop cannot see: jobs in
        # OS threads, and bridged waits on futures resolved by other threads.
        self.pending_jobs = 0
        self._fork_generation = _fork_generation
        _install_selector_guard(self)
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

    def resume(self, g: greenlet, value: Any = None) -> None:
        """Wake ``g``, blocked in ``switch()``, from a loop callback: its
        ``switch()`` returns ``value``. If ``g`` is the runner (plain mode)
        the loop is stopped and the runner returns once the turn ends; any
        other greenlet is switched to at once. A dead ``g`` is ignored."""
        if g is self._runner:
            if self._runner_wake is None:
                self._runner_wake = (False, value)
                self.loop.stop()
        elif not g.dead:
            g.switch(value)

    def throw(self, g: greenlet, exc: BaseException) -> None:
        """Raise ``exc`` in ``g``, blocked in ``switch()``, from a loop
        callback (timeouts, kills, signal handlers' errors). A dead ``g``, or
        the runner of an adopted loop (which never waits), is left alone."""
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

    # -- who runs the loop -------------------------------------------------------

    @property
    def runner(self) -> greenlet | None:
        """The greenlet running the loop for the length of its own wait
        (plain mode), or None: between waits, and whenever the loop is
        adopted (its runner is the thread's root greenlet, ``root``)."""
        return self._runner

    def runs_adopted_loop(self, g: greenlet | None = None) -> bool:
        """Is ``g`` (default: the current greenlet) the runner of an adopted
        loop, i.e. the root greenlet running the loop itself (a coroutine, an
        IOLoop callback)? Such a greenlet may never wait: ``switch()`` raises
        ``BlockingFromHubError`` there."""
        if g is None:
            g = getcurrent()
        return g is self.root and self._runner is None and self.loop.is_running()

    def runs_loop(self, g: greenlet) -> bool:
        """Is ``g`` running this hub's loop right now (as the plain-mode
        runner or as the runner of an adopted loop)?"""
        return g is self._runner or self.runs_adopted_loop(g)

    def has_runner(self) -> bool:
        """Is the loop being run (or between two turns of one wait's run)?
        When not, nothing will run a callback until some greenlet waits."""
        return self._runner is not None or self.loop.is_running()

    # -- fd waits ---------------------------------------------------------------

    def wait_read(self, fd: int, timeout: float | None = None, owner: Any = None) -> bool:
        """Block until ``fd`` is readable. False on timeout; OSError(EBADF) if
        the fd is closed through tgreen while waiting.

        ``owner`` is the object that owns the fd (a socket, a file object):
        the registration is kept for it after the wait and ends when it
        closes (``notify_close(fd, owner)``) or is collected. Without an
        owner the caller must ``forget(fd)`` after the wait unless it tells
        the hub when the fd closes (see "Registrations")."""
        return self._wait(fd, timeout, True, owner)

    def wait_write(self, fd: int, timeout: float | None = None, owner: Any = None) -> bool:
        """Block until ``fd`` is writable. See ``wait_read``."""
        return self._wait(fd, timeout, False, owner)

    def _wait(self, fd: int, timeout: float | None, reading: bool, owner: Any = None) -> bool:
        w = self._watches.get(fd)
        if w is None:
            w = self._watches[fd] = _Watch(fd, owner)
        elif owner is not None:
            ref = w.owner
            if ref is None or ref() is not owner:
                w = self._claim(w, owner)
        cur = getcurrent()
        if reading:
            if w.reader is not None:
                raise ConcurrentWaitError(
                    f"tgreen: fd {fd} is already being read by {w.reader!r}; "
                    "two greenlets cannot wait to read one socket at once")
            if not w.rreg:
                self._add(w, True)
            w.reader = cur
        else:
            if w.writer is not None:
                raise ConcurrentWaitError(
                    f"tgreen: fd {fd} is already being written by {w.writer!r}; "
                    "two greenlets cannot wait to write one socket at once")
            if not w.wreg:
                self._add(w, False)
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
        if result is TIMEDOUT:
            return False
        if result is CLOSED:
            raise OSError(errno.EBADF, "File descriptor was closed in another greenlet")
        return True

    def _claim(self, w: _Watch, owner: Any) -> _Watch:
        """``owner`` waits on ``w.fd`` but ``w`` was made for someone else (or
        for an anonymous wait): keep it if it is the same file, else drop it
        as stale and start a fresh registration ("Registrations")."""
        old = w.owner() if w.owner is not None else None
        if w.owner is None or old is not None:
            ident = _file_identity(w.fd)
            if ident is not None and ident == w.ident:
                w.owner = weakref.ref(owner)
                return w
        self._drop(w, CLOSED)
        nw = self._watches[w.fd] = _Watch(w.fd, owner)
        return nw

    def _drop(self, w: _Watch, wake: Any) -> None:
        """End registration ``w``: remove its loop callbacks and wake whoever
        waits on it (with ``wake``) or listens (with event 0)."""
        if self._watches.get(w.fd) is w:
            del self._watches[w.fd]
        self._unregister(w)
        waiters = [g for g in (w.reader, w.writer) if g is not None]
        w.reader = w.writer = None
        for g in waiters:
            self.loop.call_soon(self.resume, g, wake)
        if w.listeners:
            listeners, w.listeners = w.listeners, None
            for _events, cb in listeners:
                self.loop.call_soon(cb, w.fd, 0)

    def _add(self, w: _Watch, reading: bool) -> None:
        """Register ``w``'s reader (or writer) with the loop. If the loop
        refuses (it still holds a number whose file was closed and replaced),
        resynchronise: remove what it holds for the number, add ours again."""
        fd = w.fd
        loop = self.loop
        try:
            if reading:
                loop.add_reader(fd, self._on_readable, w)
            else:
                loop.add_writer(fd, self._on_writable, w)
        except PermissionError:
            raise  # epoll refuses regular files: tgreen.os treats them as ready
        except _REMOVE_ERRORS:
            self._resync(w, reading)
        if reading:
            w.rreg = True
        else:
            w.wreg = True

    def _resync(self, w: _Watch, reading: bool) -> None:
        fd = w.fd
        loop = self.loop
        for remove in (loop.remove_reader, loop.remove_writer):
            try:
                remove(fd)
            except _REMOVE_ERRORS:
                pass
        try:
            if reading or w.rreg:
                loop.add_reader(fd, self._on_readable, w)
            if not reading or w.wreg:
                loop.add_writer(fd, self._on_writable, w)
        except PermissionError:
            raise
        except _REMOVE_ERRORS:
            # The fd is closed (or not ours to watch any more): nothing is
            # registered under its number now; say so as a closed fd would.
            for remove in (loop.remove_reader, loop.remove_writer):
                try:
                    remove(fd)
                except _REMOVE_ERRORS:
                    pass
            w.rreg = w.wreg = False
            if self._watches.get(fd) is w and not (w.reader or w.writer or w.listeners):
                del self._watches[fd]
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None

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
            self.resume(g)
        elif not w.listeners:
            # Level-triggered: unregister now or the loop spins on this fd.
            w.rreg = False
            self._remove(w.fd, True)
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
            self.resume(g)
        elif not w.listeners:
            w.wreg = False
            self._remove(w.fd, False)
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
        self.resume(g, TIMEDOUT)

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
        try:
            if events & 1 and not w.rreg:
                self._add(w, True)
            if events & 2 and not w.wreg:
                self._add(w, False)
        except BaseException:
            w.listeners.remove(token)
            self._forget_if_idle(w)
            raise
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
            self._remove(w.fd, True)
        if w.wreg:
            w.wreg = False
            self._remove(w.fd, False)
        self._maybe_forget(w)

    def _remove(self, fd: int, reading: bool) -> None:
        if self.loop.is_closed():
            return
        try:
            if reading:
                self.loop.remove_reader(fd)
            else:
                self.loop.remove_writer(fd)
        except _REMOVE_ERRORS:
            pass  # closed already, or the number is someone else's now

    def _notify_listeners(self, w: _Watch, event: int) -> None:
        for events, cb in list(w.listeners or ()):
            if events & event or event == 0:
                cb(w.fd, event)

    # -- closing ---------------------------------------------------------------

    def notify_close(self, fd: int, owner: Any = None) -> None:
        """``fd`` is about to be closed (or detached): drop it from the loop
        and wake whoever waits on it with an EBADF error.

        With ``owner``, only a registration that ``owner`` made (or an
        anonymous one) is dropped: an object that closes a number which was
        closed behind its back and reused leaves the new owner alone."""
        w = self._watches.get(fd)
        if w is None:
            return
        if owner is not None and w.owner is not None and w.owner() is not owner:
            return
        self._drop(w, CLOSED)

    def release(self, fd: int, owner: Any) -> None:
        """``notify_close`` callable from any thread (a socket collected or
        closed in a thread other than its hub's), and a no-op in a forked
        child for a hub of the parent's."""
        if self._fork_generation != _fork_generation:
            return
        if self.thread_ident == _thread_get_ident():
            if not self.loop.is_closed():
                self.notify_close(fd, owner)
            else:
                self._watches.pop(fd, None)
            return
        w = self._watches.get(fd)
        if w is None or (w.owner is not None and w.owner() is not owner):
            return
        try:
            self.loop.call_soon_threadsafe(self._drop_if_current, w)
        except RuntimeError:
            pass  # the loop is closed: nothing left to unregister from

    def _disown(self, w: _Watch) -> None:
        """The loop's entry for ``w.fd`` went to someone else (the selector
        guard saw a stale registration): forget ``w`` without touching it."""
        w.rreg = w.wreg = False
        self._drop(w, CLOSED)

    def _drop_if_current(self, w: _Watch) -> None:
        if self._watches.get(w.fd) is w:
            self._drop(w, CLOSED)

    # -- the would-block-forever check ------------------------------------------

    def stop_if_idle_forever(self, selector: Any) -> bool:
        """Called by the selector guard when the loop is about to sleep with
        no timeout: if nothing at all can still happen while a greenlet waits
        (the plain-mode runner), stop the loop so that the wait raises
        ``LoopExit`` instead of hanging. True if it stopped the loop."""
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
        if len(selector.get_map()) - ours - 1 > 0:
            return False
        self._loop_exit = True
        self.loop.stop()
        return True

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


class SelectorWrapper:
    """A wrapper tgreen puts around an asyncio selector loop's selector.

    The loop calls its selector's ``select``/``register``/``modify``...; a
    wrapper overrides what it needs and passes everything else through to
    ``inner``, the selector (or wrapper) it wraps. Wrappers stack: the hub's
    guard (``_SelectorGuard``) and the blocking monitor's turn counter
    (``tgreen.monitor``) may both be in place. Install and remove them with
    ``wrap_selector``/``unwrap_selector``; ``base_selector`` finds the real
    selector beneath them (a forked child closes its epoll).
    """

    def __init__(self, inner: Any) -> None:
        self.inner: selectors.BaseSelector = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# asyncio keeps a selector loop's selector in the private attribute
# ``_selector`` (uvloop has none); the four functions below are the only
# code that touches it, through getattr/setattr with this name.
_LOOP_SELECTOR = "_selector"


def base_selector(loop: Any) -> Any | None:
    """The real selector of asyncio selector loop ``loop``, beneath any
    ``SelectorWrapper``; None for loops without one (uvloop)."""
    sel = getattr(loop, _LOOP_SELECTOR, None)
    while isinstance(sel, SelectorWrapper):
        sel = sel.inner
    return sel


def serves(sel: Any, loop: Any) -> bool:
    """Is ``sel`` the selector that ``loop`` waits on (under any wrappers)?"""
    return sel is not None and base_selector(loop) is sel


def wrap_selector(loop: Any, make: Callable[[Any], SelectorWrapper]) -> SelectorWrapper | None:
    """Put ``make(selector)`` in front of ``loop``'s selector and return it;
    None (and nothing done) for a loop without a selector (uvloop)."""
    sel = getattr(loop, _LOOP_SELECTOR, None)
    if sel is None or not hasattr(sel, "select"):
        return None
    wrapper = make(sel)
    setattr(loop, _LOOP_SELECTOR, wrapper)
    return wrapper


def unwrap_selector(loop: Any, wrapper: SelectorWrapper) -> None:
    """Take ``wrapper`` out of ``loop``'s selector chain, wherever it is."""
    outer: Any = None
    sel = getattr(loop, _LOOP_SELECTOR, None)
    while isinstance(sel, SelectorWrapper):
        if sel is wrapper:
            if outer is None:
                setattr(loop, _LOOP_SELECTOR, wrapper.inner)
            else:
                outer.inner = wrapper.inner
            return
        outer, sel = sel, sel.inner


def _callback_owner(handle: Any) -> Any:
    # An asyncio Handle keeps its callback in ``_callback``; the guard asks
    # whether a selector key's handle is one of the hub's own callbacks.
    return getattr(getattr(handle, "_callback", None), "__self__", None)


class _SelectorGuard(SelectorWrapper):
    """Wraps a selector loop's selector to notice "the loop would sleep
    forever while a greenlet waits", which becomes LoopExit in that greenlet,
    and a foreign callback (Tornado, asyncio) joining an fd number on which
    the hub holds a registration for a file that was closed behind its back
    ("Registrations"). Part of the hub: it reads the hub's registrations."""

    def __init__(self, selector: Any, hub: Hub) -> None:
        super().__init__(selector)
        self.hub = hub

    def _ours(self, handle: Any) -> bool:
        return _callback_owner(handle) is self.hub

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Any:
        sel = self.inner
        hub = self.hub
        watches = hub._watches  # noqa: SLF001 - the guard is part of the hub
        if not watches:
            return sel.modify(fileobj, events, data)
        key = sel.get_key(fileobj)
        old = key.data
        if (type(data) is not tuple or type(old) is not tuple or len(old) != 2
                or not (self._ours(old[0]) or self._ours(old[1]))
                or not any(h is not None and h not in old and not self._ours(h) for h in data)):
            return sel.modify(fileobj, events, data)
        # A foreign callback joins our registration's key. If the number now
        # names another file, our entry is stale: asyncio would modify an
        # epoll entry the kernel dropped with the old file (FileNotFoundError)
        # or, with unchanged events, never add the new file at all.
        w = watches.get(key.fd)
        if w is not None and w.ident is not None and _file_identity(key.fd) == w.ident:
            return sel.modify(fileobj, events, data)
        reader, writer = data
        if self._ours(reader):
            reader.cancel()
            reader = None
            events &= ~1  # EVENT_READ
        if self._ours(writer):
            writer.cancel()
            writer = None
            events &= ~2  # EVENT_WRITE
        if w is not None:
            hub._disown(w)  # noqa: SLF001 - the guard is part of the hub
        sel.unregister(fileobj)   # the epoll entry of the closed file, if any
        return sel.register(fileobj, events, (reader, writer))

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            hub = self.hub
            # Not a method call first: the loop sleeps with no timeout on
            # every turn that has no timer pending (ping-pong servers).
            if hub._runner is not None and hub.stop_if_idle_forever(self.inner):  # noqa: SLF001
                return []
        return self.inner.select(timeout)


def _install_selector_guard(hub: Hub) -> None:
    # Only asyncio's selector loops expose their selector; on uvloop the
    # would-block-forever check is not available and such a wait just waits.
    sel = getattr(hub.loop, _LOOP_SELECTOR, None)
    if sel is None or isinstance(sel, _SelectorGuard) or not hasattr(sel, "get_map"):
        return
    wrap_selector(hub.loop, lambda inner: _SelectorGuard(inner, hub))


# -- finding the hub -------------------------------------------------------------

_local = threading.local()
# Bumped in a forked child: hubs made before it belong to the parent's loop.
_fork_generation = 0
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
    loop = _asyncio_state.running_loop()
    hub: Hub | None = getattr(_local, "hub", None)
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
        if hub.runs_loop(cur):
            continue  # it runs below us in this very greenlet
        return hub
    return None


def _default_hub() -> Hub:
    hub: Hub | None = getattr(_local, "default", None)
    if hub is not None and not hub.loop.is_closed():
        return hub
    loop = _asyncio_state.thread_event_loop()
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
    loop = _asyncio_state.running_loop()
    hub: Hub | None = getattr(_local, "hub", None)
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
    global _hubs_by_loop, _fork_generation
    from ._fork import abandon_parent_loop

    _fork_generation += 1
    abandon_parent_loop()
    _local.__dict__.clear()
    _hubs_by_loop = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def peek_hub() -> Hub | None:
    """This thread's hub if it already exists; never creates one."""
    hub: Hub | None = getattr(_local, "hub", None)
    if hub is not None:
        return hub
    loop = _asyncio_state.running_loop()
    if loop is not None:
        return _known_hub(loop)
    return None
