"""Green ``_thread``: the names ``patch_thread()`` puts on the stdlib ``_thread`` module.

Threads are greenlets; locks work across greenlets *and* OS threads.
``tgreen.monkey.patch_thread()`` puts these names on the stdlib ``_thread``
module (and, through ``tgreen.threading``, on ``threading``). They can also be
used directly::

    from tgreen import _thread
    lock = _thread.allocate_lock()
    with lock:
        ...

This module is the patch surface only; each topic lives in a module of its own:

* ``_waitqueue.py``: how a greenlet or an OS thread waits (``WaitQueue``);
* ``_locks.py``: ``LockType``/``allocate_lock`` and ``RLock``;
* ``_threads.py``: threads as greenlets (``start_new_thread``, 3.13's
  thread handles, ``get_ident``) and how each CPython's ``threading`` is served;
* ``_threadlocal.py``: ``_local``, one attribute dict per greenlet.

Rule of this file: only names this CPython's ``_thread`` has are put on it
(``green_names``); every other name it has is kept on purpose (``KEPT``), so
a new CPython that grows a name shows up as unaccounted for, not as a
silent hole.
"""

from __future__ import annotations

from typing import Any

from . import _originals
from ._locks import TIMEOUT_MAX, LockType, RLock, allocate_lock
from ._threadlocal import local as _local
from ._threads import (
    ThreadHandle as _ThreadHandle,
    count as _count,
    exit,
    get_ident,
    make_thread_handle as _make_thread_handle,
    set_name,
    set_sentinel as _set_sentinel,
    shutdown as _shutdown,
    start_joinable_thread,
    start_new_thread,
)

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

_c_thread = _originals.module("_thread")
error = _originals.get("_thread", "error")
stack_size = _originals.get("_thread", "stack_size")
interrupt_main = _originals.get("_thread", "interrupt_main")
get_native_id = _originals.get("_thread", "get_native_id")
allocate = allocate_lock
start_new = start_new_thread
exit_thread = exit


# Names of the C ``_thread`` module kept as they are, on purpose (the rule of this file).
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
