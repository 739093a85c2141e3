"""``tgreen-serve --reload``: a file watcher that reloads the workers on a change.

Theory of operation
-------------------
The master forks one watcher process before its workers. The watcher
watches the app's directory (the current directory for a module spec) with
``watchfiles`` (inotify on Linux, no polling of our own), Python files only,
and sends SIGHUP to the master for each batch of changes, so a change is
reloaded exactly like a SIGHUP: new workers import the new code, the old ones
keep serving until those are up, and code that fails to import leaves the old
ones serving. The master tells the watcher's SIGHUP from a user's by the
sender's pid. ::

    master --fork--> watcher: watchfiles.watch(app dir) -> kill(master, SIGHUP)
    master: SIGHUP from the watcher -> Master.reload("a source file changed")

Rules of this file:

1. The watcher is a process, not a thread in the master: the master forks
   workers, and a fork beside a running thread can inherit its locks held.
2. The watcher ends with the master: the master stops it, and it checks
   every second that its parent is still the master.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from . import _originals
from .wsgi.loader import is_file_spec, split_spec

__all__ = ["Reloader", "watched_dir"]

log = logging.getLogger("tgreen.serve")

_waitpid = _originals.get("os", "waitpid")
_sleep = _originals.get("time", "sleep")
_signal = _originals.get("signal", "signal")


def watched_dir(app_spec: str) -> str:
    """The directory ``--reload`` watches for ``app_spec``."""
    target, _ = split_spec(app_spec)
    if is_file_spec(target):
        return os.path.dirname(os.path.abspath(target))
    return os.getcwd()


class Reloader:
    """The watcher process, seen from the master."""

    def __init__(self, app_spec: str, master_pid: int, mask: Any, sockets: list) -> None:
        self.path = watched_dir(app_spec)
        self.master_pid = master_pid
        self.mask = mask
        self.sockets = sockets   # the master's listeners: not the watcher's to hold
        self.pid = 0

    def start(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for sock in self.sockets:
                    sock.close()
                _watch(self.path, self.master_pid, self.mask)
            except BaseException as e:
                if not isinstance(e, (KeyboardInterrupt, SystemExit)):
                    log.error("tgreen-serve: the --reload file watcher failed", exc_info=e)
                    code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.pid = pid

    def fired(self, info: Any) -> bool:
        """Whether a SIGHUP (``sigtimedwait`` info) came from the watcher."""
        return bool(self.pid) and info.si_pid == self.pid

    def reap(self, pid: int, status: int) -> bool:
        """True if ``pid`` was the watcher (it is gone now)."""
        if not self.pid or pid != self.pid:
            return False
        self.pid = 0
        log.warning("tgreen-serve: the --reload file watcher exited (%d); files are no longer watched",
                    os.waitstatus_to_exitcode(status))
        return True

    def stop(self) -> None:
        pid, self.pid = self.pid, 0
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                done, _ = _waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            _sleep(0.02)
        try:
            os.kill(pid, signal.SIGKILL)
            _waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _watch(path: str, master_pid: int, mask: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        _signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    import watchfiles

    logging.getLogger("watchfiles").setLevel(logging.WARNING)   # its own "N changes detected"
    watching = False
    for changes in watchfiles.watch(path, watch_filter=watchfiles.PythonFilter(),
                                    rust_timeout=1000, yield_on_timeout=True,
                                    raise_interrupt=False):
        if os.getppid() != master_pid:
            return   # rule 2
        if not watching:
            # The first yield (a change, or a second without one): the watch is in place.
            watching = True
            log.info("tgreen-serve: --reload: watching Python files under %s", path)
        if not changes:
            continue
        names = sorted({os.path.relpath(p, path) for _, p in changes})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        log.info("tgreen-serve: --reload: %s changed", shown)
        os.kill(master_pid, signal.SIGHUP)
