"""``TaskPool`` and ``Timer``: Celery's execution pool contract on tgreen.

What this module owns: running the tasks Celery hands the pool in greenlets
on the hub, at most ``limit`` (``-c N``) at once; delivering their time
limits and ``revoke(terminate=True)``; and the worker's timer (ETA/countdown
tasks, heartbeats), whose entries run in greenlets.

A job's life::

    on_apply -> pending -> a worker greenlet takes it
        accept_callback(pid)            the Request acks, the task is "active"
        soft limit timer                throws SoftTimeLimitExceeded into the task
        hard limit timer                throws _HardTimeLimit (a BaseException): the task
                                        is ended and Celery's timeout_callback records it
        terminate_job(pid)              throws GreenletExit: the task is ended, its
                                        revocation is Celery's business
        the task returns                callback(result), unless it was ended meanwhile
    -> the worker takes the next pending job, or waits idle for one

Rules of this module:

1. Time limits and terminations are thrown into a job's greenlet only while
   it runs the task (``Job.in_task``), checked in the loop callback that
   throws, so they never land in Celery's own bookkeeping after the task.
   A task that swallows one (a bare ``except:``) still ends as it was told:
   its result is dropped and the timeout is reported.
2. Loop callbacks only start greenlets, wake them or throw into them
   (package rule 3): Celery's callbacks talk to the broker and the backend.
3. ``on_apply`` never blocks: jobs beyond ``limit`` wait in a queue, bounded
   by the worker's prefetch (``-c`` x ``worker_prefetch_multiplier``). From
   the shutdown signal on (``worker_shutting_down``), no job starts: one
   still waiting is dropped unstarted; its message was never acknowledged,
   so the broker delivers it again.
4. A task that never yields (a CPU loop, a blocking C call) holds the whole
   worker, as with gevent and eventlet: its time limits fire only when it
   yields. Such tasks belong in a prefork worker.
5. Tasks run in up to ``limit`` long-lived worker greenlets, as the threads
   pool runs them in threads, not in a new greenlet each (gevent's and
   eventlet's way). Celery keeps per-thread state, which patching makes
   per-greenlet: above all the app's result backend, with its Redis client
   and connection pool. A greenlet per task built a backend and opened a
   connection for every task; a worker greenlet keeps its own across tasks.
   ``grow`` adds workers as jobs arrive; ``shrink`` retires idle ones at
   once and busy ones after their task.
"""

from __future__ import annotations

import sys
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import signals
from celery.concurrency import base
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_logger
from kombu.asynchronous import timer as _timer

from ..event import Event
from ..greenlet import Greenlet, GreenletExit, getcurrent, spawn
from ..hub import Waiter, get_hub

__all__ = ["TaskPool", "Timer"]

logger = get_logger("celery.pool")


class _HardTimeLimit(BaseException):
    """Thrown into a task at its hard time limit. A BaseException, so that a
    task's ``except Exception`` cannot swallow it by accident."""


# -- the timer ---------------------------------------------------------------------------


