"""The blocking detector: a watchdog thread that reports code which holds the
event loop's thread for longer than a threshold. ::

    import tgreen.monitor
    tgreen.monitor.start(threshold_ms=100)   # this thread's hub
    ...                                      # a greenlet calls a blocking C function
    # WARNING tgreen.monitor: the event loop of thread MainThread (...) has not
    # turned for 312 ms (threshold 100 ms); greenlet <Greenlet parse> holds it:
    #   File "app.py", line 12, in parse
    #     ...

Also on with ``TGREEN_MONITOR_MS=100`` in the environment: every hub created
afterwards is monitored (``maybe_start_from_env`` is called from
``Hub.__init__``). Off by default.

Theory of operation
-------------------
*What "blocked" means.* Green code must come back to the loop often. The loop
is blocked when it is running but has not been back in its ``select`` for
longer than the threshold (a callback or greenlet is holding the thread), or,
in a plain script between waits (the loop not running), when a callback or
timer has been due for longer than the threshold while the script keeps the
thread (greenlets that should run, starve).

*How it is seen.* On asyncio's selector loops, the loop's selector is wrapped
(``_Turns``): entering and leaving ``select`` each bump a counter, so an odd
count means "inside select", i.e. idle. That costs one Python call per loop
turn (about 0.1-0.3 us, ``benchmarks/monitor_cost.py``) and, unlike a
heartbeat timer, never keeps the loop from sleeping (the hub's
would-block-forever check needs a loop with nothing scheduled to sleep with
no timeout). On uvloop, which has no Python-level selector, a heartbeat timer
every threshold/2 bumps the counter instead.

*Who sees it.* One real OS thread (the original ``_thread``, so patching never
makes it a greenlet) samples every monitored hub every threshold/2. A hub is
reported when two samples at least ``threshold`` apart both saw it blocked
with the same counter; the report is the stack of the thread's running frame
(``sys._current_frames()``), which is the frame of the greenlet that holds the
thread, logged once per episode to the ``tgreen.monitor`` logger (or written
to ``stream``).

Rules of this file:

1. The watchdog thread only reads hub and loop state; it never calls into
   the loop (asyncio loops are not thread-safe).
2. Monitoring must not change behaviour: no timers on selector loops, no
   greenlet tracing, nothing on the switch path.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any, TextIO

from . import _originals
from .hub import SelectorWrapper, unwrap_selector, wrap_selector

__all__ = ["start", "stop", "stop_all", "is_running", "monitor_for", "maybe_start_from_env",
           "Monitor"]

logger = logging.getLogger("tgreen.monitor")

_start_new_thread = _originals.get("_thread", "start_new_thread")
_allocate_lock = _originals.get("_thread", "allocate_lock")
_get_ident = _originals.get("_thread", "get_ident")
_monotonic = _originals.get("time", "monotonic")

ENV_VAR = "TGREEN_MONITOR_MS"
# Samples per threshold: a block is reported between 1x and (1 + 1/N)x the
# threshold after it starts. Each sample wakes a thread that needs the GIL,
# which is most of the monitor's cost (benchmarks/monitor_cost.py).
_SAMPLES_PER_THRESHOLD = int(os.environ.get("TGREEN_MONITOR_SAMPLES", "2"))


class _Turns(SelectorWrapper):
    """Wraps a selector loop's selector to count loop turns (module docstring).

    ``turns`` goes up on the way into ``select`` and again on the way out:
    an odd count means the loop is inside ``select`` (idle). One counter and
    a cached bound method keep the price to one extra Python call per turn
    (measured in benchmarks/monitor_cost.py).
    """

    def __init__(self, selector: Any) -> None:
        super().__init__(selector)
        self._select = selector.select
        self.turns = 0
        # The loop calls these directly; skip __getattr__ for them.
        for name in ("register", "unregister", "modify", "get_key", "get_map"):
            if hasattr(selector, name):
                setattr(self, name, getattr(selector, name))

    def select(self, timeout: float | None = None) -> list:
        self.turns += 1
        try:
            return self._select(timeout)
        finally:
            self.turns += 1


class _Heartbeat:
    """The uvloop fallback: a timer bumping the turn counter."""

    def __init__(self, loop: Any, interval: float) -> None:
        self.turns = 0
        self._loop = loop
        self._interval = interval
        self._handle = loop.call_later(interval, self._beat)

    def _beat(self) -> None:
        self.turns += 1
        self._handle = self._loop.call_later(self._interval, self._beat)

    def cancel(self) -> None:
        self._handle.cancel()


class Monitor:
    """Watches one hub. Created by ``start()``; see the module docstring."""

    def __init__(self, hub: Any, threshold: float, stream: TextIO | None,
                 limit: int | None = None, note: str = "") -> None:
        self.hub = hub
        self.threshold = threshold
        self.stream = stream
        self.reports = 0
        self.limit = limit
        self.note = note
        loop = hub.loop
        self._beat: _Heartbeat | None = None
        self._wrapped: SelectorWrapper | None = wrap_selector(loop, _Turns)
        if self._wrapped is not None:
            self.counter = self._wrapped
        else:
            self._beat = self.counter = _Heartbeat(loop, threshold / 2)  # type: ignore[assignment]
        # Sampling state (watchdog thread only).
        self._seen_turns = -1
        self._since: float | None = None
        self._reported = False

    def close(self) -> None:
        """Stop watching; take the turn counter out of the selector chain."""
        loop = self.hub.loop
        if self._wrapped is not None:
            unwrap_selector(loop, self._wrapped)
            self._wrapped = None
        if self._beat is not None:
            beat, self._beat = self._beat, None
            try:
                loop.call_soon_threadsafe(beat.cancel)
            except RuntimeError:
                pass

    # -- sampling (watchdog thread) ------------------------------------------------

    def _blocked_now(self, turns: int) -> bool:
        loop = self.hub.loop
        if loop.is_running():
            # Inside select (an odd count on selector loops) is idle.
            return self._beat is not None or turns & 1 == 0
        if self.hub.runner is not None:
            return True  # between run_forever() calls of one wait: a moment
        return self._work_is_due(loop)

    def _work_is_due(self, loop: Any) -> bool:
        """Loop not running: is anything waiting for it to run?"""
        ready = getattr(loop, "_ready", None)
        if ready:
            return True
        scheduled = getattr(loop, "_scheduled", None)
        if scheduled:
            try:
                first = scheduled[0]
                # asyncio.TimerHandle: no public "cancelled and due?" for this.
                return not first._cancelled and first._when <= loop.time()  # noqa: SLF001
            except (IndexError, AttributeError):
                return False
        return False

    def sample(self, now: float) -> None:
        turns = self.counter.turns
        blocked = self._blocked_now(turns)
        if not blocked:
            if self._reported and self._since is not None:
                self._report_end(now - self._since)
            self._since = None
            self._reported = False
            return
        if turns != self._seen_turns or self._since is None:
            # Blocked now, but the loop moved since the last sample (or was
            # not blocked then): start timing from here.
            if self._reported and self._since is not None:
                self._report_end(now - self._since)
            self._seen_turns = turns
            self._since = now
            self._reported = False
            return
        held = now - self._since
        if held >= self.threshold and not self._reported:
            self._reported = True
            self.report(held)

    def report(self, held: float) -> None:
        frame = sys._current_frames().get(self.hub.thread_ident)  # noqa: SLF001 - no public API
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no frame)\n"
        who = _describe_holder(frame)
        name = _thread_name(self.hub.thread_ident)
        msg = (f"tgreen.monitor: the event loop of thread {name} ({self.hub.thread_ident}) "
               f"has not turned for at least {held * 1000:.0f} ms (threshold "
               f"{self.threshold * 1000:.0f} ms); {who} holds the thread. It should "
               "wait greenly or run the blocking call in tgreen.threadpool. "
               f"{self.note + ' ' if self.note else ''}Its stack "
               f"(most recent call last):\n{stack}")
        self.reports += 1
        del frame
        if self.limit is not None and self.reports >= self.limit:
            # Done: stop watching from the loop's own thread (rule 1), so the
            # selector wrapper goes and the watchdog thread can exit.
            try:
                self.hub.loop.call_soon_threadsafe(_stop_if_current, self)
            except RuntimeError:
                pass
        if self.stream is not None:
            try:
                self.stream.write(msg + "\n")
                self.stream.flush()
            except Exception:  # noqa: BLE001 - a broken stream must not kill the watchdog
                pass
        else:
            logger.warning(msg)


    def _report_end(self, held: float) -> None:
        msg = (f"tgreen.monitor: the event loop of thread {self.hub.thread_ident} turned "
               f"again after about {held * 1000:.0f} ms")
        if self.stream is not None:
            try:
                self.stream.write(msg + "\n")
                self.stream.flush()
            except Exception:  # noqa: BLE001
                pass
        else:
            logger.info(msg)


def _describe_holder(frame: Any) -> str:
    """Name the greenlet whose frame is running: the bottom frame of a
    greenlet's stack is its ``run`` (f_back is None there)."""
    if frame is None:
        return "unknown code"
    bottom = frame
    while bottom.f_back is not None:
        bottom = bottom.f_back
    try:
        owner = bottom.f_locals.get("self")
    except Exception:  # noqa: BLE001
        owner = None
    from greenlet import greenlet as _greenlet

    if isinstance(owner, _greenlet):
        try:
            return f"greenlet {owner!r}"
        except Exception:  # noqa: BLE001
            return f"greenlet {type(owner).__name__}"
    return (f"the thread's main greenlet (code started by {bottom.f_code.co_name} "
            f"in {bottom.f_code.co_filename})")


