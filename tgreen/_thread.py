"""Green ``_thread``: threads are greenlets, locks work across greenlets *and* OS threads.

``tgreen.monkey.patch_thread()`` puts these names on the stdlib ``_thread``
module (and, through ``tgreen.threading``, on ``threading``). They can also be
used directly::

    from tgreen import _thread
    lock = _thread.allocate_lock()
    with lock:
        ...

Theory of operation
-------------------
A green lock is a real ``_thread.lock`` (the *state*: held or not, changed
atomically by C) plus a FIFO of parked waiters. ``acquire`` first tries the
real lock without blocking; only on contention does it park, and *how* depends
on who is asking:

* a greenlet in a thread that has a hub (the main thread, or any thread that
  uses tgreen): it parks a ``Waiter`` and switches to the loop;
* a plain OS thread (an asyncio executor worker, a ``tgreen.threadpool``
  worker): it blocks on the real lock, as the stdlib would;
* the greenlet that runs an adopted loop (a coroutine or a loop callback) may
  not switch: if the holder is another OS thread it blocks on the real lock
  for the moment that thread needs; if the holder is a greenlet of its own
  thread, blocking could never end, and it raises ``BlockingFromHubError``.

``release`` releases the real lock and wakes the oldest parked waiter with a
loop callback on *the waiter's* loop (``call_soon_threadsafe`` when that is
another thread's). The woken waiter retries; if someone else got there first it
parks again. So the locks are safe to share with real threads: objects that
patched code creates (a logging handler, a connection pool's queue, a
``concurrent.futures.Future``) routinely are.

Rules of this file:

1. Never park without re-checking the state after registering: a release in
   another OS thread may happen between the failed try and the registration.
2. A waiter that was chosen by a release (popped from the FIFO) but leaves
   without the lock (timeout, kill) passes the wake-up on, or it is lost.
3. Thread identity is the current greenlet. ``get_ident()`` is
   ``get_ident()``, except in an OS thread's root greenlet (the main
   greenlet, a real thread's own), which keeps the OS thread's ident: so the
   main thread's ident does not change under patching and stays usable with
   ``signal.pthread_kill`` and ``sys._current_frames()``. ``_local`` keeps
   one attribute dict per greenlet.
4. Only names this CPython's ``_thread`` has are put on it (``green_names``);
   every other name it has is kept on purpose (``KEPT``), so a new CPython
   that grows a name shows up as unaccounted for, not as a silent hole.

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
  dummy threads get theirs from ``_make_thread_handle(ident)``, and
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
from collections import deque
from collections.abc import Callable
from contextvars import Context as _Context
from operator import index as _index
from typing import Any
from weakref import ref as _weakref

from greenlet import getcurrent

from . import _originals
from .hub import _TIMEDOUT, BlockingFromHubError, Waiter, current_hub_if_any, get_hub

__all__ = [
    "TIMEOUT_MAX",
    "LockType",
    "RLock",
    "_ThreadHandle",
    "_count",
    "_local",
    "_make_thread_handle",
    "_set_sentinel",
    "_shutdown",
    "allocate",
    "allocate_lock",
    "error",
    "exit",
    "exit_thread",
    "get_ident",
    "get_native_id",
    "interrupt_main",
    "set_name",
    "stack_size",
    "start_joinable_thread",
    "start_new",
    "start_new_thread",
]

_c_allocate_lock = _originals.get("_thread", "allocate_lock")
_c_get_ident = _originals.get("_thread", "get_ident")
_c_count = _originals.get("_thread", "_count")
_monotonic = _originals.get("time", "monotonic")
_c_start_new_thread = _originals.get("_thread", "start_new_thread")
_c_thread = _originals.module("_thread")
_c_LockType = _c_thread.LockType
_UNRAISABLE_NAMES_FN = sys.version_info >= (3, 13)
try:
    _c_LockType()
    _LOCK_TYPE_CALLABLE = True  # 3.13+: threading.Lock is the type itself
except TypeError:
    _LOCK_TYPE_CALLABLE = False
_main_os_ident = _originals.get("threading", "main_thread")().ident

error = _originals.get("_thread", "error")
TIMEOUT_MAX = _originals.get("_thread", "TIMEOUT_MAX")
stack_size = _originals.get("_thread", "stack_size")
interrupt_main = _originals.get("_thread", "interrupt_main")
get_native_id = _originals.get("_thread", "get_native_id")
_excepthook = _originals.get("_thread", "_excepthook")
_ExceptHookArgs = _originals.get("_thread", "_ExceptHookArgs")


def get_ident() -> int:
    """The identity of the current "thread": the current greenlet (rule 3)."""
    g = getcurrent()
    if g.parent is None:
        return _c_get_ident()
    return id(g)


get_ident.__module__ = "_thread"


# -- parking: how one greenlet or OS thread waits to be woken -----------------------


class _GreenParker(Waiter):
    """A ``Waiter`` with the parker interface (``block``/``wake``)."""

    __slots__ = ()

    def block(self, timeout: float | None, what: str) -> bool:
        """Park until woken (True) or ``timeout`` passes (False)."""
        hub = self.hub
        if _c_count() > _machinery_threads() or hub.thread_ident != _main_os_ident:
            # Another OS thread may wake us, so a loop with nothing to do
            # is not stuck forever: no LoopExit while we wait.
            hub.pending_jobs += 1
            try:
                return self.get(timeout, what) is not _TIMEDOUT
            finally:
                hub.pending_jobs -= 1
        return self.get(timeout, what) is not _TIMEDOUT

    def wake(self) -> None:
        hub = self.hub
        if hub.thread_ident == _c_get_ident():
            hub.loop.call_soon(self.switch, True)
        else:
            try:
                hub.loop.call_soon_threadsafe(self.switch, True)
            except RuntimeError:
                pass  # its loop is closed: nobody is left to wake


class _RealParker:
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = _c_allocate_lock()
        self.lock.acquire()

    def block(self, timeout: float | None, what: str) -> bool:
        return self.lock.acquire(True, -1 if timeout is None else timeout)

    def wake(self) -> None:
        self.lock.release()


class WaitQueue(deque):
    """A FIFO of parked callers, safe to use from any thread (under the GIL).

    A ``deque`` subclass, so that ``if waiters:`` costs no Python call on the
    hot paths. The caller's protocol (rule 1)::

        p = wq.register()
        if condition_now_true():   # re-check after registering
            wq.unregister(p); return
        p.block(timeout, what)
        chosen = not wq.unregister(p)   # popped by wake_one?
    """

    __slots__ = ()

    def register(self) -> _GreenParker | _RealParker:
        hub = current_hub_if_any()
        p = _RealParker() if hub is None else _GreenParker(hub)
        self.append(p)
        return p

    def unregister(self, p: Any) -> bool:
        """Remove ``p``; False if a wake-up already took it off the queue."""
        try:
            self.remove(p)
            return True
        except ValueError:
            return False

    def wake_one(self) -> bool:
        try:
            p = self.popleft()
        except IndexError:
            return False
        p.wake()
        return True

    def wake_all(self) -> None:
        while self.wake_one():
            pass

    def park_until(self, take: Callable[[], bool], available: Callable[[], bool],
                   timeout: float | None, what: str) -> bool:
        """Park until ``take()`` succeeds (True) or ``timeout`` passes
        (False). ``take`` tries to get the resource without blocking (the
        caller tried once already); ``available`` tells whether it is free
        (for passing a wake-up on). Rules 1 and 2 of this file live here."""
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            p = self.register()
            if take():  # rule 1
                if not self.unregister(p):
                    self._pass_on(available)
                return True
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                if not self.unregister(p):
                    self._pass_on(available)
                return False
            try:
                p.block(remaining, what)
            except BaseException:
                if not self.unregister(p):
                    self._pass_on(available)  # rule 2
                raise
            chosen = not self.unregister(p)
            if take():
                return True
            if chosen:
                self._pass_on(available)

    def _pass_on(self, available: Callable[[], bool]) -> None:
        # Chosen by a wake-up but leaving without the resource: hand the
        # wake-up to the next waiter if there is something to take.
        if self and available():
            self.wake_one()


# -- locks --------------------------------------------------------------------------


def _check_timeout(blocking: Any, timeout: Any) -> float | None:
    """Validate ``acquire(blocking, timeout)`` like the C lock; None = forever."""
    if timeout is None or timeout == -1:
        return None
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


class LockType:
    """A non-reentrant lock (``_thread.lock``) that parks greenlets.

    See the module docstring: the state is a real lock, so any thread may
    acquire and release it; only contended waits differ by caller.
    """

    __slots__ = ("__weakref__", "_block", "_os_owner", "_waiters")

    _block: Any
    _waiters: WaitQueue | None
    _os_owner: int

    def __new__(cls, *args: Any, **kwargs: Any) -> LockType:
        # Like the C type: before 3.13 locks come from allocate_lock() only;
        # since 3.13 the type makes them too (``threading.Lock()``).
        if not _LOCK_TYPE_CALLABLE:
            raise TypeError("cannot create '_thread.lock' instances")
        if args or kwargs:
            raise TypeError(f"lock expected 0 arguments, got {len(args) + len(kwargs)}")
        return _new_lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The C lock type was never subclassable; 3.13 made that a test.
        raise TypeError("type '_thread.lock' is not an acceptable base type")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock; False if ``blocking`` is false or ``timeout`` passed."""
        if self._block.acquire(False):
            if timeout != -1 or not blocking:
                try:
                    _check_timeout(blocking, timeout)
                except BaseException:
                    self._block.release()
                    raise
            self._os_owner = _c_get_ident()
            return True
        wait: float | None = None   # forever
        if timeout != -1 or not blocking:
            wait = _check_timeout(blocking, timeout)
            if not blocking or wait == 0:
                return False
        return self._acquire_contended(wait)

    def _acquire_contended(self, timeout: float | None) -> bool:
        me = _c_get_ident()
        if current_hub_if_any() is None:  # a plain OS thread blocks for real
            return self._real_acquire(timeout)
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = WaitQueue()
        try:
            ok = waiters.park_until(self._block_try, self._free, timeout, "acquiring a lock")
        except BlockingFromHubError:
            if self._os_owner != me:
                # Held by another OS thread: it does not need our loop to
                # release the lock, so a short real wait is safe.
                return self._real_acquire(timeout)
            raise
        if ok:
            self._os_owner = me
        return ok

    def _block_try(self) -> bool:
        return self._block.acquire(False)

    def _free(self) -> bool:
        return not self._block.locked()

    def _real_acquire(self, timeout: float | None) -> bool:
        if self._block.acquire(True, -1 if timeout is None else max(timeout, 0)):
            self._os_owner = _c_get_ident()
            return True
        return False

    def release(self) -> None:
        """Release the lock (from any greenlet or thread) and wake one waiter."""
        self._block.release()
        if self._waiters:
            self._waiters.wake_one()

    def locked(self) -> bool:
        return self._block.locked()

    def _at_fork_reinit(self) -> None:
        self._block = _c_allocate_lock()
        self._waiters = None

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked
    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self._block.release()
        if self._waiters:
            self._waiters.wake_one()

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '_thread.lock' object")

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return f"<{state} _thread.lock object at {id(self):#x}>"


