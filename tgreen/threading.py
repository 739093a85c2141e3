"""Green ``threading``: with ``patch_thread()``, threads are greenlets.

``tgreen.monkey.patch_all()`` (or ``patch_thread()``) calls ``__patch__`` here. ::

    import tgreen.monkey; tgreen.monkey.patch_all()
    import threading, time
    ts = [threading.Thread(target=time.sleep, args=(0.2,)) for _ in range(50)]
    for t in ts: t.start()
    for t in ts: t.join()          # about 0.2 s, not 10 s

Theory of operation
-------------------
The stdlib ``threading`` module is pure Python over ``_thread``. Like gevent,
we patch the ``_thread`` names it binds at import *in* the stdlib module
(``_THREADING_NAMES``: ``_start_new_thread``, ``_set_sentinel`` up to 3.12;
``_start_joinable_thread``, ``_ThreadHandle``, ``_make_thread_handle``,
``_thread_shutdown`` from 3.13; ``_allocate_lock``, ``get_ident``,
``_CRLock``, ``local`` on all; see ``tgreen._thread`` for how each CPython's
API is served), so ``Thread``, ``Condition``, ``Semaphore``, ``Barrier`` and
``Timer`` stay the stdlib's own classes and simply become green. A name the
stdlib binds from ``_thread`` that is in neither that table nor
``tgreen._thread.KEPT`` (a newer CPython) gets a warning, not silence.
Then the bookkeeping that assumed OS threads is fixed: the main thread keeps
its OS ident (the main greenlet answers ``get_ident()`` with it) and is given
a green end-of-thread marker (a "thread state" lock up to 3.12, a
``_ThreadHandle`` from 3.13) so green threads can ``join`` it, and
``_shutdown`` (run by the interpreter at exit) waits for non-daemon green
threads greenly, then for real ones.

The loop's own threads must stay real (monkey rule 2): asyncio's default
executor, its child watcher, Tornado's resolver threads. Rebinding their
``threading`` reference to a *snapshot* of the module is not enough here: the
snapshot's ``Thread`` is the same class, whose methods read the (patched)
globals of the real module. So ``__patch__`` first executes ``threading.py``
a second time into a private, never-patched module ("pristine") and makes it
the snapshot ``tgreen._originals`` hands out; monkey then points asyncio,
Tornado and ``concurrent.futures`` at it. Two exceptions on purpose:

* ``concurrent.futures._base`` (Futures, ``wait``, ``as_completed``) uses the
  green primitives. They are safe from real threads too (see
  ``tgreen._thread``), and a greenlet calling ``future.result()`` must not
  block the loop's thread.
* ``concurrent.futures.ThreadPoolExecutor`` is replaced by a subclass whose
  instances run their workers as greenlets, except instances created by the
  loop machinery itself (asyncio's ``run_in_executor(None)``, Tornado), which
  keep real threads.

Rules of this file:

1. The stdlib classes are not copied or subclassed to make them green; only
   the ``_thread`` primitives under them change. Two exceptions, each for a
   reason given where it is defined: ``_DummyThread`` (must forget dead
   greenlets) and ``Event`` (a wait/set round trip at a quarter of the cost).
2. Nothing the loop machinery uses may come from the patched module.
"""

from __future__ import annotations

import sys
import types
import weakref
from typing import Any

from greenlet import getcurrent

from . import _originals
from . import _thread as _gthread
from . import event as _event
from ._locks import RLock
from ._locks import allocate_lock as Lock
from ._threadlocal import local
from ._threads import ThreadHandle, get_ident, main_os_ident, make_thread_handle
from .hub import get_hub

__all__ = ["Lock", "RLock", "ThreadPoolExecutor", "get_ident", "local", "pristine_threading"]

_c_get_ident = _originals.get("_thread", "get_ident")
_c_allocate_lock = _originals.get("_thread", "allocate_lock")

_pristine: types.ModuleType | None = None
_patched = False
_main_real_tstate_lock: Any = None

# Modules whose executors must keep real threads (see the module docstring).
_LOOP_MACHINERY = ("asyncio", "tornado", "uvloop", "concurrent")