def _thread_name(ident: int) -> str:
    threading = sys.modules.get("threading")
    try:
        # threading._active: the only map from ident to Thread without
        # enumerate()'s lock, which the watchdog thread must not take.
        t = threading._active.get(ident) if threading else None  # noqa: SLF001
        return t.name if t is not None else str(ident)
    except Exception:  # noqa: BLE001
        return str(ident)


# -- the watchdog thread ----------------------------------------------------------------

_lock = _allocate_lock()
_monitors: dict[int, Monitor] = {}  # id(hub) -> Monitor
_wakeup = _allocate_lock()
_thread_running = False


def watchdog_running() -> bool:
    """Is the watchdog thread alive? (A real OS thread of tgreen's own,
    which ``_waitqueue.machinery_threads`` leaves out of the thread count.)"""
    return _thread_running


def _watchdog() -> None:
    global _thread_running
    try:
        while True:
            with _lock:
                monitors = list(_monitors.values())
                if not monitors:
                    _thread_running = False
                    return
            period = max(min(m.threshold for m in monitors) / _SAMPLES_PER_THRESHOLD, 0.002)
            if _wakeup.acquire(True, period):  # stop() pokes us
                pass
            now = _monotonic()
            for m in monitors:
                if m.hub.loop.is_closed():
                    with _lock:
                        if _monitors.get(id(m.hub)) is m:
                            del _monitors[id(m.hub)]
                    continue
                try:
                    m.sample(now)
                except Exception:  # noqa: BLE001 - keep watching the others
                    logger.exception("tgreen.monitor: sampling failed")
    finally:
        _thread_running = False