class RLock:
    """A reentrant lock owned by the greenlet (the "thread") that acquired it."""

    __slots__ = ("__weakref__", "_block", "_count", "_owner")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments are accepted and ignored, as by the C type (3.13's
        # threading.RLock warns about them before passing them on).
        self._block = _new_lock()
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        g = getcurrent()
        me = _c_get_ident() if g.parent is None else id(g)
        if self._owner == me:
            if timeout != -1 or not blocking:
                _check_timeout(blocking, timeout)
            self._count += 1
            return True
        block = self._block
        if blocking is True and timeout == -1 and block._block.acquire(False):
            block._os_owner = _c_get_ident()  # the lock's fast path, inline
        elif not block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        if self._owner != get_ident() or not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            block = self._block
            block._block.release()
            if block._waiters:
                block._waiters.wake_one()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return self._count > 0 and self._owner == get_ident()

    def locked(self) -> bool:
        """Whether any thread holds it (3.14's ``RLock.locked``)."""
        return self._block.locked()

    def _recursion_count(self) -> int:
        return self._count if self._owner == get_ident() else 0

    def _release_save(self) -> tuple:
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle '_thread.RLock' object")

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return (f"<{state} _thread.RLock object owner={self._owner or 0} "
                f"count={self._count} at {id(self):#x}>")


RLock.__module__ = LockType.__module__ = "_thread"
LockType.__name__ = LockType.__qualname__ = "lock"
_object_new = object.__new__


def _new_lock() -> LockType:
    """A new green lock (``_thread.allocate_lock``)."""
    lock = _object_new(LockType)
    lock._block = _c_allocate_lock()
    lock._waiters = None
    lock._os_owner = 0
    return lock


class _Builtin:
    """Wraps a function so that, like a C builtin, it does not bind as a
    method when stored on a class (``locktype = _thread.allocate_lock``)."""

    __slots__ = ("__name__", "__qualname__", "_fn")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self._fn = fn
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<built-in function {self.__name__}>"


allocate_lock = allocate = _Builtin(_new_lock, "allocate_lock")
_Builtin.__module__ = "_thread"


# -- threads as greenlets ------------------------------------------------------------

_green_count = 0


def _count() -> int:
    """Threads alive that were started by ``start_new_thread``: green ones and
    real ones (the loop's executor threads), not tgreen's own."""
    return _green_count + _c_count() - _machinery_threads()


def _machinery_threads() -> int:
    """Real OS threads tgreen runs for itself: tgreen.threadpool's workers
    and the blocking monitor's watchdog. They run no user code of their own
    (a job given to the pool is counted by the hub while it runs), so they
    can never release a lock a greenlet waits for."""
    from . import threadpool

    mon = sys.modules.get("tgreen.monitor")
    return threadpool.live_workers + (1 if mon is not None and mon._thread_running else 0)


def _Greenlet() -> type:
    from .greenlet import Greenlet

    return Greenlet


class _ThreadGreenletMixin:
    """Runs ``start_new_thread``'s function the way ``_thread`` runs it in a
    thread: SystemExit ends it quietly, other errors go to
    ``sys.unraisablehook``, and at the end the thread's end-of-thread duties
    run (``_end_of_thread``)."""

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
            _end_of_thread(self)
            self._finish(None, exc)  # type: ignore[attr-defined]
            exc = None


def _end_of_thread(g: Any) -> None:
    """What C does when a thread's state is deleted, for the thread that ran
    in ``g`` (a green thread, or the root greenlet of a real one): release its
    ``_set_sentinel`` locks (3.10-3.12), drop its ``_local`` dicts, then mark
    its ``_ThreadHandle`` done (3.13+), last, as C does."""
    d = g.__dict__
    for lock in d.pop("_tgreen_sentinels", ()):
        if lock.locked():
            lock.release()
    handle = d.pop("_tgreen_handle", None)
    _clear_locals(g)
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
           handle: _ThreadHandle | None) -> int:
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
    if getcurrent() is hub.root and hub._runner is None and hub.loop.is_running():
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


