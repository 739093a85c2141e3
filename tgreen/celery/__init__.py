"""A Celery execution pool that runs tasks as greenlets on tgreen's hub. ::

    python -m tgreen.celery -A proj worker -c 200          # patches first, then runs the worker

    CELERY_CUSTOM_WORKER_POOL=tgreen.celery:TaskPool celery -A proj worker -P custom -c 200

Importing this package patches the standard library (``tgreen.monkey.patch_all()``).

Theory of operation
-------------------
::

    main greenlet: Celery's worker (synloop): drain the broker connection
        (a green wait: it runs the hub's loop while nothing arrives)
        -> a message -> Request -> TaskPool.on_apply -> a job, queued
    up to -c worker greenlets: take a job -> accept (ack) -> the task (trace)
        -> result callback -> the next job
    the hub's loop: wakes the greenlets, throws time limits into tasks, and
        starts the Timer's entries (ETA/countdown, heartbeats) in greenlets of their own

Why patching comes first. Celery, kombu and redis-py look the blocking stdlib
up when they are imported (kombu's poller keeps ``select.epoll`` from import
time; modules do ``from time import sleep``). Patched later, those copies
stay blocking: the worker's one thread then blocks in the broker wait and no
task greenlet runs until a message arrives. Celery patches early only for its
own gevent/eventlet pools (it reads ``-P`` from ``sys.argv`` before importing
anything). It imports the pool named by ``-P custom`` almost as early, with
only ``celery.concurrency``, ``kombu.utils`` and py-amqp loaded, so this
package patches on import and refreshes the few names those copied
(``_REFRESH``). ``python -m tgreen.celery`` patches before it
imports Celery at all, so it also covers ``worker_pool`` set in the app's
configuration, which is read only after the app is imported (too late: the
pool refuses to start, with a message saying how to start the worker).

Rules of this package:

1. Importing ``tgreen.celery`` patches, and imports nothing of Celery's
   (``TaskPool`` and ``Timer`` load on first use), so ``python -m
   tgreen.celery`` can choose the pool before Celery reads its
   environment.
2. The worker runs Celery's synchronous loop (``synloop``), as for Celery's
   own green pools: its broker waits are green and the pool's ``Timer`` runs
   entries in greenlets. Celery would otherwise run kombu's own event loop
   (``asynloop`` on ``kombu.asynchronous.Hub``) for Redis or AMQP, since it
   recognises only gevent and eventlet as green environments (``pool.py``'s
   ``_use_synloop`` tells it, through the ``celeryd_init`` signal).
3. Everything that can block runs in a greenlet, never in a loop callback:
   the loop callbacks here only start greenlets or throw into them.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from .. import monkey as _monkey

# What Celery has imported by the time ``-P custom`` imports this package
# (celery.concurrency, hence kombu.utils and amqp) and holds by name: the
# copies that block are refreshed; the rest are harmless (cffi's type-building
# lock, Celery's deliberately original os.write for its signal handlers).
_REFRESH = (
    ("kombu.utils.functional", "sleep", "time"),    # the broker reconnection back-off
    ("amqp.channel", "Queue", "queue"),             # basic.return messages
)
_HARMLESS = r"tgreen\.monkey: (cffi\.|celery\._original_os_write|kombu\.utils\.functional\.sleep |amqp\.channel\.Queue )"


def _patch() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _HARMLESS, _monkey.MonkeyPatchWarning)
        _monkey.patch_all()
    for modname, name, stdname in _REFRESH:
        mod = sys.modules.get(modname)
        if mod is not None and getattr(mod, name, None) is _monkey.get_original(stdname, name):
            setattr(mod, name, getattr(sys.modules[stdname], name))


_patch()

__all__ = ["TaskPool", "Timer"]


def __getattr__(name: str) -> Any:
    # Rule 1: Celery is imported on first use of the pool, not by the import
    # of this package.
    if name in __all__:
        from . import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
