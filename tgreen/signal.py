"""A green ``signal``: handlers set with ``signal.signal`` run in a greenlet
of their own, so they may block (sleep, talk to sockets, wait for a child)
without freezing the event loop or running inside it. ::

    import signal, tgreen.signal
    tgreen.signal.signal(signal.SIGUSR1, lambda signum, frame: tgreen.sleep(0.1))
    signal.getsignal(signal.SIGUSR1)          # the lambda, as set

Theory of operation
-------------------
The handler the OS sees is a Python-level dispatcher (``_dispatch``); the
user's handler is kept in ``_handlers``, and ``getsignal`` answers with it.
CPython runs Python-level handlers in the main thread, between bytecodes, in
whatever greenlet happens to be running. The dispatcher decides from there:

* **The loop is not running** (a plain script between waits, or the main
  greenlet blocked in a real call such as ``signal.pause()``): the handler
  runs *at once*, in a new greenlet switched to from the interrupted one,
  whose parent that is. An exception it raises is re-raised in the
  interrupted code, exactly as with the stdlib (``raise_signal`` followed by
  a check, SIGALRM handlers that raise to time something out).
* **The loop is running** (the signal interrupted its ``select`` or a
  greenlet): the handler is started by a loop callback, scheduled with
  ``call_soon_threadsafe``, whose write to the loop's self-pipe also ends
  the interrupted ``select`` at once. An exception it raises is thrown into
  the greenlet the signal interrupted if that greenlet can still receive it
  (a greenlet waiting, the runner in its wait); otherwise
  KeyboardInterrupt/SystemExit go to the main greenlet and anything else is
  reported like any greenlet's error.

A storm of signals coalesces as CPython's own does: CPython keeps one
"tripped" flag per signal number and runs the handler once per check, however
many deliveries happened in between. Here the flag is ``_queued``: while a
handler start for a signal number waits in the loop's queue, further
deliveries of that number add nothing (the queued start runs the handler
current at that time, once). So a greenlet that raises signals in a loop
without yielding, or an interval timer firing every microsecond, leaves at
most one callback per signal number behind, not one per delivery (which grew
without bound: gigabytes within a minute of CPython's signal stress test).

``loop.add_signal_handler`` was considered and not used: it binds a handler
to one loop (lost when a hub's loop is replaced), owns the process-wide
``set_wakeup_fd`` (which an asyncio or Tornado application may own already),
makes ``getsignal`` answer with asyncio's no-op, and cannot run a handler
synchronously when no loop runs. The dispatcher gets the same promptness from
the self-pipe write.

``SIGINT``'s ``default_int_handler``, ``SIG_DFL`` and ``SIG_IGN`` are
installed as they are: Ctrl-C still raises KeyboardInterrupt in whatever
runs, which the hub delivers to the main greenlet. ``pause()`` waits greenly
for the next dispatched signal.

``sigwait``, ``sigwaitinfo`` and ``sigtimedwait`` (Linux) wait greenly too:
the signals they wait for are blocked (that is their contract), so they stay
pending; a ``signalfd`` for the set becomes readable while one is, the hub
waits on it, and the stdlib's ``sigtimedwait(set, 0)`` then takes the signal,
so the results are exactly the stdlib's. Without a hub (a real thread) or
without ``signalfd`` they are the stdlib's blocking calls.
"""

from __future__ import annotations

import os as _os
import time as _time
from collections.abc import Callable, Iterable
from typing import Any

from greenlet import getcurrent, greenlet

from . import _originals
from .greenlet import Greenlet
from .hub import Waiter, current_hub_if_any, peek_hub

_std = _originals.module("signal")
for _name, _value in _std.__dict__.items():
    if not _name.startswith("__"):
        globals()[_name] = _value
del _name, _value

__implements__ = ["signal", "getsignal", "pause", "sigwait", "sigwaitinfo", "sigtimedwait"]
__all__ = [n for n in dir(_std) if not n.startswith("_")]

_signal = _std.signal
_getsignal = _std.getsignal
_pause: Any = getattr(_std, "pause", None)   # None where the OS lacks it
_default_int_handler = _std.default_int_handler
_main_ident = _originals.get("_thread", "get_ident")()

# signum -> the user's handler, valid while _dispatch is installed for it.
_handlers: dict[int, Callable[[int, Any], Any]] = {}
# Waiters of green pause() calls, woken after each dispatched handler ran.
_pausers: list[Waiter] = []
# signum -> the loop holding a queued (not yet started) handler start for it:
# the per-signal "tripped" flag that coalesces a storm (module docstring).
# Keyed to the loop so a replaced or closed loop (fork, a new hub) cannot
# leave the flag set forever.
_queued: dict[int, Any] = {}
# signum -> how many runs of its handler are nested synchronously right now;
# signals delivered past _MAX_NESTED of them run once more when the deepest
# returns (_run_now_coalesced).
_MAX_NESTED = 8
_running_now: dict[int, int] = {}
_rerun_now: set[int] = set()