start_new = start_new_thread


def _run_real_thread(function: Callable[..., Any], args: tuple, kwargs: dict,
                     handle: _ThreadHandle | None) -> None:
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
        _end_of_thread(g)


def exit() -> None:
    """End the current thread (greenlet) quietly."""
    raise SystemExit


exit_thread = exit


def _set_sentinel() -> LockType:
    """3.10-3.12: a lock released when the current green thread ends
    (``Thread.join`` waits on it)."""
    lock = _new_lock()
    g = getcurrent()
    if getattr(g, "_tgreen_thread", False):
        g.__dict__.setdefault("_tgreen_sentinels", []).append(lock)
    return lock


# -- 3.13+: thread handles ---------------------------------------------------------------

_NOT_STARTED, _RUNNING, _DONE = 0, 1, 2
# Non-daemon handles not done yet: what _shutdown() waits for.
_shutdown_handles: set[_ThreadHandle] = set()
# Every started handle not done yet: a forked child marks them done.
_live_handles: weakref.WeakSet[_ThreadHandle] = weakref.WeakSet()


class _ThreadHandle:
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


_ThreadHandle.__module__ = "_thread"


def start_joinable_thread(function: Callable[..., Any], handle: _ThreadHandle | None = None,
                          daemon: bool = True) -> Any:
    """3.13+: start ``function()`` in a new thread (a greenlet) and return
    its handle; ``handle``, if given, must be a new ``_ThreadHandle``. The
    interpreter's exit waits for threads started with ``daemon=False``."""
    if not callable(function):
        raise TypeError("thread function must be callable")
    if handle is None:
        handle = _ThreadHandle()
    elif not isinstance(handle, _ThreadHandle):
        if _c_start_joinable_thread is None or not isinstance(handle, _c_thread._ThreadHandle):
            raise TypeError("'handle' must be a _ThreadHandle")
        owner = getattr(function, "__self__", None)
        if getattr(owner, "_handle", None) is handle and not handle.ident:
            # A Thread made before patching and started after: it carries a
            # C handle, which only C can start and mark done. Give it a
            # green one, so that it starts green, as it does up to 3.12.
            handle = owner._handle = _ThreadHandle()
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


