"""Green queues: ``Queue``, ``LifoQueue``, ``PriorityQueue``, ``SimpleQueue``.

Same API, attributes and exceptions as the stdlib ``queue`` module
(``queue.Empty``, ``queue.Full``, ``mutex``, ``not_empty``, ``not_full``,
``all_tasks_done``, overridable ``_init``/``_qsize``/``_put``/``_get``), but a
blocked ``get``/``put`` parks only the calling greenlet. ``patch_queue()``
puts them in the stdlib module. ::

    from tgreen.queue import Queue
    q = Queue()
    q.put(1)
    assert q.get() == 1

They are safe to share with real OS threads (an asyncio executor worker, a
``tgreen.threadpool`` job): waiting is done the ``tgreen._thread`` way, a green
park in a thread with a hub and a real block elsewhere, and wake-ups cross
threads with ``call_soon_threadsafe``. The mutex is never held while a caller
is parked, so within one thread it is never contended.

C's ``_queue.SimpleQueue`` blocks the OS thread in ``get()``, so green
producers in that thread could never run: patching puts the green
``SimpleQueue`` in ``_queue`` as well as in ``queue``, and a meta path finder
gives every *fresh* import of ``_queue`` (``import_fresh_module``, a
``queue.py`` executed again) the green class too, once the C module has
loaded (with the one ``queue.Empty`` it raises). Importing with ``_queue``
blocked still gets the pure-Python one.

``shutdown(immediate=False)`` and ``ShutDown`` are 3.13's API (the stdlib's
``queue.ShutDown`` where it exists), offered on every version.

Extensions over the stdlib: ``join(timeout)`` returns whether all tasks are
done, ``peek()``, ``len(q)``, iteration (``for item in q`` gets forever), and
``JoinableQueue`` as an alias of ``Queue``. A queue is always true, even
empty (``__bool__``), like the stdlib's which has no ``__len__``.
"""

from __future__ import annotations

import heapq
import sys
import types
from collections import deque
from collections.abc import Callable
from queue import Empty, Full
from time import monotonic as _time
from typing import Any

from . import _originals
from ._locks import LockType, allocate_lock
from ._waitqueue import WaitQueue

_c_get_ident = _originals.get("_thread", "get_ident")

__all__ = ["Empty", "Full", "JoinableQueue", "LifoQueue", "PriorityQueue", "Queue", "SimpleQueue"]

if sys.version_info >= (3, 13):
    from queue import ShutDown
else:
    class ShutDown(Exception):
        """Raised by put/get on a queue that was shut down (3.13's API)."""
__all__.append("ShutDown")
__implements__ = ["Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"]