def _stop_if_current(m: Monitor) -> None:
    with _lock:
        if _monitors.get(id(m.hub)) is not m:
            return
    stop(m.hub)


def start(threshold_ms: float = 100, stream: TextIO | None = None, hub: Any = None,
          limit: int | None = None, note: str = "") -> Monitor:
    """Report whenever ``hub`` (default: this thread's) is blocked for more
    than ``threshold_ms``. Reports go to the ``tgreen.monitor`` logger at
    WARNING, or to ``stream`` if given. Calling it again replaces the
    threshold and stream. ``limit``: stop watching after that many reports;
    ``note``: a sentence added to each report (say why it matters here)."""
    global _thread_running
    if threshold_ms <= 0:
        raise ValueError("tgreen.monitor: threshold_ms must be > 0")
    if hub is None:
        from .hub import get_hub

        hub = get_hub()
    with _lock:
        old = _monitors.pop(id(hub), None)
    if old is not None:
        old.close()
    m = Monitor(hub, threshold_ms / 1000.0, stream, limit, note)
    with _lock:
        _monitors[id(hub)] = m
        if not _thread_running:
            _thread_running = True
            if not _wakeup.locked():
                _wakeup.acquire()
            _start_new_thread(_watchdog, ())
    return m


def stop(hub: Any = None) -> None:
    """Stop monitoring ``hub`` (default: this thread's hub); ``stop_all()``
    stops every monitor."""
    if hub is None:
        from .hub import peek_hub

        hub = peek_hub()
        if hub is None:
            return
    with _lock:
        m = _monitors.pop(id(hub), None)
    if m is not None:
        m.close()
    _poke()


def stop_all() -> None:
    """Stop monitoring every hub; the watchdog thread exits."""
    with _lock:
        ms = list(_monitors.values())
        _monitors.clear()
    for m in ms:
        m.close()
    _poke()


def _poke() -> None:
    try:
        _wakeup.release()
    except RuntimeError:
        pass


def is_running(hub: Any = None) -> bool:
    """True if ``hub`` (default: this thread's, if any) is monitored."""
    if hub is None:
        from .hub import peek_hub

        hub = peek_hub()
    return hub is not None and id(hub) in _monitors


def monitor_for(hub: Any) -> Monitor | None:
    """The Monitor watching ``hub``, if any."""
    return _monitors.get(id(hub))


def maybe_start_from_env(hub: Any) -> Monitor | None:
    """Called by ``Hub.__init__``: start monitoring ``hub`` when
    ``TGREEN_MONITOR_MS`` is set to a positive number."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    try:
        ms = float(value)
    except ValueError:
        logger.warning("tgreen.monitor: ignoring %s=%r (not a number of milliseconds)",
                       ENV_VAR, value)
        return None
    if ms <= 0:
        return None
    return start(ms, hub=hub)


def _after_fork_in_child() -> None:
    global _thread_running, _lock, _wakeup
    # The watchdog thread does not exist in the child; locks may be held.
    _monitors.clear()
    _thread_running = False
    _lock = _allocate_lock()
    _wakeup = _allocate_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