def pristine_threading() -> types.ModuleType:
    """A private copy of ``threading`` that is never patched: its threads are
    real OS threads whatever happens to the stdlib module."""
    global _pristine
    if _pristine is not None:
        return _pristine
    import importlib.util

    spec = importlib.util.find_spec("threading")
    assert spec is not None and spec.loader is not None
    code = spec.loader.get_code("threading")  # type: ignore[attr-defined]
    mod = types.ModuleType("threading", _originals.module("threading").__doc__)
    mod.__file__ = spec.origin
    # threading.py binds the _thread functions at import; give it the
    # original ones even if _thread is patched already. Its _MainThread must
    # not take over the C thread-state sentinel of the running thread (the
    # stdlib's main thread owns that one), so it gets a plain lock; threads it
    # starts later get real sentinels.
    fake = types.ModuleType("_thread")
    fake.__dict__.update(vars(_originals.module("_thread")))
    real_set_sentinel = getattr(fake, "_set_sentinel", None)  # 3.10-3.12
    if real_set_sentinel is not None:
        fake._set_sentinel = _c_allocate_lock  # type: ignore[attr-defined]
    saved = sys.modules.get("_thread")
    sys.modules["_thread"] = fake
    try:
        exec(code, mod.__dict__)  # noqa: S102 - the stdlib's own code
    finally:
        if saved is not None:
            sys.modules["_thread"] = saved
    # Its main thread is the process's main thread whichever thread runs
    # this, and its shutdown (called by ours) must not wait for that lock.
    # (From 3.13 its main thread has a C handle that nothing waits for.)
    main = mod._main_thread
    if real_set_sentinel is not None:
        mod._set_sentinel = real_set_sentinel  # type: ignore[attr-defined]
        mod._shutdown_locks.discard(main._tstate_lock)
    real_main = _originals.get("threading", "main_thread")()
    if main._ident != real_main.ident:
        mod._active.pop(main._ident, None)
        main._ident = real_main.ident
        main._native_id = getattr(real_main, "_native_id", None)
        if real_set_sentinel is None:
            main._handle = fake._make_thread_handle(main._ident)
        mod._active[main._ident] = main
    mod.__tgreen_original__ = True  # type: ignore[attr-defined]
    _pristine = mod
    return mod


# -- the green ThreadPoolExecutor -------------------------------------------------------

import concurrent.futures._base as _cf_base  # noqa: E402 - below the module it needs
import concurrent.futures.thread as _cf_thread  # noqa: E402

_RealThreadPoolExecutor = _cf_thread.ThreadPoolExecutor


def _from_loop_machinery(frame: Any) -> bool:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return any(name == p or name.startswith(p + ".") for p in _LOOP_MACHINERY)


