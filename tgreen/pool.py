"""``Pool``: at most N greenlets at once. ::

    from tgreen.pool import Pool
    pool = Pool(10)
    print(pool.map(pow, [2, 3, 4], [2, 2, 2]))   # [4, 9, 16]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .greenlet import Greenlet, GreenletExit, joinall, killall
from .lock import Semaphore
from .queue import Queue

__all__ = ["Group", "Pool"]


class Group:
    """A set of greenlets that can be joined or killed together."""

    def __init__(self) -> None:
        self.greenlets: set[Greenlet] = set()

    def __len__(self) -> int:
        return len(self.greenlets)

    def __contains__(self, g: Greenlet) -> bool:
        return g in self.greenlets

    def __iter__(self) -> Iterator[Greenlet]:
        return iter(list(self.greenlets))

    def add(self, g: Greenlet) -> None:
        self.greenlets.add(g)
        g.link(self._discard)

    def _discard(self, g: Greenlet) -> None:
        self.greenlets.discard(g)

    discard = _discard

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Greenlet:
        g = Greenlet(fn, *args, **kwargs)
        self.add(g)
        g.start()
        return g

    def join(self, timeout: float | None = None, raise_error: bool = False) -> bool:
        """Wait for every greenlet in the group; True if all finished."""
        pending = list(self.greenlets)
        done = joinall(pending, timeout=timeout, raise_error=raise_error)
        return len(done) == len(pending)

    def kill(self, exception: Any = GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        killall(list(self.greenlets), exception, block, timeout)

    def apply(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        return self.spawn(fn, *args, **(kwargs or {})).get()

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
        """Like the builtin ``map`` but concurrent; results in input order."""
        gs = [self.spawn(fn, *args) for args in zip(*iterables)]
        return [g.get() for g in gs]

    def imap_unordered(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Yield results as they complete."""
        results: Queue = Queue()
        count = 0
        for args in zip(*iterables):
            self.spawn(fn, *args).link(results.put)
            count += 1
        for _ in range(count):
            yield results.get().get()

    def imap(self, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Yield results in input order as they become available."""
        gs = [self.spawn(fn, *args) for args in zip(*iterables)]
        for g in gs:
            yield g.get()


class Pool(Group):
    """A Group that runs at most ``size`` greenlets at once; ``spawn`` blocks
    while it is full."""

    def __init__(self, size: int | None = None) -> None:
        super().__init__()
        if size is not None and size < 1:
            raise ValueError(f"tgreen: Pool size must be >= 1 or None, not {size!r}")
        self.size = size
        self._sem = Semaphore(size) if size else None

    def free_count(self) -> int:
        if self.size is None:
            return 1
        return max(0, self.size - len(self))

    def full(self) -> bool:
        return self.free_count() <= 0

    def wait_available(self, timeout: float | None = None) -> int:
        if self._sem is not None:
            self._sem.wait(timeout)
        return self.free_count()

    def add(self, g: Greenlet) -> None:
        if self._sem is not None:
            self._sem.acquire()
        super().add(g)

    def _discard(self, g: Greenlet) -> None:
        if g in self.greenlets:
            self.greenlets.discard(g)
            if self._sem is not None:
                self._sem.release()

    discard = _discard
