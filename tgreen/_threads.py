"""Threads as greenlets: ``start_new_thread`` and friends, and what C does when a thread ends.

``_thread.start_new_thread`` (and 3.13's ``start_joinable_thread``) start a
greenlet on the caller's hub; a plain OS thread (one with no hub) starts a
real thread instead. Either way the thread's end runs the same duties C
runs when a thread state is deleted (``end_of_thread``).

Thread identity is the current greenlet: ``get_ident()`` is ``id(greenlet)``,
except in an OS thread's root greenlet (the main greenlet, a real thread's
own), which keeps the OS thread's ident: so the main thread's ident does not
change under patching and stays usable with ``signal.pthread_kill`` and
``sys._current_frames()``.

How each CPython's ``threading`` is served
------------------------------------------
``threading.py`` is pure Python over ``_thread``; what it needs from a thread
changed in 3.13, and each version gets the green form of *its* API:

* 3.10-3.12: ``Thread.start`` calls ``start_new_thread``; ``join`` waits on a
  "thread-state lock" from ``_set_sentinel`` that C releases when the thread
  ends. Green threads get a green lock from ``_set_sentinel``, released by
  the greenlet's last act. ``_thread.daemon_threads_allowed`` and
  ``_is_main_interpreter`` (3.12) are answered by C unchanged.
* 3.13+: ``_set_sentinel`` is gone. ``Thread`` owns a ``_ThreadHandle``
  (``ident``, ``join``, ``is_done``, ``_set_done``) that
  ``start_joinable_thread(fn, handle, daemon)`` starts; the main thread and
  dummy threads get theirs from ``make_thread_handle(ident)``, and
  ``threading._shutdown`` marks the main one done, then calls
  ``_thread._shutdown()`` to wait for the non-daemon handles. All of these
  have green versions here: a handle is a state plus a ``WaitQueue``, a
  green thread marks its handle done as its last act, and ``_shutdown``
  joins the non-daemon green handles greenly. ``LockType`` can be
  instantiated (``threading.Lock`` *is* the type). In a forked child the
  handles of threads that did not survive the fork are marked done, as C
  does for its own.
* 3.14: ``threading`` also calls ``_thread.set_name`` to name the OS thread
  after the ``Thread``; from a green thread that would rename the process's
  thread, so there it does nothing.

Threads that a plain OS thread starts stay real threads on every version,
with the same green end-of-thread duties (sentinels, handle, locals). A
``Thread`` created before patching and started after is green on every
version (from 3.13 it is given a green handle in place of its C one, which
only C could start and mark done). An error that ends a
thread reaches ``sys.unraisablehook`` in the running version's form (the
function as the object up to 3.12, named in the message from 3.13).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from contextvars import Context as _Context
from operator import index as _index
from typing import TYPE_CHECKING, Any

from greenlet import getcurrent

from . import _originals
from ._threadlocal import clear_locals
from ._waitqueue import WaitQueue, machinery_threads
from .hub import current_hub_if_any

if TYPE_CHECKING:
    from ._locks import LockType

_c_get_ident = _originals.get("_thread", "get_ident")
_c_count = _originals.get("_thread", "_count")
_c_start_new_thread = _originals.get("_thread", "start_new_thread")
_c_thread = _originals.module("_thread")
_UNRAISABLE_NAMES_FN = sys.version_info >= (3, 13)
#: The main thread's OS ident (its root greenlet keeps it as ``get_ident()``).
main_os_ident = _originals.get("threading", "main_thread")().ident


def get_ident() -> int:
    """The identity of the current "thread": the current greenlet."""
    g = getcurrent()
    if g.parent is None:
        return _c_get_ident()
    return id(g)


get_ident.__module__ = "_thread"


# -- starting and ending a thread -----------------------------------------------------

_green_count = 0


def count() -> int:
    """Threads alive that were started by ``start_new_thread``: green ones and
    real ones (the loop's executor threads), not tgreen's own."""
    return _green_count + _c_count() - machinery_threads()


def _Greenlet() -> type:
    from .greenlet import Greenlet

    return Greenlet


class _ThreadGreenletMixin:
    """Runs ``start_new_thread``'s function the way ``_thread`` runs it in a
    thread: SystemExit ends it quietly, other errors go to
    ``sys.unraisablehook``, and at the end the thread's end-of-thread duties
    run (``end_of_thread``)."""

    _tgreen_thread = True

    def run(self) -> None:
        global _green_count
        fn = self._run  # type: ignore[attr-defined]
        exc: BaseException | None = None
        try:
            fn(*self.args, **self.kwargs)  # type: ignore[attr-defined]
        except SystemExit:
            pass
        except KeyboardInterrupt as e:
            exc = e
            self.hub.raise_in_main(e)  # type: ignore[attr-defined]
        except BaseException as e:  # noqa: BLE001 - reported like _thread does
            exc = e
            _report_unraisable(e, fn)
        finally:
            _green_count -= 1
            end_of_thread(self)
            self._finish(None, exc)  # type: ignore[attr-defined]
            exc = None


def end_of_thread(g: Any) -> None:
    """What C does when a thread's state is deleted, for the thread that ran
    in ``g`` (a green thread, or the root greenlet of a real one): release its
    ``set_sentinel`` locks (3.10-3.12), drop its ``_local`` dicts, then mark
    its ``ThreadHandle`` done (3.13+), last, as C does."""
    d = g.__dict__
    for lock in d.pop("_tgreen_sentinels", ()):
        if lock.locked():
            lock.release()
    handle = d.pop("_tgreen_handle", None)
    clear_locals(g)
    if handle is not None:
        handle._set_done()


_thread_greenlet_class: type | None = None


def _thread_greenlet() -> type:
    global _thread_greenlet_class
    if _thread_greenlet_class is None:
        _thread_greenlet_class = type("ThreadGreenlet", (_ThreadGreenletMixin, _Greenlet()), {
            "__module__": __name__,
            "__doc__": "The greenlet behind a green thread (``start_new_thread``).",
        })
    return _thread_greenlet_class


def _report_unraisable(exc: BaseException, fn: Any) -> None:
    # Up to 3.12 C reports the function as the unraisable's object; from
    # 3.13 it names it in the message and the object is None.
    if _UNRAISABLE_NAMES_FN:
        msg, obj, line = f"Exception ignored in thread started by {fn!r}", None, "{msg}:\n"
    else:
        msg, obj, line = "Exception ignored in thread started by", fn, "{msg}: {fn!r}\n"
    hook = sys.unraisablehook
    if hook is sys.__unraisablehook__:
        import traceback

        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            sys.stderr.write(line.format(msg=msg, fn=fn) + text)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - stderr gone at shutdown
            pass
        return

    class UnraisableHookArgs:
        exc_type = type(exc)
        exc_value = exc
        exc_traceback = exc.__traceback__
        err_msg = msg
        object = obj

    try:
        hook(UnraisableHookArgs)  # type: ignore[arg-type]  # duck-typed, as CPython's struct
    except Exception:  # noqa: BLE001
        pass


def _check_start_args(function: Any, args: Any, kwargs: Any) -> None:
    if not callable(function):
        raise TypeError("first arg must be callable")
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("optional 3rd arg must be a dictionary")


def _start(function: Callable[..., Any], args: tuple, kwargs: dict,
           handle: ThreadHandle | None) -> int:
    """Start a thread running ``function(*args, **kwargs)``: a green one, or
    a real one when the caller is a plain OS thread. Returns its ident."""
    global _green_count
    if current_hub_if_any() is None:
        # A plain OS thread (an executor worker) has no loop to run a green
        # thread on: what it starts stays a real thread.
        ident = _c_start_new_thread(_run_real_thread, (function, args, kwargs, handle))
        if handle is not None and not handle._ident:
            handle._ident = ident
        return ident
    g = _thread_greenlet()(function, *args, **kwargs)
    g.gr_context = _Context()  # a new thread starts with an empty context
    if handle is not None:
        handle._ident = id(g)
        g._tgreen_handle = handle
    _green_count += 1
    hub = g.hub
    if hub.runs_adopted_loop():
        g._start_handle = True  # started, not scheduled
        g.switch()
    else:
        g.start()
    return id(g)


def start_new_thread(function: Callable[..., Any], args: tuple, kwargs: dict | None = None, /) -> int:
    """Run ``function(*args, **kwargs)`` in a new greenlet; return its ident.

    Called from the greenlet that runs an adopted loop (which may not wait),
    the new greenlet runs at once until it first blocks, so that
    ``Thread.start()`` there finds the thread started without waiting.
    """
    _check_start_args(function, args, kwargs)
    return _start(function, args, kwargs or {}, None)




def _run_real_thread(function: Callable[..., Any], args: tuple, kwargs: dict,
                     handle: ThreadHandle | None) -> None:
    """``start_new_thread`` in a real thread: the same end-of-thread duties as
    a green thread (sentinels, locals, handle), since those objects are green."""
    g = getcurrent()
    g._tgreen_thread = True  # type: ignore[attr-defined]  # marks a greenlet as a thread
    if handle is not None:
        handle._ident = _c_get_ident()
        g._tgreen_handle = handle  # type: ignore[attr-defined]
    try:
        function(*args, **kwargs)
    except SystemExit:
        pass
    except BaseException as e:  # noqa: BLE001 - reported like _thread does
        _report_unraisable(e, function)
    finally:
        end_of_thread(g)


def exit() -> None:
    """End the current thread (greenlet) quietly."""
    raise SystemExit




def set_sentinel() -> LockType:
    """3.10-3.12: a lock released when the current green thread ends
    (``Thread.join`` waits on it)."""
    from ._locks import new_lock

    lock = new_lock()
    g = getcurrent()
    if getattr(g, "_tgreen_thread", False):
        g.__dict__.setdefault("_tgreen_sentinels", []).append(lock)
    return lock


# -- 3.13+: thread handles ---------------------------------------------------------------

_NOT_STARTED, _RUNNING, _DONE = 0, 1, 2
# Non-daemon handles not done yet: what _shutdown() waits for.
_shutdown_handles: set[ThreadHandle] = set()
# Every started handle not done yet: a forked child marks them done.
_live_handles: weakref.WeakSet[ThreadHandle] = weakref.WeakSet()


class ThreadHandle:
    """A green ``_thread._ThreadHandle``: the joinable end of one thread.

    ``ident`` is the thread's ident (0 until started); ``join`` waits for
    the end greenly in greenlets and really in plain OS threads, like a
    lock; the thread marks it done (``_set_done``) as its last act, and
    ``threading._shutdown`` does so for the main thread's.
    """

    __slots__ = ("__weakref__", "_ident", "_state", "_waiters")

    def __init__(self) -> None:
        self._ident = 0
        self._state = _NOT_STARTED
        self._waiters = WaitQueue()

    @property
    def ident(self) -> int:
        return self._ident

    def is_done(self) -> bool:
        return self._state == _DONE

    def _set_running(self, ident: int) -> None:
        self._ident = ident
        self._state = _RUNNING
        _live_handles.add(self)

    def _set_done(self) -> None:
        if self._state == _NOT_STARTED:
            raise RuntimeError("thread not started")
        self._state = _DONE
        _shutdown_handles.discard(self)
        _live_handles.discard(self)
        self._waiters.wake_all()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread has ended; ``timeout`` None (or negative,
        as in C) waits for ever."""
        state = self._state
        if state == _NOT_STARTED:
            raise RuntimeError("thread not started")
        if state == _DONE:
            return
        if self._ident == get_ident():
            raise RuntimeError("Cannot join current thread")
        if timeout is not None:
            if not isinstance(timeout, float):
                timeout = _index(timeout)  # like C: a number, not a string
            if timeout < 0:
                timeout = None
        self._waiters.park_until(self.is_done, self.is_done, timeout, "joining a thread")

    def __repr__(self) -> str:
        return f"<_thread._ThreadHandle object: ident={self._ident}>"


ThreadHandle.__module__ = "_thread"
ThreadHandle.__name__ = ThreadHandle.__qualname__ = "_ThreadHandle"


def start_joinable_thread(function: Callable[..., Any], handle: ThreadHandle | None = None,
                          daemon: bool = True) -> Any:
    """3.13+: start ``function()`` in a new thread (a greenlet) and return
    its handle; ``handle``, if given, must be a new ``ThreadHandle``. The
    interpreter's exit waits for threads started with ``daemon=False``."""
    if not callable(function):
        raise TypeError("thread function must be callable")
    if handle is None:
        handle = ThreadHandle()
    elif not isinstance(handle, ThreadHandle):
        if _c_start_joinable_thread is None or not isinstance(handle, _c_thread._ThreadHandle):
            raise TypeError("'handle' must be a _ThreadHandle")
        owner = getattr(function, "__self__", None)
        if getattr(owner, "_handle", None) is handle and not handle.ident:
            # A Thread made before patching and started after: it carries a
            # C handle, which only C can start and mark done. Give it a
            # green one, so that it starts green, as it does up to 3.12.
            handle = owner._handle = ThreadHandle()
        else:
            # A bare C handle: only C can run a thread behind it.
            return _c_start_joinable_thread(function, handle=handle, daemon=daemon)
    if handle._state != _NOT_STARTED:
        raise RuntimeError("thread already started")
    handle._set_running(0)
    if not daemon:
        _shutdown_handles.add(handle)
    try:
        _start(function, (), {}, handle)
    except BaseException:
        handle._state = _NOT_STARTED
        _shutdown_handles.discard(handle)
        _live_handles.discard(handle)
        raise
    return handle


def make_thread_handle(ident: int) -> ThreadHandle:
    """3.13+: a running handle for a thread ``threading`` did not start (the
    main thread, a dummy thread)."""
    handle = ThreadHandle()
    handle._set_running(ident)
    return handle


def shutdown() -> None:
    """3.13+: wait until every non-daemon thread started by
    ``start_joinable_thread`` (but the caller) has ended."""
    me = get_ident()
    while True:
        left = [h for h in list(_shutdown_handles) if h._ident != me and not h.is_done()]
        if not left:
            return
        for h in left:
            h.join()


def set_name(name: str) -> None:
    """3.14+: name the current OS thread; a green thread has none of its own
    (naming it would rename the thread every greenlet shares), so only an
    OS thread's root greenlet passes the call on."""
    if getcurrent().parent is None and _c_set_name is not None:
        _c_set_name(name)


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork: the others' handles are done
    # (C does this for its own handles in _PyThread_AfterFork).
    me = get_ident()
    _shutdown_handles.clear()
    for h in list(_live_handles):
        if h._ident != me:
            h._state = _DONE
            h._waiters.clear()
            _live_handles.discard(h)


_c_start_joinable_thread = getattr(_c_thread, "start_joinable_thread", None)
_c_set_name = getattr(_c_thread, "set_name", None)
_originals.get("os", "register_at_fork")(after_in_child=_after_fork_in_child)