class ThreadPoolExecutor(_RealThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` whose workers are green threads.

    Instances created by asyncio, Tornado or ``concurrent.futures`` itself
    (``loop.run_in_executor(None, ...)``, Tornado's resolvers) behave exactly
    like the stdlib's and keep real OS threads.
    """

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Any = None, initargs: tuple = ()) -> None:
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        # uvloop's run_in_executor is compiled code (no frame of its own):
        # its default executor is known by its name.
        self._tgreen = not (_from_loop_machinery(sys._getframe(1))
                            or thread_name_prefix in ("asyncio", "uvloop"))
        if self._tgreen:
            from .queue import SimpleQueue

            std = _std_threading()
            self._work_queue = SimpleQueue()  # type: ignore[assignment]  # the green one
            self._idle_semaphore = std.Semaphore(0)
            self._shutdown_lock = Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if not self._tgreen:
            return super().submit(fn, *args, **kwargs)
        with self._shutdown_lock:
            # The module's lock is a real one: hold it only where nothing can
            # switch (starting a green thread switches).
            with _cf_thread._global_shutdown_lock:
                if self._broken:
                    raise _cf_thread.BrokenThreadPool(self._broken)
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if _cf_thread._shutdown:
                    raise RuntimeError("cannot schedule new futures after interpreter shutdown")
                f: _cf_base.Future[Any] = _cf_base.Future()
                w = _cf_thread._WorkItem(f, fn, args, kwargs)
                self._work_queue.put(w)
            self._adjust_thread_count()
            return f

    submit.__doc__ = _cf_base.Executor.submit.__doc__

    def _adjust_thread_count(self) -> None:
        if not self._tgreen:
            return super()._adjust_thread_count()
        if self._idle_semaphore.acquire(timeout=0):
            return

        def weakref_cb(_: Any, q: Any = self._work_queue) -> None:
            q.put(None)

        num_threads = len(self._threads)
        if num_threads < self._max_workers:
            name = f"{self._thread_name_prefix or self}_{num_threads}"
            t = _std_threading().Thread(
                name=name, target=_cf_thread._worker,
                args=(weakref.ref(self, weakref_cb), self._work_queue,
                      self._initializer, self._initargs))
            t.start()
            self._threads.add(t)  # type: ignore[attr-defined]  # a set (typeshed: AbstractSet)
            _cf_thread._threads_queues[t] = self._work_queue  # type: ignore[index]  # a WeakKeyDictionary



def _std_threading() -> types.ModuleType:
    """The stdlib ``threading`` module object itself (patched or not)."""
    return sys.modules["threading"]


class _GreenThreadingView(types.ModuleType):
    """What ``concurrent.futures._base`` sees as ``threading``: the patched
    stdlib module, under a name monkey's loop-module rebinding leaves alone."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_std_threading(), name)


# -- Event -------------------------------------------------------------------------------


class Event(_event.Event):
    """``threading.Event``: ``tgreen.event.Event`` (which see) with the
    stdlib's repr, deprecation warning and ``_cond`` attribute."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = Lock()  # compatibility: the stdlib's has a Condition here

    def __repr__(self) -> str:
        cls = self.__class__
        status = "set" if self._flag else "unset"
        return f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}: {status}>"

    def _at_fork_reinit(self) -> None:
        self._cond._at_fork_reinit()
        super()._at_fork_reinit()

    def isSet(self) -> bool:
        """Deprecated alias of ``is_set()``."""
        import warnings

        warnings.warn("isSet() is deprecated, use is_set() instead",
                      DeprecationWarning, stacklevel=2)
        return self._flag


Event.__module__ = "threading"


# -- patching ----------------------------------------------------------------------------


def _make_dummy_thread_class(std: types.ModuleType) -> type:
    base = std._DummyThread

    class _DummyThread(base):  # type: ignore[misc, valid-type]
        """A greenlet that ``threading`` did not start (a ``tgreen.spawn``
        greenlet, a real thread's root greenlet) asking for ``current_thread()``.

        The stdlib keeps such objects in ``_active`` forever; we drop the entry
        when the greenlet ends, or ``_active`` grows with every greenlet.
        """

        def __init__(self) -> None:
            super().__init__()
            ident = self._ident
            active = std._active
            me = weakref.ref(self)

            def forget(_: Any = None) -> None:
                t = me()
                if t is not None and isinstance(getattr(t, "_handle", None), ThreadHandle):
                    t._handle._set_done()  # 3.13+: is_alive() turns False
                if active.get(ident) is t:
                    active.pop(ident, None)

            g = getcurrent()
            if getattr(g, "_tgreen_thread", False):
                # Started by _thread.start_new_thread: a "foreign thread" in
                # stdlib terms, whose dummy stays, as it does for a C thread.
                return
            self._tgreen_ref = weakref.ref(g, forget)
            link = getattr(g, "link", None)
            if link is not None and hasattr(g, "hub"):
                link(forget)

    _DummyThread.__module__ = base.__module__
    return _DummyThread


def _make_current_thread(std: types.ModuleType, pristine: types.ModuleType) -> Any:
    active = std._active

    def current_thread() -> Any:
        """Return the current Thread object: the green thread running, or the
        real thread's own object in a thread the loop machinery started."""
        try:
            return active[get_ident()]
        except KeyError:
            pass
        if getcurrent().parent is None:
            # A real thread the loop machinery started: its own Thread object.
            t = pristine._active.get(_c_get_ident())
            if t is not None and t is not pristine._main_thread:
                return t
        return std._DummyThread()

    current_thread.__module__ = "threading"
    return current_thread


def _make_excepthook(std: types.ModuleType) -> Any:
    from traceback import print_exception

    def excepthook(args: Any, /) -> None:
        """Handle an exception that ended a thread: print it to stderr.

        The C hook names a thread-less report by the OS thread's ident; this
        one by ``threading.get_ident()``, the green thread's. A
        KeyboardInterrupt that ended a green thread goes to the main greenlet.
        """
        if args.exc_type is SystemExit:
            return
        if (isinstance(args.exc_type, type) and issubclass(args.exc_type, KeyboardInterrupt)
                and _c_get_ident() == main_os_ident and getcurrent().parent is not None):
            # Ctrl-C landed in a green thread because it happened to run; with
            # OS threads it would have gone to the main thread. Send it there.
            get_hub().raise_in_main(args.exc_value)
            return
        if sys is not None and sys.stderr is not None:
            stderr = sys.stderr
        elif args.thread is not None:
            stderr = args.thread._stderr
            if stderr is None:
                return
        else:
            return
        name = args.thread.name if args.thread is not None else get_ident()
        print(f"Exception in thread {name}:", file=stderr, flush=True)
        print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=stderr)
        stderr.flush()

    excepthook.__module__ = "threading"
    return excepthook


def _make_interrupt_main(hub_of: Any) -> Any:
    original = _originals.get("_thread", "interrupt_main")
    main_os = main_os_ident

    def interrupt_main(signum: int = 2, /) -> None:
        """Simulate the arrival of signal ``signum`` in the main thread.

        From a green thread, the signal is raised in the loop of the main
        thread's hub, which hands KeyboardInterrupt to the greenlet running
        that loop (the main greenlet, when it waits), not to the caller.
        """
        if _c_get_ident() == main_os and getcurrent().parent is not None:
            import signal

            if not 1 <= signum < signal.NSIG:
                raise ValueError("signal number out of range")
            hub_of().loop.call_soon(original, signum)
            return
        original(signum)

    interrupt_main.__module__ = "_thread"
    return interrupt_main


def _make_shutdown(std: types.ModuleType, pristine: types.ModuleType) -> Any:
    from .hub import LoopExit

    handles = "_thread_shutdown" in std.__dict__  # 3.13+
    stdlib_shutdown = std._shutdown

    def wait_for_green_threads() -> None:
        main = std._main_thread
        if handles:
            # The stdlib's own _shutdown: its _main_thread._handle and
            # _thread_shutdown are green ones by now.
            stdlib_shutdown()
            return
        if main._is_stopped:
            return
        std.__dict__["_SHUTTING_DOWN"] = True
        for atexit_call in reversed(std._threading_atexits):
            atexit_call()
        if main.ident == get_ident():
            tlock = main._tstate_lock
            if tlock is not None and tlock.locked():
                tlock.release()
            main._stop()
        while True:
            with std._shutdown_locks_lock:
                locks = list(std._shutdown_locks)
                std._shutdown_locks.clear()
            if not locks:
                break
            for lock in locks:
                lock.acquire()
                lock.release()

    def _shutdown() -> None:
        """Wait until every non-daemon green thread has finished (the
        interpreter calls this at exit), then do the same for real threads."""
        try:
            wait_for_green_threads()
        except LoopExit:
            # A non-daemon green thread waits for something nothing can
            # do any more (its loop was closed, say). Real threads would
            # hang the exit here; say so and exit.
            main = std._main_thread
            left = [t for t in std._enumerate() if not t.daemon and t is not main]
            try:
                sys.stderr.write(f"tgreen: exiting without {len(left)} non-daemon green "
                                 f"thread(s) that can never finish: {left!r}\n")
            except Exception:  # noqa: BLE001 - stderr may be gone
                pass
        pristine._shutdown()

    _shutdown.__module__ = "threading"
    return _shutdown


# What the stdlib ``threading`` binds from ``_thread`` at import, by its own
# name there, and the ``_thread`` name whose green version replaces it. Only
# the names this CPython's threading has are patched (see tgreen._thread for
# which version has which).
_THREADING_NAMES = {
    "_start_new_thread": "start_new_thread",  # 3.10-3.12
    "_set_sentinel": "_set_sentinel",  # 3.10-3.12
    "_start_joinable_thread": "start_joinable_thread",  # 3.13+
    "_ThreadHandle": "_ThreadHandle",  # 3.13+
    "_make_thread_handle": "_make_thread_handle",  # 3.13+
    "_thread_shutdown": "_shutdown",  # 3.13+
    "_LockType": "LockType",  # 3.13+
    "_set_name": "set_name",  # 3.14+
    "_allocate_lock": "allocate_lock",
    "get_ident": "get_ident",
    "_CRLock": "RLock",
    "local": "_local",
}


def _threading_names(std: types.ModuleType) -> dict[str, Any]:
    """The green object for each ``_thread`` name this CPython's threading
    bound, and a warning for any it bound that tgreen does not know."""
    green = _gthread.green_names()
    have = std.__dict__
    out = {alias: green[name] for alias, name in _THREADING_NAMES.items()
           if alias in have and have[alias] is not None and name in green}
    # threading.Lock: allocate_lock up to 3.12, the lock type from 3.13.
    out["Lock"] = _gthread.LockType if have.get("Lock") is have.get("_LockType", ()) \
        else _gthread.allocate_lock
    c_thread = _originals.module("_thread")
    by_id = {id(v): k for k, v in vars(c_thread).items()
             if callable(v) and not k.startswith("__")}
    for alias, value in have.items():
        name = by_id.get(id(value))
        if name is not None and alias not in out and name not in _gthread.KEPT \
                and name not in ("_excepthook", "interrupt_main") and alias != "Lock":
            import warnings

            from .monkey import MonkeyPatchWarning

            warnings.warn(f"tgreen: threading.{alias} is _thread.{name}, which tgreen does "
                          f"not know on Python {sys.version_info[0]}.{sys.version_info[1]}; "
                          "it stays the C one", MonkeyPatchWarning, stacklevel=3)
    return out


def __patch__(patch: Any) -> None:
    """Patch ``_thread``, ``threading``, ``_threading_local`` and
    ``concurrent.futures`` (called by ``tgreen.monkey.patch_thread``)."""
    global _patched
    if _patched:
        return
    import _thread as std_thread  # noqa: F401 - make sure it is loaded
    import threading as std

    pristine = pristine_threading()
    # The snapshot monkey hands the loop machinery (rule 2) and get_original.
    _originals._frozen["threading"] = pristine

    green_thread = _gthread.green_names()
    green_threading = _threading_names(std)
    shutdown = _make_shutdown(std, pristine)
    excepthook = _make_excepthook(std)
    green_thread["_excepthook"] = excepthook
    green_thread["interrupt_main"] = _make_interrupt_main(get_hub)
    patch("_thread", green_thread)
    if "_thread_local_info" in std.__dict__:
        # 3.13+: where a dummy thread parks the object whose deletion, when
        # its thread ends, drops it from _active: per greenlet, then.
        green_threading["_thread_local_info"] = local()
    patch("threading", {
        **green_threading,
        "_DummyThread": _make_dummy_thread_class(std),
        "current_thread": _make_current_thread(std, pristine),
        "_shutdown": shutdown,
        "excepthook": excepthook,
        "__excepthook__": excepthook,
        "Event": Event,
    })
    import _threading_local

    patch("_threading_local", {"local": local})

    _green_main_thread_end(std)
    _fix_logging_locks()

    # concurrent.futures: Futures green, executors green unless the loop's.
    _cf_thread.threading = pristine  # type: ignore[attr-defined]
    _cf_base.threading = _GreenThreadingView("threading")  # type: ignore[attr-defined]
    patch("concurrent.futures", {"ThreadPoolExecutor": ThreadPoolExecutor})
    _patched = True
    del _threading_local


def _green_main_thread_end(std: types.ModuleType) -> None:
    """The main thread's C end marker (the thread-state lock up to 3.12, the
    C ``_ThreadHandle`` from 3.13) only turns at the very end of the
    interpreter; a green thread joining the main thread must wait on
    something green, which our ``_shutdown`` marks. (The main thread keeps
    its ident: the main greenlet answers ``get_ident()`` with the OS one.)"""
    global _main_real_tstate_lock
    main = std._main_thread
    if _main_real_tstate_lock is not None:
        return
    if "_thread_shutdown" in std.__dict__:  # 3.13+
        _main_real_tstate_lock = main._handle
        main._handle = make_thread_handle(main._ident)
        return
    if main._tstate_lock is None:
        return
    _main_real_tstate_lock = main._tstate_lock
    with std._shutdown_locks_lock:
        std._shutdown_locks.discard(_main_real_tstate_lock)
    tlock = Lock()
    tlock.acquire()
    main._tstate_lock = tlock


def _fix_logging_locks() -> None:
    """logging's locks were created before patching: real locks are reentrant
    for every greenlet of a thread, so they would not exclude one another."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    lock = getattr(logging, "_lock", None)
    if lock is not None and not isinstance(lock, RLock):
        logging._lock = RLock()  # type: ignore[attr-defined]
    for wr in list(getattr(logging, "_handlerList", ())):
        handler = wr() if callable(wr) else wr
        if handler is not None and getattr(handler, "lock", None) is not None \
                and not isinstance(handler.lock, RLock):
            handler.lock = RLock()