class _Condition:
    """A condition variable on a queue's mutex whose waiters park green or real.

    Waiters register while holding the mutex and notifiers hold it too, so
    no wake-up falls between a check and a park. A waiter that was notified
    but leaves with an exception (killed, ``Timeout``) passes the notification
    on; one that timed out re-checks its predicate, as every caller does.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: LockType) -> None:
        self._lock = lock
        self._waiters = WaitQueue()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None, what: str = "waiting on a queue") -> bool:
        """Release the mutex, park until notified or ``timeout``, re-acquire."""
        p = self._waiters.register()
        self._lock.release()
        ok = False
        try:
            woken = p.block(timeout, what)
            ok = True
            return woken
        finally:
            self._lock.acquire()
            if not self._waiters.unregister(p) and not ok:
                self._waiters.wake_one()

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = _time() + waittime
                else:
                    waittime = endtime - _time()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        for _ in range(n):
            if not self._waiters.wake_one():
                break

    def notify_all(self) -> None:
        self._waiters.wake_all()

    notifyAll = notify_all


class Queue:
    """A FIFO queue; ``maxsize <= 0`` means unbounded."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init(maxsize)
        self.mutex = allocate_lock()
        self.not_empty = _Condition(self.mutex)
        self.not_full = _Condition(self.mutex)
        self.all_tasks_done = _Condition(self.mutex)
        self.unfinished_tasks = 0
        self.is_shutdown = False

    __class_getitem__: Any = classmethod(types.GenericAlias)

    # storage; subclasses override these four, as with the stdlib
    def _init(self, maxsize: int) -> None:
        self.queue: Any = deque()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.popleft()

    def _peek(self) -> Any:
        return self.queue[0]

    def task_done(self) -> None:
        """Mark one item taken with ``get`` as processed (for ``join``)."""
        with self.all_tasks_done:
            unfinished = self.unfinished_tasks - 1
            if unfinished <= 0:
                if unfinished < 0:
                    raise ValueError("task_done() called too many times")
                self.all_tasks_done.notify_all()
            self.unfinished_tasks = unfinished

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item put has been marked ``task_done``; with a
        ``timeout``, return False if that did not happen in time."""
        with self.all_tasks_done:
            endtime = None if timeout is None else _time() + timeout
            while self.unfinished_tasks:
                remaining = None if endtime is None else endtime - _time()
                if remaining is not None and remaining <= 0:
                    return False
                self.all_tasks_done.wait(remaining, "Queue.join()")
            return True

    def qsize(self) -> int:
        with self.mutex:
            return self._qsize()

    def __len__(self) -> int:
        return self.qsize()

    def __bool__(self) -> bool:
        return True

    def empty(self) -> bool:
        with self.mutex:
            return not self._qsize()

    def full(self) -> bool:
        with self.mutex:
            return 0 < self.maxsize <= self._qsize()

    # put() and get() take the mutex inline (the hybrid lock's own fast path)
    # and skip notify() calls nobody waits for: a put+get pair costs a
    # fraction of going through the _Condition methods.

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; while full, block (up to ``timeout``) or raise ``queue.Full``."""
        m = self.mutex
        if m._block.acquire(False):
            m._os_owner = _c_get_ident()
        else:
            m._acquire_contended(None)
        try:
            if self.is_shutdown:
                raise ShutDown
            if self.maxsize > 0:
                if not block:
                    if self._qsize() >= self.maxsize:
                        raise Full
                elif timeout is None:
                    while self._qsize() >= self.maxsize:
                        self.not_full.wait(None, "Queue.put()")
                        if self.is_shutdown:
                            raise ShutDown
                elif timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                else:
                    endtime = _time() + timeout
                    while self._qsize() >= self.maxsize:
                        remaining = endtime - _time()
                        if remaining <= 0.0:
                            raise Full
                        self.not_full.wait(remaining, "Queue.put()")
                        if self.is_shutdown:
                            raise ShutDown
            self._put(item)
            self.unfinished_tasks += 1
            waiters = self.not_empty._waiters
            if waiters:
                waiters.wake_one()
        finally:
            m._block.release()
            if m._waiters:
                m._waiters.wake_one()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item; while empty, block or raise ``queue.Empty``."""
        m = self.mutex
        if m._block.acquire(False):
            m._os_owner = _c_get_ident()
        else:
            m._acquire_contended(None)
        try:
            if self.is_shutdown and not self._qsize():
                raise ShutDown
            if not block:
                if not self._qsize():
                    raise Empty
            elif timeout is None:
                while not self._qsize():
                    self.not_empty.wait(None, "Queue.get()")
                    if self.is_shutdown and not self._qsize():
                        raise ShutDown
            elif timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            else:
                endtime = _time() + timeout
                while not self._qsize():
                    remaining = endtime - _time()
                    if remaining <= 0.0:
                        raise Empty
                    self.not_empty.wait(remaining, "Queue.get()")
                    if self.is_shutdown and not self._qsize():
                        raise ShutDown
            item = self._get()
            waiters = self.not_full._waiters
            if waiters:
                waiters.wake_one()
            return item
        finally:
            m._block.release()
            if m._waiters:
                m._waiters.wake_one()

    def shutdown(self, immediate: bool = False) -> None:
        """Make later puts raise ``ShutDown``, and gets once the queue is
        empty (3.13's API); ``immediate`` empties it first, ending ``join``.
        Blocked callers wake and raise."""
        with self.mutex:
            self.is_shutdown = True
            if immediate:
                while self._qsize():
                    self._get()
                    if self.unfinished_tasks > 0:
                        self.unfinished_tasks -= 1
                self.all_tasks_done.notify_all()
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def peek(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next item ``get`` would return, without removing it."""
        with self.not_empty:
            endtime = None if timeout is None else _time() + timeout
            while not self._qsize():
                if self.is_shutdown:
                    raise ShutDown
                remaining = None if endtime is None else endtime - _time()
                if not block or (remaining is not None and remaining <= 0):
                    raise Empty
                self.not_empty.wait(remaining, "Queue.peek()")
            # Whoever was woken for this item may still take it.
            if len(self.not_empty._waiters):
                self.not_empty.notify()
            return self._peek()

    def __iter__(self) -> Queue:
        return self

    def __next__(self) -> Any:
        return self.get()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} maxsize={self.maxsize!r} qsize={self._qsize()}>"