def _make_thread_handle(ident: int) -> _ThreadHandle:
    """3.13+: a running handle for a thread ``threading`` did not start (the
    main thread, a dummy thread)."""
    handle = _ThreadHandle()
    handle._set_running(ident)
    return handle


def _shutdown() -> None:
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


# -- which names this CPython's _thread gets -----------------------------------------------

# Names of the C ``_thread`` module kept as they are, on purpose (rule 4).
KEPT = frozenset({
    "TIMEOUT_MAX", "error", "stack_size", "get_native_id", "_ExceptHookArgs",
    # The main greenlet keeps the OS thread's ident, so C's answers hold:
    "_get_main_thread_ident", "_is_main_interpreter", "daemon_threads_allowed",
    # 3.14: reads the OS thread's name, which a green thread shares.
    "_get_name",
})


def green_names() -> dict[str, Any]:
    """The green replacement of each name this CPython's ``_thread`` has,
    except those in ``KEPT`` and those the patcher builds itself
    (``_excepthook``, ``interrupt_main``)."""
    green: dict[str, Any] = {
        "allocate_lock": allocate_lock,
        "allocate": allocate_lock,
        "LockType": LockType,
        "lock": LockType,  # 3.13+ alias of LockType
        "RLock": RLock,
        "get_ident": get_ident,
        "start_new_thread": start_new_thread,
        "start_new": start_new_thread,
        "_local": _local,
        "_count": _count,
        "exit": exit,
        "exit_thread": exit,
        "_set_sentinel": _set_sentinel,  # 3.10-3.12
        "start_joinable_thread": start_joinable_thread,  # 3.13+
        "_ThreadHandle": _ThreadHandle,
        "_make_thread_handle": _make_thread_handle,
        "_shutdown": _shutdown,
        "set_name": set_name,  # 3.14+
    }
    have = vars(_c_thread)
    return {name: obj for name, obj in green.items() if name in have}


