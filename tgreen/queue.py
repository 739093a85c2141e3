"""Green queues: ``Queue``, ``LifoQueue``, ``PriorityQueue``, ``JoinableQueue``.

Same API and exceptions as the stdlib ``queue`` module (``queue.Empty``,
``queue.Full``), but ``get``/``put`` block only the calling greenlet. ::

    from tgreen.queue import Queue
    q = Queue()
    q.put(1)
    assert q.get() == 1
"""

from __future__ import annotations

import heapq
from collections import deque
from queue import Empty, Full
from typing import Any

from .hub import Waiter, get_hub

__all__ = ["Queue", "LifoQueue", "PriorityQueue", "JoinableQueue", "SimpleQueue", "Empty", "Full"]


class _Waiters:
    """FIFO of blocked greenlets; ``wake_one`` schedules the oldest live one."""

    __slots__ = ("_q",)

    def __init__(self) -> None:
        self._q: deque[Waiter] = deque()

    def wait(self, timeout: float | None, what: str) -> bool:
        w = Waiter(get_hub())
        self._q.append(w)
        try:
            return w.get(timeout, what) is not _timed_out()
        finally:
            try:
                self._q.remove(w)
            except ValueError:
                pass

    def wake_one(self) -> None:
        if self._q:
            w = self._q.popleft()
            w.hub.loop.call_soon(w.switch, True)

    def __len__(self) -> int:
        return len(self._q)


def _timed_out() -> Any:
    from .hub import _TIMEDOUT

    return _TIMEDOUT


class Queue:
    """A FIFO queue; ``maxsize <= 0`` means unbounded."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init()
        self._getters = _Waiters()
        self._putters = _Waiters()
        self.unfinished_tasks = 0
        self._all_done: _Waiters = _Waiters()

    # storage, overridden by the subclasses
    def _init(self) -> None:
        self.queue: Any = deque()

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.popleft()

    def qsize(self) -> int:
        return len(self.queue)

    __len__ = qsize

    def empty(self) -> bool:
        return not self.qsize()

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; while full, block (up to ``timeout``) or raise ``queue.Full``."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if self.maxsize > 0:
            deadline = None if timeout is None else get_hub().loop.time() + timeout
            while self.qsize() >= self.maxsize:
                if not block:
                    raise Full
                remaining = None if deadline is None else deadline - get_hub().loop.time()
                if remaining is not None and remaining <= 0:
                    raise Full
                self._putters.wait(remaining, "Queue.put()")
        self._put(item)
        self.unfinished_tasks += 1
        self._getters.wake_one()

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item; while empty, block or raise ``queue.Empty``."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        deadline = None
        while not self.qsize():
            if not block:
                raise Empty
            if deadline is None and timeout is not None:
                deadline = get_hub().loop.time() + timeout
            remaining = None if deadline is None else deadline - get_hub().loop.time()
            if remaining is not None and remaining <= 0:
                raise Empty
            self._getters.wait(remaining, "Queue.get()")
        item = self._get()
        self._putters.wake_one()
        if self.qsize() and len(self._getters):
            self._getters.wake_one()
        return item

    def get_nowait(self) -> Any:
        return self.get(False)

    def peek(self, block: bool = True, timeout: float | None = None) -> Any:
        while not self.qsize():
            if not block or not self._getters.wait(timeout, "Queue.peek()"):
                raise Empty
        return self.queue[0]

    def task_done(self) -> None:
        if self.unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self.unfinished_tasks -= 1
        if not self.unfinished_tasks:
            while len(self._all_done):
                self._all_done.wake_one()

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item put has been marked ``task_done``."""
        if self.unfinished_tasks:
            self._all_done.wait(timeout, "Queue.join()")
        return not self.unfinished_tasks

    def __iter__(self) -> "Queue":
        return self

    def __next__(self) -> Any:
        return self.get()


JoinableQueue = Queue


class LifoQueue(Queue):
    def _init(self) -> None:
        self.queue = []

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()


class PriorityQueue(Queue):
    def _init(self) -> None:
        self.queue = []

    def _put(self, item: Any) -> None:
        heapq.heappush(self.queue, item)

    def _get(self) -> Any:
        return heapq.heappop(self.queue)


class SimpleQueue(Queue):
    """Unbounded FIFO with the ``queue.SimpleQueue`` API."""

    def __init__(self) -> None:
        super().__init__(0)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item)