JoinableQueue = Queue


class LifoQueue(Queue):
    """Last in, first out."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()

    def _peek(self) -> Any:
        return self.queue[-1]


class PriorityQueue(Queue):
    """Lowest first (``heapq``); put ``(priority, item)`` tuples."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _put(self, item: Any) -> None:
        heapq.heappush(self.queue, item)

    def _get(self) -> Any:
        return heapq.heappop(self.queue)


class SimpleQueue:
    """Unbounded FIFO with the ``queue.SimpleQueue`` API (no task tracking).

    ``put`` never blocks and takes no lock, so it may be called from a loop
    callback, a signal handler or a ``__del__``.
    """

    __slots__ = ("__weakref__", "_getters", "_queue")

    def __init__(self) -> None:
        self._queue: deque[Any] = deque()
        self._getters = WaitQueue()

    __class_getitem__: Any = classmethod(types.GenericAlias)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; ``block`` and ``timeout`` are accepted for compatibility."""
        self._queue.append(item)
        if self._getters:
            self._getters.wake_one()

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item; while empty, block or raise ``queue.Empty``."""
        q = self._queue
        if block and timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        try:
            return q.popleft()
        except IndexError:
            if not block:
                raise Empty from None
        getters = self._getters
        endtime = None if timeout is None else _time() + timeout
        while True:
            p = getters.register()
            try:
                item = q.popleft()  # re-check after registering
            except IndexError:
                pass
            else:
                if not getters.unregister(p) and q:
                    getters.wake_one()
                return item
            remaining = None if endtime is None else endtime - _time()
            if remaining is not None and remaining <= 0:
                if not getters.unregister(p) and q:
                    getters.wake_one()
                raise Empty
            try:
                p.block(remaining, "SimpleQueue.get()")
            except BaseException:
                if not getters.unregister(p) and q:
                    getters.wake_one()
                raise
            getters.unregister(p)
            try:
                return q.popleft()
            except IndexError:
                continue  # someone else took it: park again

    def get_nowait(self) -> Any:
        return self.get(False)

    def empty(self) -> bool:
        return not self._queue

    def qsize(self) -> int:
        return len(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return True


class _GreenCQueueLoader:
    """Loads ``_queue`` with the real loader, then puts the green class in."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.SimpleQueue = SimpleQueue
        # The green class raises the one queue.Empty; a fresh queue.py takes
        # its Empty from here, so `except c_queue.Empty` catches it.
        module.Empty = Empty


class _GreenCQueueFinder:
    """On ``sys.meta_path`` once patched: a fresh ``_queue`` gets the green
    ``SimpleQueue`` (module docstring). Finds nothing else."""

    @classmethod
    def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "_queue":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _GreenCQueueLoader):
                    spec.loader = _GreenCQueueLoader(spec.loader)
                return spec
        return None


def __patch__(patch: Callable[[str, dict[str, Any]], None]) -> None:
    """``patch_queue()``: the green classes in ``queue`` and ``_queue``."""
    patch("queue", {n: globals()[n] for n in __implements__})
    try:
        import _queue  # noqa: F401 - patched below when the build has it
    except ImportError:
        return
    patch("_queue", {"SimpleQueue": SimpleQueue})
    if _GreenCQueueFinder not in sys.meta_path:
        sys.meta_path.insert(0, _GreenCQueueFinder)
