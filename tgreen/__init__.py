"""tgreen: gevent-style green I/O on the Tornado/asyncio loop.

Blocking-style code runs in greenlets; a call that would block switches to
the loop until its event fires. Use it three ways::

    # 1. patch the standard library, like gevent
    import tgreen.monkey; tgreen.monkey.patch_all()

    # 2. spawn greenlets yourself
    import tgreen
    g = tgreen.spawn(fn, arg)
    g.join()

    # 3. bridge with Tornado/asyncio code
    response = tgreen.wait(AsyncHTTPClient().fetch(url))   # in a greenlet
    result = await tgreen.run_green(blocking_fn, arg)       # in a coroutine
"""

from __future__ import annotations

from . import _originals  # noqa: F401 - snapshot the stdlib before anything else
from .bridge import green, run_green, wait
from .event import AsyncResult, Event
from .greenlet import Greenlet, GreenletExit, getcurrent, joinall, killall, spawn, spawn_later
from .hub import (BlockingFromHubError, ConcurrentWaitError, Hub, LoopExit, get_hub,
                  use_uvloop)
from .lock import BoundedSemaphore, Lock, RLock, Semaphore
from .pool import Group, Pool
from ._postfork import postfork, worker_id
from .queue import Queue
from .sleep import sleep
from .timeout import Timeout, with_timeout

__version__ = "0.1.0"

__all__ = [
    "spawn", "spawn_later", "Greenlet", "GreenletExit", "getcurrent", "joinall", "killall",
    "sleep", "Timeout", "with_timeout", "get_hub", "Hub", "use_uvloop",
    "wait", "run_green", "green",
    "Event", "AsyncResult", "Queue", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
    "Pool", "Group",
    "postfork", "worker_id",
    "BlockingFromHubError", "LoopExit", "ConcurrentWaitError",
]
