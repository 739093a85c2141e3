"""``WaitQueue``: the one way a tgreen primitive waits, for greenlets and OS threads alike.

Locks, semaphores, conditions, events, queues and thread handles all wait
the same way: a caller that cannot proceed *parks* in a ``WaitQueue`` (a
FIFO), and whoever changes the state wakes the oldest parked caller (or all
of them). The shape is trio's ``ParkingLot``: the queue knows nothing of the
resource, only of who waits for it; the primitive says what "available"
means. ::

    wq = WaitQueue()
    # waiting side
    ok = wq.park_until(take, available, timeout, "acquiring a lock")
    # releasing side
    wq.wake_one()          # or wake_all()

How a caller parks depends on who it is:

* a greenlet in a thread that has a hub parks a ``GreenParker`` (a hub
  ``Waiter``) and switches to the loop; the wake-up is a loop callback on
  *its* hub's loop (``call_soon_threadsafe`` from another thread);
* a plain OS thread (an executor worker, a ``tgreen.threadpool`` worker)
  parks a ``RealParker``, a real lock it blocks on.

So a queue may be shared by greenlets of several threads and plain threads:
the objects patched code creates (a logging handler's lock, a pool's queue,
a ``concurrent.futures.Future``) routinely are.

Rules of this file:

1. Never park without re-checking the state after registering: a release in
   another OS thread may happen between the failed try and the registration.
2. A waiter that was chosen by a wake-up (popped from the FIFO) but leaves
   without the resource (timeout, kill) passes the wake-up on, or it is lost.
3. No LoopExit while another OS thread could still wake a parked greenlet
   (``GreenParker.block`` counts it as a pending job, see ``machinery_threads``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from . import _originals
from .hub import TIMEDOUT, Waiter, current_hub_if_any

__all__ = ["GreenParker", "RealParker", "WaitQueue", "machinery_threads"]

_c_allocate_lock = _originals.get("_thread", "allocate_lock")
_c_get_ident = _originals.get("_thread", "get_ident")
_c_count = _originals.get("_thread", "_count")
_monotonic = _originals.get("time", "monotonic")
_main_os_ident = _originals.get("threading", "main_thread")().ident


def machinery_threads() -> int:
    """Real OS threads tgreen runs for itself: tgreen.threadpool's workers
    and the blocking monitor's watchdog. They run no user code of their own
    (a job given to the pool is counted by the hub while it runs), so they
    can never release a lock a greenlet waits for."""
    from . import threadpool

    mon = sys.modules.get("tgreen.monitor")
    return threadpool.live_workers + (1 if mon is not None and mon.watchdog_running() else 0)


class GreenParker(Waiter):
    """A ``Waiter`` with the parker interface (``block``/``wake``)."""

    __slots__ = ()

    def block(self, timeout: float | None, what: str) -> bool:
        """Park until woken (True) or ``timeout`` passes (False)."""
        hub = self.hub
        if _c_count() > machinery_threads() or hub.thread_ident != _main_os_ident:
            # Another OS thread may wake us, so a loop with nothing to do
            # is not stuck forever: no LoopExit while we wait.
            hub.pending_jobs += 1
            try:
                return self.get(timeout, what) is not TIMEDOUT
            finally:
                hub.pending_jobs -= 1
        return self.get(timeout, what) is not TIMEDOUT

    def wake(self) -> None:
        hub = self.hub
        if hub.thread_ident == _c_get_ident():
            hub.loop.call_soon(self.switch, True)
        else:
            try:
                hub.loop.call_soon_threadsafe(self.switch, True)
            except RuntimeError:
                pass  # its loop is closed: nobody is left to wake


class RealParker:
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

    def register(self) -> GreenParker | RealParker:
        hub = current_hub_if_any()
        p = RealParker() if hub is None else GreenParker(hub)
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
        (for passing a wake-up on). Rules 1 and 2 above live here."""
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