class Timer(_timer.Timer):
    """kombu's ``Timer`` whose entries fire on the hub's loop, each in a
    greenlet of its own (an entry may block: a heartbeat is a broker publish,
    an ETA task goes to the pool)."""

    def __init__(self, *args: Any, on_tick: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scheduled: dict[Greenlet, _timer.scheduled] = {}

    def _enter(self, eta: float, priority: int, entry: Any) -> Any:  # type: ignore[override]
        g = Greenlet(self._fire, entry)
        g.report_errors = False
        self._scheduled[g] = _timer.scheduled(eta, priority, entry)
        g.link(self._forget)
        g.start_later(max(eta - monotonic(), 0.0))
        return entry

    def _fire(self, entry: Any) -> None:
        if not entry.canceled:
            self.apply_entry(entry)

    def _forget(self, g: Greenlet) -> None:
        self._scheduled.pop(g, None)

    def clear(self) -> None:
        pending, self._scheduled = list(self._scheduled), {}
        for g in pending:
            g.kill(block=False)

    def stop(self) -> None:
        self.clear()

    def __len__(self) -> int:
        return len(self._scheduled)

    @property
    def queue(self) -> list:
        """The entries still to fire, soonest first (``celery inspect scheduled``)."""
        return sorted(s for s in self._scheduled.values() if not s.entry.canceled)


# -- jobs --------------------------------------------------------------------------------


class Job:
    """One task in the pool. ``pid`` is what Celery records as the task's
    worker pid (``terminate_job`` finds the job by it); Celery also keeps a
    weak reference to the job (the ``apply_async`` result)."""

    __slots__ = ("__weakref__", "accept_callback", "args", "callback", "error_callback",
                 "expired", "greenlet", "hard", "in_task", "kwargs", "pid", "soft", "stopped",
                 "target", "timeout_callback", "timers")

    def __init__(self, target: Callable[..., Any], args: Any, kwargs: Any, callback: Any,
                 accept_callback: Any, error_callback: Any, timeout_callback: Any,
                 soft: float | None, hard: float | None) -> None:
        self.target = target
        self.args = args or ()
        self.kwargs = kwargs or {}
        self.callback = callback
        self.accept_callback = accept_callback
        self.error_callback = error_callback
        self.timeout_callback = timeout_callback
        self.soft = soft
        self.hard = hard
        self.greenlet: Greenlet | None = None
        self.pid = 0
        self.in_task = False
        self.expired = False   # the hard limit passed
        self.stopped = False   # terminated (revoke(terminate=True), cold shutdown)
        self.timers: list = []

    def terminate(self, signal: Any = None) -> None:
        # Celery calls this after terminate_job(pid), which did the work.
        pass

    def __repr__(self) -> str:
        return f"<tgreen.celery.Job pid={self.pid} {'running' if self.greenlet else 'pending'}>"


def _throw(job: Job, exc: BaseException) -> None:
    """Raise ``exc`` in the job's task, from a loop callback (rule 1)."""
    g = job.greenlet
    if job.in_task and g is not None and not g.dead:
        get_hub().throw(g, exc)


# -- the pool ----------------------------------------------------------------------------


class TaskPool(base.BasePool):
    """Celery execution pool: tasks run in greenlets on tgreen's hub.

    ``celery worker -P custom`` with ``CELERY_CUSTOM_WORKER_POOL=tgreen.celery:TaskPool``,
    or ``python -m tgreen.celery ... worker``.
    """

    Timer = Timer

    #: Shutdown is not done from inside a signal handler: the handler sets
    #: Celery's flag and the worker's loop acts on it.
    signal_safe = False
    is_green = True
    #: ``result.get()`` in a task blocks only its greenlet (Celery still
    #: warns about waiting on a subtask from a task).
    task_join_will_block = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _check_patched_in_time()
        super().__init__(*args, **kwargs)
        _pools.add(self)
        self.limit: int = max(int(self.limit or 0), 0)
        self._running: dict[int, Job] = {}
        self._pending: deque[Job] = deque()
        self._idle: deque[Waiter] = deque()     # workers waiting for a job
        self._workers = 0                        # workers alive and not retiring
        self._drained: Event | None = None
        self._accepting = True

    # -- lifecycle (celery.concurrency.base.BasePool) -------------------------------

    def on_start(self) -> None:
        self._accepting = True

    def did_start_ok(self) -> bool:
        return True

    def on_close(self) -> None:
        # Rule 3: jobs not started go back to the broker (never acknowledged).
        self._accepting = False
        self._pending.clear()
        self._retire(len(self._idle))

    def on_stop(self) -> None:
        """Warm shutdown: wait for the running tasks (their time limits still apply)."""
        self.on_close()
        while self._running:
            self._drained = Event()
            self._drained.wait()

    def on_terminate(self) -> None:
        """Cold shutdown: end the running tasks now."""
        self.on_close()
        for job in list(self._running.values()):
            self._stop(job, GreenletExit())

    def restart(self) -> None:
        raise NotImplementedError("tgreen.celery.TaskPool has no processes to restart")

    # -- applying (rule 5) ------------------------------------------------------------

    def spawn_n(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Greenlet:
        """Run ``fn`` in a greenlet (Celery's broadcast-command consumer)."""
        return spawn(fn, *args, **kwargs)

    def on_apply(self, target: Callable[..., Any], args: Any = None, kwargs: Any = None,
                 callback: Any = None, accept_callback: Any = None, timeout_callback: Any = None,
                 error_callback: Any = None, soft_timeout: float | None = None,
                 timeout: float | None = None, **_: Any) -> Job:
        soft = soft_timeout or self.options.get("soft_timeout") or None
        hard = timeout or self.options.get("timeout") or None
        job = Job(target, args, kwargs, callback, accept_callback, error_callback,
                  timeout_callback, soft, hard)
        if self._accepting:     # else: never started, its message returns to the broker
            self._pending.append(job)
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        """Hand pending jobs to idle workers, then start workers up to ``limit``."""
        pending = self._pending
        while pending and self._idle:
            self._idle.popleft().schedule(pending.popleft())
        while pending and self._workers < self.limit:
            self._workers += 1
            g = Greenlet(self._work, pending.popleft())
            g.report_errors = False
            g.start()

    def _work(self, job: Job | None) -> None:
        """A worker: runs jobs one after another until it is retired."""
        try:
            while job is not None:
                self._run(job)
                job = self._next_job()
        except BaseException:
            self._workers -= 1      # ended otherwise than by retiring (KeyboardInterrupt, a kill)
            raise

    def _next_job(self) -> Job | None:
        if self._workers > self.limit or not self._accepting:
            self._workers -= 1
            return None
        if self._pending:
            return self._pending.popleft()
        waiter = Waiter()
        self._idle.append(waiter)
        try:
            job: Job | None = waiter.get(what="waiting for a task")
        except BaseException:
            if waiter in self._idle:
                self._idle.remove(waiter)
            raise
        return job

    def _retire(self, n: int) -> None:
        for _ in range(min(n, len(self._idle))):
            self._workers -= 1
            self._idle.popleft().schedule(None)

    def _run(self, job: Job) -> None:
        job.pid = id(job)
        self._running[job.pid] = job
        job.greenlet = getcurrent()  # type: ignore[assignment]
        try:
            self._execute(job)
        except Exception:
            # Celery's own callbacks failed (an ack on a lost connection):
            # logged, and this worker takes the next job.
            logger.exception("tgreen.celery: job %r failed outside its task", job)
        finally:
            for t in job.timers:
                t.cancel()
            job.timers = []
            job.greenlet = None
            job.target = job.args = job.kwargs = None  # type: ignore[assignment]
            del self._running[job.pid]
            if not self._running and self._drained is not None:
                self._drained.set()

    def _execute(self, job: Job) -> None:
        if job.accept_callback is not None:
            job.accept_callback(job.pid, monotonic())
        if job.stopped:     # terminated while it was being accepted
            return
        loop = get_hub().loop
        if job.soft:
            job.timers.append(loop.call_later(job.soft, self._soft_limit, job))
        if job.hard:
            job.timers.append(loop.call_later(job.hard, self._hard_limit, job))
        job.in_task = True
        try:
            result = job.target(*job.args, **job.kwargs)
        except _HardTimeLimit:
            result = None
        except GreenletExit:
            if not job.stopped:
                raise
            return
        except BaseException as exc:
            job.in_task = False
            if isinstance(exc, (KeyboardInterrupt, SystemExit)) or job.error_callback is None:
                raise
            job.error_callback(ExceptionInfo())
            return
        finally:
            job.in_task = False
            for t in job.timers:
                t.cancel()
        if job.stopped:
            return
        if job.expired:
            # Rule 1: also when the task caught the hard limit and went on.
            if job.timeout_callback is not None:
                job.timeout_callback(False, job.hard)
            return
        if job.callback is not None:
            job.callback(result)

    # -- time limits and termination (rule 1) -------------------------------------

    def _soft_limit(self, job: Job) -> None:
        if not job.in_task:
            return
        if job.timeout_callback is not None:
            spawn(job.timeout_callback, True, job.soft)     # logs the warning (rule 2)
        _throw(job, SoftTimeLimitExceeded(job.soft))

    def _hard_limit(self, job: Job) -> None:
        if not job.in_task:
            return
        job.expired = True
        _throw(job, _HardTimeLimit(job.hard))

    def _stop(self, job: Job, exc: BaseException) -> None:
        job.stopped = True
        get_hub().loop.call_soon(_throw, job, exc)

    def terminate_job(self, pid: int, signal: Any = None) -> None:
        """End the task running as ``pid`` (``revoke(terminate=True)``): it
        gets GreenletExit at once, whatever the signal."""
        job = self._running.get(pid)
        if job is not None:
            self._stop(job, GreenletExit())

    # -- scaling ----------------------------------------------------------------------

    def grow(self, n: int = 1) -> None:
        self.limit += n
        self._dispatch()

    def shrink(self, n: int = 1) -> None:
        # Idle workers leave now; busy ones when their task is done.
        self.limit = max(self.limit - n, 0)
        self._retire(self._workers - self.limit)

    @property
    def num_processes(self) -> int:
        return self.limit

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        info.update({
            "max-concurrency": self.limit,
            "running-threads": len(self._running),
            "free-threads": max(self.limit - len(self._running), 0),
            "waiting": len(self._pending),
        })
        return info


# -- worker set-up -----------------------------------------------------------------------


_LATE = (
    "tgreen.celery: the standard library was patched after kombu was imported, so the "
    "worker's broker waits would block every task. Start the worker with "
    "`python -m tgreen.celery -A APP worker` or `celery -A APP worker -P custom` "
    "(with CELERY_CUSTOM_WORKER_POOL=tgreen.celery:TaskPool), not with worker_pool in the configuration."
)


def _check_patched_in_time() -> None:
    eventio = sys.modules.get("kombu.utils.eventio")
    if eventio is None:
        return
    import select

    if getattr(eventio, "epoll", None) is not getattr(select, "epoll", None):
        raise RuntimeError(_LATE)


def _use_synloop(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Package rule 2: a worker running this pool uses Celery's synchronous
    loop, as with gevent and eventlet. Celery decides from
    ``should_use_eventloop()``, which sees only gevent and eventlet as green;
    the pool class is known by the time it is called."""
    if instance is None:
        return
    decide = instance.should_use_eventloop

    def should_use_eventloop() -> bool:
        pool_cls = getattr(instance, "pool_cls", None)
        if isinstance(pool_cls, type) and issubclass(pool_cls, TaskPool):
            return False
        return decide()

    instance.should_use_eventloop = should_use_eventloop


def _shutting_down(**_: Any) -> None:
    """Rule 3: from the shutdown signal on, no waiting job starts."""
    for pool in list(_pools):
        pool.on_close()


_pools: weakref.WeakSet[TaskPool] = weakref.WeakSet()
signals.celeryd_init.connect(_use_synloop, weak=False, dispatch_uid="tgreen.celery.synloop")
signals.worker_shutting_down.connect(_shutting_down, weak=False, dispatch_uid="tgreen.celery.shutdown")