def _is_ours(installed: Any) -> bool:
    return installed is _dispatch


def getsignal(signalnum: int) -> Any:
    """The handler for ``signalnum``: the one given to ``signal()``."""
    installed = _getsignal(signalnum)
    if _is_ours(installed):
        return _handlers.get(signalnum, installed)
    return installed


def signal(signalnum: int, handler: Any) -> Any:
    """Set the handler for ``signalnum``; a Python callable runs in a greenlet.

    Returns the previous handler, as ``signal.signal`` does (the callable
    given earlier, not tgreen's dispatcher).
    """
    if not callable(handler) or handler is _default_int_handler:
        previous = _signal(signalnum, handler)  # the stdlib's checks and errors
        old = _handlers.pop(int(signalnum), None)
    else:
        # Record first: the signal may arrive as soon as _dispatch is in.
        key = int(signalnum)
        old = _handlers.get(key)
        _handlers[key] = handler
        try:
            previous = _signal(signalnum, _dispatch)
        except BaseException:
            if old is None:
                _handlers.pop(key, None)
            else:
                _handlers[key] = old
            raise
    if _is_ours(previous) and old is not None:
        return old
    return previous


def _dispatch(signum: int, frame: Any) -> None:
    """Installed at the OS level for every green handler (module docstring)."""
    handler = _handlers.get(signum)
    if handler is None:
        return
    hub = peek_hub()
    interrupted = getcurrent()
    if hub is None or hub.loop.is_closed() or (
            not hub.has_runner()):
        _run_now_coalesced(signum, frame, interrupted)
        _wake_pausers(hub)
        return
    loop = hub.loop
    if _queued.get(signum) is loop:
        return  # a start is queued already: it runs the handler once for all
    _queued[signum] = loop
    try:
        loop.call_soon_threadsafe(_start, hub, signum, frame, interrupted)
    except RuntimeError:  # the loop closed under us
        if _queued.get(signum) is loop:
            del _queued[signum]
        _run_now(handler, signum, frame, interrupted)


def _run_now_coalesced(signum: int, frame: Any, interrupted: greenlet) -> None:
    """Run the handler at once, nesting as CPython does, but only so deep.

    CPython checks for signals inside a running handler too, so a delivery
    during a handler runs it again, nested. A handler here costs a greenlet
    and a switch, and a fast interval timer outpaces that: one nested run per
    delivery until RecursionError. Past ``_MAX_NESTED`` runs of one signal's
    handler, a delivery sets the per-signal flag instead, and the deepest run
    repeats the handler once when it returns (CPython's coalescing).
    """
    depth = _running_now.get(signum, 0)
    if depth >= _MAX_NESTED:
        _rerun_now.add(signum)
        return
    _running_now[signum] = depth + 1
    try:
        while True:
            _rerun_now.discard(signum)
            handler = _handlers.get(signum)
            if handler is None:
                return
            _run_now(handler, signum, frame, interrupted)
            if signum not in _rerun_now:
                return
    finally:
        if depth:
            _running_now[signum] = depth
        else:
            del _running_now[signum]
            _rerun_now.discard(signum)


def _run_now(handler: Callable, signum: int, frame: Any, interrupted: greenlet) -> None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            handler(signum, frame)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            failure.append(e)

    greenlet(run, parent=interrupted).switch()
    if failure:
        try:
            raise failure[0]
        finally:
            failure.clear()


class _HandlerGreenlet(Greenlet):
    """Runs one signal handler; routes its exception as the docstring says."""

    report_errors = False

    def __init__(self, handler: Callable, signum: int, frame: Any, interrupted: greenlet) -> None:
        super().__init__(handler, signum, frame)
        self._interrupted: greenlet | None = interrupted

    def run(self) -> None:
        hub = self.hub
        try:
            super().run()
        finally:
            _wake_pausers(hub)
        exc = self.exception
        target = self._interrupted
        self._interrupted = None
        if exc is None:
            return
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return  # Greenlet.run forwarded it to the main greenlet already
        if (target is not None and not target.dead and target is not self
                and (target is not hub.root or hub.runner is not None)):
            hub.loop.call_soon(hub.throw, target, exc)
        else:
            hub.handle_error(self, exc)