# -- _local: one attribute dict per greenlet ----------------------------------------------

_MISSING = object()
_oga = object.__getattribute__


class _TypeInfo:
    """What a ``_local`` subclass's attributes are, computed once per class
    (like gevent's local, later changes to the class are not seen):
    ``data`` holds data descriptors (they win over the per-greenlet dict,
    ``__slots__`` among them), ``other`` every other class attribute."""

    __slots__ = ("data", "init", "other")

    def __init__(self, cls: type) -> None:
        self.data: dict[str, Any] = {}
        self.other: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            for name, attr in base.__dict__.items():
                self.data.pop(name, None)
                self.other.pop(name, None)
                tp = type(attr)
                if hasattr(tp, "__get__") and (hasattr(tp, "__set__") or hasattr(tp, "__delete__")):
                    self.data[name] = attr
                else:
                    self.other[name] = attr
        init = cls.__init__  # type: ignore[misc]  # the class's own, read off the class
        self.init = None if init is object.__init__ else init


_type_infos: weakref.WeakKeyDictionary[type, _TypeInfo]


class _LocalImpl:
    """Per-greenlet dicts of one ``_local`` object.

    ``dicts`` maps ``id(greenlet)`` to ``(weakref(greenlet), dict)``; the weak
    reference's callback drops the entry when the greenlet is collected, and a
    green thread drops its entries when it ends (``_clear_locals``). Each
    greenlet holds a weak reference back under ``key`` in its ``__dict__``, so
    that clearing a greenlet finds its locals.
    """

    __slots__ = ("__weakref__", "args", "dicts", "info", "key")

    def __init__(self, args: tuple, info: _TypeInfo) -> None:
        self.key = f"_tgreen_local.{id(self)}"
        self.dicts: dict[int, tuple] = {}
        self.args = args
        self.info = info

    def create_dict(self, g: Any) -> dict:
        idt = id(g)
        wrimpl = _weakref(self)

        def greenlet_gone(_: Any, idt: int = idt) -> None:
            impl = wrimpl()
            if impl is not None:
                impl.dicts.pop(idt, None)

        d: dict = {}
        self.dicts[idt] = (_weakref(g, greenlet_gone), d)
        try:
            g.__dict__[self.key] = wrimpl
        except AttributeError:
            pass
        return d


