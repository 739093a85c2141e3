"""What ``tgreen-serve`` does to its own process before and around the workers:
patching, the working directory, the pid file, the workers' user and group,
and the report of a blocked loop when the app runs unpatched. ::

    chdir(cfg, label)                 # --chdir, first of all
    check_accounts(cfg, label)        # --user/--group need root
    check_tls(cfg, label)             # --certfile/--keyfile load
    patch(cfg)                        # patch_all() unless --no-patch
    with pid_file(cfg, label): ...    # --pid, removed at exit
    drop_privileges_in_workers(cfg)   # --user/--group, in each forked worker
    share_boot_reports()              # before forking: see report_boot_error
    start_block_report(cfg)           # in a worker: the blocked-loop report
    report_boot_error(exc, format)    # in a worker whose app failed to load

Rules of this file:

1. Patching happens in the master, before any worker imports the app, like
   gunicorn's gevent worker: every worker inherits it and the app's import
   order cannot undo it. The master itself never creates a hub: every green
   call it makes (``sigtimedwait``, ``waitpid``, ``time.sleep``) falls back to
   the original when no hub exists, so it behaves as if unpatched.
2. The master keeps its user; workers drop privileges right after fork,
   before the app is imported (an ``os.register_at_fork`` hook, so the
   worker's life in ``tgreen.workers`` needs no flag for it). A worker that
   cannot drop them exits with ``BOOT_ERROR`` and the master stops: never
   serve as root by accident.
3. Errors are ``ConfigError`` with one line naming the setting as the user
   typed it (``label(option_name)``).
4. A broken app fails alike in every worker of a generation: its report is
   written once. The workers share (fork-inherited) a small shared-memory
   record of the last report's digest and time, updated under a lock, and
   skip a report identical to one written in the last ``BOOT_REPORT_WINDOW``
   seconds. A worker interrupted while booting (the master stopping the
   others, Ctrl-C) is not an error and reports nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .wsgi.config import Config, ConfigError

__all__ = ["BLOCK_REPORT_MS", "check_accounts", "check_tls", "chdir", "drop_privileges_in_workers", "patch",
           "pid_file", "report_boot_error", "share_boot_reports", "start_block_report"]

log = logging.getLogger("tgreen.serve")

Label = Callable[[str], str]

#: Unpatched and without --block-warning-ms, a loop held this long is
#: reported once per worker: a server serving one request at a time is never
#: silent about it.
BLOCK_REPORT_MS = 1000


def chdir(cfg: Config, label: Label) -> None:
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as e:
            raise ConfigError(f"tgreen: {label('chdir')} {cfg.chdir}: {e.strerror or e}") from None


def check_accounts(cfg: Config, label: Label) -> None:
    """Switching user or group needs root; say so now rather than in each worker."""
    if os.geteuid() == 0:
        return
    for name, wanted, current in (("user", cfg.user, os.geteuid()), ("group", cfg.group, os.getegid())):
        if wanted is not None and wanted != current:
            raise ConfigError(f"tgreen: {label(name)}: switching to another {name} needs "
                              "tgreen-serve to start as root")


def check_tls(cfg: Config, label: Label) -> None:
    """Load --certfile/--keyfile once in the master: a missing or bad file is
    one line naming the flag, not a worker that crashes at every respawn."""
    if not cfg.certfile:
        return
    import ssl

    from .ssl import server_context

    try:
        server_context(cfg.certfile, cfg.keyfile)
    except (OSError, ssl.SSLError) as e:
        files = f"{label('certfile')} {cfg.certfile}, {label('keyfile')} {cfg.keyfile}"
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
        raise ConfigError(f"tgreen: {files}: cannot load the certificate and key: {reason}") from None


def patch(cfg: Config) -> None:
    if cfg.patch:
        from . import monkey

        monkey.patch_all()


@contextlib.contextmanager
def pid_file(cfg: Config, label: Label) -> Iterator[None]:
    """Write the master's pid to ``cfg.pid`` (atomically) and remove it at
    exit if it is still ours. A file naming a live process is refused."""
    path = cfg.pid
    if not path:
        yield
        return
    pid = os.getpid()
    try:
        with open(path) as f:
            other = int(f.read().strip() or 0)
    except (OSError, ValueError):
        other = 0
    if other and other != pid and _alive(other):
        raise ConfigError(f"tgreen: {label('pid')} {path}: already running as pid {other} "
                          "(or a stale file naming a live process)")
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"tgreen: {label('pid')} {path}: {e.strerror or e}") from None
    try:
        yield
    finally:
        if os.getpid() == pid:
            try:
                with open(path) as f:
                    mine = f.read().strip() == str(pid)
                if mine:
                    os.unlink(path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_privileges_in_workers(cfg: Config) -> None:
    """Make each child the master forks switch to ``--user``/``--group``
    before it does anything else (rule 2)."""
    if cfg.user is None and cfg.group is None:
        return
    import pwd

    uid, gid, name = cfg.user, cfg.group, None
    if uid is not None:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
        if entry is not None:
            name = entry.pw_name
            if gid is None:
                gid = entry.pw_gid
    master = os.getpid()

    def in_child() -> None:
        if os.getppid() != master:
            return  # a process forked by a worker: already dropped
        try:
            if gid is not None:
                if name is not None:
                    os.initgroups(name, gid)
                else:
                    os.setgroups([gid])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
        except OSError as e:
            from .workers import BOOT_ERROR

            sys.stderr.write(f"tgreen-serve: error: cannot switch the worker to "
                             f"uid {uid} gid {gid}: {e.strerror or e}\n")
            sys.stderr.flush()
            os._exit(BOOT_ERROR)

    os.register_at_fork(after_in_child=in_child)


def start_block_report(cfg: Config) -> None:
    """In a worker, on its hub: ``--block-warning-ms`` reports every blocked
    loop; unpatched without it, the first one over a second is reported
    (once: it says why the server is serial, then costs nothing)."""
    if not cfg.block_warning_ms and cfg.patch:
        return
    from . import monitor
    from .hub import get_hub

    if cfg.block_warning_ms:
        monitor.start(cfg.block_warning_ms, hub=get_hub())
        return
    monitor.start(BLOCK_REPORT_MS, hub=get_hub(), limit=1, note=(
        "tgreen-serve runs this app unpatched (--no-patch): a blocking call holds the whole "
        "worker, and every other request waits. Drop --no-patch, or make the call green. "
        "Logged once per worker; --block-warning-ms MS reports every one."))


#: Seconds during which an identical boot error is not written again.
BOOT_REPORT_WINDOW = 3.0

_shared: tuple[Any, Any] | None = None   # (lock file, 16-byte shared memory)


def share_boot_reports() -> None:
    """In the master, before forking: the record rule 4 needs."""
    global _shared
    import mmap
    import tempfile

    if _shared is None:
        _shared = (tempfile.TemporaryFile(), mmap.mmap(-1, 16))  # anonymous: MAP_SHARED


def _first_to_report(text: str) -> bool:
    if _shared is None:
        return True
    import fcntl
    import hashlib
    import struct
    import time

    lock, mem = _shared
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
    now = time.monotonic()   # CLOCK_MONOTONIC: one clock for every process
    fcntl.lockf(lock, fcntl.LOCK_EX)   # POSIX locks are per process: the workers exclude each other
    try:
        when = struct.unpack("d", mem[8:16])[0]
        if mem[:8] == digest and now - when < BOOT_REPORT_WINDOW:
            return False
        mem[:8] = digest
        mem[8:16] = struct.pack("d", now)
        return True
    finally:
        fcntl.lockf(lock, fcntl.LOCK_UN)


def report_boot_error(exc: BaseException, format_report: Callable[[], str]) -> None:
    """Write a worker's boot error to stderr (rule 4). The worker exits next:
    SIGINT and SIGTERM stay blocked, so the master stopping the other workers
    cannot interrupt the report or the exit with a traceback of tgreen's own."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    if isinstance(exc, KeyboardInterrupt):
        return
    text = format_report()
    if _first_to_report(text):
        sys.stderr.write(text)
        sys.stderr.flush()