def _start(hub: Any, signum: int, frame: Any, interrupted: greenlet) -> None:
    # Clear the flag first: a delivery from now on needs a run of its own.
    if _queued.get(signum) is hub.loop:
        del _queued[signum]
    # The handler set when the check happens runs, as with CPython; one
    # replaced by SIG_IGN/SIG_DFL in the meantime means nothing to run.
    handler = _handlers.get(signum)
    if handler is None or not _is_ours(_getsignal(signum)):
        return
    _HandlerGreenlet(handler, signum, frame, interrupted).switch()


def _wake_pausers(hub: Any) -> None:
    if _pausers:
        waiters = list(_pausers)
        del _pausers[:]
        for w in waiters:
            w.hub.loop.call_soon(w.switch, None)


if _pause is not None:
    def pause() -> None:
        """Block the calling greenlet until a signal handler has run."""
        hub = current_hub_if_any()
        if hub is None or hub.thread_ident != _main_ident:
            return _pause()
        w = Waiter(hub)
        _pausers.append(w)
        # Only a signal can end this wait, which the loop cannot see coming:
        # do not let it count as "waiting forever".
        hub.pending_jobs += 1
        try:
            w.get(None, "signal.pause()")
        finally:
            hub.pending_jobs -= 1
            if w in _pausers:
                _pausers.remove(w)
else:  # pragma: no cover - Windows
    __implements__.remove("pause")

# -- sigwait & co ------------------------------------------------------------------------

_std_sigtimedwait: Any = getattr(_std, "sigtimedwait", None)   # None where the OS lacks it
_libc: Any = None
_SFD_NONBLOCK, _SFD_CLOEXEC = 0o4000, 0o2000000


def _signalfd(sigset: Iterable[int]) -> int | None:
    """A non-blocking signalfd for ``sigset``, or None where there is none."""
    global _libc
    import ctypes

    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.signalfd  # noqa: B018 - probe: glibc/musl on Linux only
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return None
    mask = (ctypes.c_ulong * 16)()   # sigset_t: 1024 bits
    _libc.sigemptyset(ctypes.byref(mask))
    for signum in sigset:
        if _libc.sigaddset(ctypes.byref(mask), int(signum)) != 0:
            raise ValueError(f"signal number {int(signum)} out of range")
    fd = _libc.signalfd(-1, ctypes.byref(mask), _SFD_NONBLOCK | _SFD_CLOEXEC)
    return None if fd < 0 else fd


def _green_sigtimedwait(sigset: Iterable[int], timeout: float | None) -> Any:
    """Wait for one of ``sigset`` (blocked signals) without blocking the loop."""
    sigset = set(sigset)
    info = _std_sigtimedwait(sigset, 0)   # already pending: no fd needed
    if info is not None or timeout == 0:
        return info
    hub = current_hub_if_any()
    fd = _signalfd(sigset) if hub is not None and hub.thread_ident == _main_ident else None
    if fd is None:
        return _std.sigwaitinfo(sigset) if timeout is None else _std_sigtimedwait(sigset, timeout)
    assert hub is not None   # a signalfd is made only with a hub
    deadline = None if timeout is None else _time.monotonic() + timeout
    # A signal can only arrive from outside the loop's sight: do not let
    # this wait count as "waiting forever" (LoopExit).
    hub.pending_jobs += 1
    try:
        while True:
            remaining = None if deadline is None else max(deadline - _time.monotonic(), 0)
            if not hub.wait_read(fd, remaining):
                return None
            info = _std_sigtimedwait(sigset, 0)
            if info is not None:
                return info
            # Taken by someone else first (another waiter): wait again.
    finally:
        hub.pending_jobs -= 1
        hub.forget(fd)
        _os.close(fd)


if _std_sigtimedwait is not None:
    def sigtimedwait(sigset: Iterable[int], timeout: float) -> Any:
        """Like ``signal.sigtimedwait``; only the calling greenlet waits."""
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
        return _green_sigtimedwait(sigset, timeout)

    def sigwaitinfo(sigset: Iterable[int]) -> Any:
        """Like ``signal.sigwaitinfo``; only the calling greenlet waits."""
        return _green_sigtimedwait(sigset, None)

    def sigwait(sigset: Iterable[int]) -> int:
        """Like ``signal.sigwait``; only the calling greenlet waits."""
        return _green_sigtimedwait(sigset, None).si_signo
else:  # pragma: no cover - not Linux
    for _n in ("sigwait", "sigwaitinfo", "sigtimedwait"):
        __implements__.remove(_n)


# They stand in for the stdlib's pure-Python functions once patched, which
# say they come from "signal" (pydoc and pickle-by-name rely on it).
for _f in (signal, getsignal, globals().get("pause"), globals().get("sigwait"),
           globals().get("sigwaitinfo"), globals().get("sigtimedwait")):
    if _f is not None and _f is not _pause:
        _f.__module__ = "signal"
del _f