def _clear_locals(g: Any) -> None:
    """Drop every ``_local`` dict of greenlet ``g`` (its thread ended)."""
    gd = getattr(g, "__dict__", None)
    if not gd:
        return
    for key in [k for k in gd if k.startswith("_tgreen_local.")]:
        impl = gd.pop(key)()
        if impl is not None:
            impl.dicts.pop(id(g), None)


def _greenlet_dict(local: Any, impl: Any) -> dict:
    """The current greenlet's attribute dict of ``local`` (made on first use)."""
    g = getcurrent()
    entry = impl.dicts.get(id(g))
    if entry is not None and entry[0]() is g:
        return entry[1]
    return _new_greenlet_dict(local, impl, g)


def _new_greenlet_dict(self: Any, impl: _LocalImpl, g: Any) -> dict:
    d = impl.create_dict(g)
    init = impl.info.init
    if init is not None:
        args, kw = impl.args
        init(self, *args, **kw)
    return d


class _local:
    """Thread-local data where a "thread" is a greenlet (``threading.local``).

    Attribute lookup is done by hand against a per-greenlet dict (there is
    no ``__dict__`` swapping), with Python's usual precedence: data
    descriptors of the class, then the greenlet's dict, then other class
    attributes. ``__slots__`` of subclasses are shared, as with the C type.
    """

    __slots__ = ("__weakref__", "_local__impl")

    def __new__(cls, *args: Any, **kw: Any) -> _local:
        info = _type_infos.get(cls)
        if info is None:
            info = _type_infos[cls] = _TypeInfo(cls)
        if (args or kw) and info.init is None:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl((args, kw), info)
        object.__setattr__(self, "_local__impl", impl)
        impl.create_dict(getcurrent())  # __init__ follows, called by type()
        return self

    def __getattribute__(self, name: str) -> Any:
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        if name == "__dict__":
            return d
        info = impl.info
        attr = info.data.get(name, _MISSING)
        if attr is not _MISSING:
            return attr.__get__(self, type(self))
        try:
            return d[name]
        except KeyError:
            pass
        attr = info.other.get(name, _MISSING)
        if attr is not _MISSING:
            get = getattr(type(attr), "__get__", None)
            if get is not None:
                return get(attr, self, type(self))
            return attr
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        attr = impl.info.data.get(name, _MISSING)
        if attr is not _MISSING and hasattr(type(attr), "__set__"):
            attr.__set__(self, value)
            return
        d[name] = value

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        impl = _oga(self, "_local__impl")
        d = _greenlet_dict(self, impl)
        attr = impl.info.data.get(name, _MISSING)
        if attr is not _MISSING and hasattr(type(attr), "__delete__"):
            attr.__delete__(self)
            return
        try:
            del d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self) -> Any:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")


_local.__module__ = "_thread"
_local.__qualname__ = _local.__name__ = "_local"

_type_infos = weakref.WeakKeyDictionary()

_ = get_hub  # re-exported for tgreen.threading
