"""Pre-forked worker processes for ``tgreen-serve``: the master and a worker's life.

Theory of operation
-------------------
The master binds every listening socket, then forks M workers and does
nothing else: it never creates an event loop, never imports the app, and
waits for signals with ``sigtimedwait`` (signals stay blocked in the master,
so none is lost or runs in the middle of a fork). Each worker has a
lifeline to the master (``tgreen._lifeline``: a pipe for ``ready`` and
heartbeats, a file for its stacks), read on every tick. ::

    master: bind -> fork worker 1..M -> wait for signals, read the lifelines
      SIGCHLD  a worker died: respawn it with the same worker id
      SIGTERM  graceful stop: workers finish in-flight requests, then exit 0
      SIGINT   fast stop (also SIGQUIT): workers close everything now
      SIGHUP   reload without downtime (below); also what --reload's
               file watcher (tgreen._reloader) sends on a change
    worker: unblock signals -> new loop -> import app -> @postfork hooks
            -> WSGIServer on the inherited sockets -> "ready" -> loop.run_forever()

With ``--metrics-bind`` the master also maps the shared counters and binds
the metrics listener before forking (``tgreen.wsgi.metrics``): each worker
gets a slot, a dead worker's slot is folded into the totals when it is
reaped, and ``Master.worker_restarted(wid, reason)`` is the one hook to call
whenever a worker is replaced (it counts ``tgreen_worker_restarts_total``).

*Reload.* Workers belong to a generation. SIGHUP forks a new generation of
M workers on the same listening sockets, importing the app anew, while the
old ones keep accepting. Once every new worker said ``ready``, the old
generation is told to stop gracefully (SIGTERM). If a new worker exits
before that (its import or a postfork hook failed), the reload fails: the
error is logged, the rest of the new generation is stopped, the old
workers keep serving. A second SIGHUP during a reload replaces it.

*Boot errors.* A worker whose app import or postfork hook fails exits with
``BOOT_ERROR`` (after one line and the app's own traceback). If no worker
ever served, the master stops and exits 2 instead of respawning it forever
(with ``--reload`` it waits for a file change instead); once the server has
served, it retries with a backoff and the other workers keep serving.

*Watchdog* (``--timeout``). A ready worker's loop beats every timeout/4; a
worker silent for ``timeout`` seconds (a CPU loop, a blocking C call) gets
its threads' stacks dumped (faulthandler on SIGUSR2) and logged by the
master, then SIGKILL, and is respawned.

Graceful stop, in a worker: accept what already waits in the kernel queue,
close its copies of the listening sockets (once every process has closed
them the kernel refuses new connections instead of queueing them unserved),
close idle keep-alive connections (within a second: a request arriving on
one meanwhile is still answered), finish requests in flight (answered
with ``Connection: close``) for at most ``graceful_timeout``, exit 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import _originals
from ._lifeline import Lifeline, MasterEnd, WorkerEnd
from .wsgi.listen import bind, describe
from .wsgi.config import Config

__all__ = ["Master", "BOOT_ERROR"]

log = logging.getLogger("tgreen.serve")

#: Exit status of a worker that could not load the app or run its hooks.
BOOT_ERROR = 4

_MASTER_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP}

#: Seconds a fast stop (SIGINT) waits for workers before killing them.
FAST_STOP_WAIT = 3.0

# The master may run with patch_all() applied; it has no loop, so it must
# wait with the real calls.
_sigtimedwait = _originals.get("signal", "sigtimedwait")
_waitpid = _originals.get("os", "waitpid")
_sleep = _originals.get("time", "sleep")


class _Worker:
    """The master's record of one worker process."""

    __slots__ = ("gen", "line", "pid", "ready", "retiring", "spawned_at", "stuck", "wid")

    def __init__(self, pid: int, wid: int, gen: int, line: MasterEnd) -> None:
        self.pid = pid
        self.wid = wid
        self.gen = gen              # the reload generation it belongs to
        self.line = line
        self.spawned_at = time.monotonic()
        self.ready = False          # its server accepts (it said "ready")
        self.retiring = False       # told to finish and exit: not respawned
        self.stuck = False          # killed by the watchdog


class Master:
    """Binds, forks and supervises the workers. ``run()`` returns the exit status.

    The hook for code that watches the master: ``worker_restarted(wid,
    reason)`` is called once for each replaced worker, with reason "crash",
    "exit", "timeout" (killed by the watchdog: its loop was blocked) or
    "reload" (it feeds ``--metrics-bind``).
    """

    def __init__(self, app_spec: str, cfg: Config) -> None:
        self.app_spec = app_spec
        self.cfg = cfg
        self.sockets: list = []
        self.workers: dict[int, _Worker] = {}    # pid -> worker
        self.gen = 1                              # the generation serving
        self.pending_gen: int | None = None       # a reload on its way up
        self.served = False                       # some worker was ever ready
        self.respawn_at: dict[int, float] = {}    # worker id -> when (backoff)
        self.quick_deaths: dict[int, int] = {}    # worker id -> deaths soon after start
        self.stopping = False
        self.boot_failed = False
        self.pid = os.getpid()
        self.reloader: Any = None
        self._unix_paths: list[str] = []
        #: ``tgreen.wsgi.metrics.MasterMetrics`` with --metrics-bind, else None.
        self.metrics: Any = None

    # -- the master's life -------------------------------------------------------------

    def run(self) -> int:
        cfg = self.cfg
        try:
            for spec in cfg.bind:
                sock = bind(spec, cfg.backlog)
                sock.set_inheritable(False)
                self.sockets.append(sock)
                if spec[0] == "unix":
                    self._unix_paths.append(spec[1])
        except OSError as e:
            sys.stderr.write(f"tgreen-serve: cannot listen on {_spec_str(spec)}: {e.strerror or e}\n")
            self._close_sockets()
            return 1
        if cfg.metrics_bind:
            from .wsgi.metrics import MasterMetrics

            try:
                # Slots for every worker, plus room for old and new workers
                # side by side during a reload.
                self.metrics = MasterMetrics(cfg, slots=4 * cfg.workers + 8)
            except OSError as e:
                sys.stderr.write(f"tgreen-serve: cannot listen on {_spec_str(cfg.metrics_bind)} "
                                 f"(--metrics-bind): {e.strerror or e}\n")
                self._close_sockets()
                return 1
            for sock in self.metrics.sockets:
                log.info("tgreen-serve: metrics on %s/metrics", describe(sock))
        for sock in self.sockets:
            log.info("tgreen-serve: listening on %s (master pid %d)", describe(sock), self.pid)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        self._child_mask = old_mask
        try:
            if cfg.reload:
                from ._reloader import Reloader

                self.reloader = Reloader(self.app_spec, self.pid, old_mask, self.sockets)
                self.reloader.start()
            for wid in range(1, cfg.workers + 1):
                self.spawn(wid, self.gen)
            return self._supervise()
        finally:
            if self.reloader is not None:
                self.reloader.stop()
            self._close_sockets()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _tick(self) -> float:
        """Seconds to wait for a signal before looking at the workers again."""
        if any(not w.ready and not w.retiring for w in self.workers.values()) or self.respawn_at:
            return 0.05   # a worker is booting: see its readiness soon
        if self.cfg.timeout:
            return max(0.05, min(1.0, self.cfg.timeout / 4))
        return 1.0

    def _supervise(self) -> int:
        while True:
            info = _sigtimedwait(_MASTER_SIGNALS, self._tick())
            self.reap()
            self.read_lifelines()
            if self.boot_failed:
                log.error("tgreen-serve: a worker failed to boot; stopping")
                self.stop(graceful=False)
                return 2
            self.watchdog()
            self.respawn_due()
            if info is None:
                continue
            sig = info.si_signo
            if sig == signal.SIGTERM:
                log.info("tgreen-serve: SIGTERM: graceful stop")
                return self.stop(graceful=True)
            if sig in (signal.SIGINT, signal.SIGQUIT):
                log.info("tgreen-serve: %s: fast stop", signal.Signals(sig).name)
                return self.stop(graceful=False)
            if sig == signal.SIGHUP:
                self.reload("a source file changed" if self.reloader and self.reloader.fired(info)
                            else "SIGHUP")

    def spawn(self, wid: int, gen: int) -> _Worker:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        slot = self.metrics.claim(wid) if self.metrics is not None else -1
        line = Lifeline()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for other in self.workers.values():
                    other.line.close()
                code = _worker_main(wid, self.pid, self.sockets, self.cfg, self.app_spec,
                                    self._child_mask, WorkerEnd(line), metrics=self.metrics)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except KeyboardInterrupt:
                pass   # stopped (SIGINT) while starting: nothing to report
            except BaseException:
                traceback.print_exc()
            finally:
                _flush_logs()
                os._exit(code)
        w = self.workers[pid] = _Worker(pid, wid, gen, MasterEnd(line))
        if self.metrics is not None:
            self.metrics.started(slot, pid)
        if gen == self.gen:
            self.respawn_at.pop(wid, None)
        log.info("tgreen-serve: worker %d started (pid %d)", wid, pid)
        return w

    # -- messages and the watchdog --------------------------------------------------------

    def read_lifelines(self) -> None:
        for w in list(self.workers.values()):
            for kind, _payload in w.line.read():
                if kind == "ready":
                    self._ready(w)

    def _ready(self, w: _Worker) -> None:
        w.ready = True
        self.served = True
        gen = self.pending_gen
        if gen is not None and w.gen == gen:
            up = [x for x in self.workers.values() if x.gen == gen and x.ready and not x.retiring]
            if len(up) >= self.cfg.workers:
                self._commit_reload(gen)

    def watchdog(self) -> None:
        """Kill workers whose loop has not beaten for ``timeout`` seconds,
        after logging their stack."""
        timeout = self.cfg.timeout
        if not timeout:
            return
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.ready and not w.stuck and now - w.line.last_heard > timeout:
                self._kill_stuck(w, now - w.line.last_heard)

    def _kill_stuck(self, w: _Worker, silent: float) -> None:
        w.stuck = True
        stack = w.line.dump_stack(w.pid)
        log.error("tgreen-serve: worker %d (pid %d): its loop made no progress for %.1f s "
                  "(--timeout %g); killing it. Its threads' stacks:\n%s", w.wid, w.pid, silent,
                  self.cfg.timeout, stack.rstrip() or "  (the worker wrote none)")
        _kill(w.pid, signal.SIGKILL)

    # -- reload ------------------------------------------------------------------------------

    def reload(self, why: str) -> None:
        """Start a new generation of workers that import the app anew; the
        old ones keep serving until all the new ones are up (``_ready``)."""
        if self.stopping:
            return
        old = self.pending_gen
        if old is not None:
            # The latest reload wins: the one under way may be stuck, or load
            # code that was edited again since.
            log.info("tgreen-serve: %s: replacing the reload under way", why)
            self._retire(lambda x: x.gen == old)
        gen = self.pending_gen = max(self.gen, old or 0) + 1
        log.info("tgreen-serve: %s: reloading: starting %d new workers; the old ones serve until "
                 "they are up", why, self.cfg.workers)
        for wid in range(1, self.cfg.workers + 1):
            self.spawn(wid, gen)

    def _commit_reload(self, gen: int) -> None:
        self.pending_gen = None
        self.gen = gen
        self.respawn_at.clear()
        n = self._retire(lambda x: x.gen < gen)
        for w in self.workers.values():
            if w.gen == gen:
                self.worker_restarted(w.wid, "reload")
        log.info("tgreen-serve: reloaded: %d new workers up; %d old ones finish their requests",
                 self.cfg.workers, n)

    def _reload_failed(self, w: _Worker, what: str) -> None:
        gen = self.pending_gen
        self.pending_gen = None
        self._retire(lambda x: x.gen == gen)
        log.error("tgreen-serve: reload failed: new worker %d (pid %d) %s before it was up; "
                  "the old workers keep serving", w.wid, w.pid, what)

    def _retire(self, which: Callable[[_Worker], bool]) -> int:
        """Gracefully stop the workers ``which`` selects; they are not respawned."""
        n = 0
        for x in list(self.workers.values()):
            if which(x) and not x.retiring:
                x.retiring = True
                _kill(x.pid, signal.SIGTERM)
                n += 1
        return n

    # -- exits and respawns -------------------------------------------------------------------

    def reap(self) -> None:
        """Collect dead workers; respawn them unless stopping."""
        while True:
            try:
                pid, status = _waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.metrics is not None:
                self.metrics.exited(pid)   # its counts join the retired totals
            if self.reloader is not None and self.reloader.reap(pid, status):
                continue
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            w.line.read()
            w.line.close()
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            what = (f"killed by {signal.Signals(-code).name}" if code < 0 else
                    "failed to boot" if code == BOOT_ERROR else f"exited with {code}")
            if w.retiring:
                continue
            if w.gen == self.pending_gen:
                self._reload_failed(w, what)
                continue
            if w.gen != self.gen:
                continue
            self._respawn(w, code, what)

    def _respawn(self, w: _Worker, code: int, what: str) -> None:
        wid, pid = w.wid, w.pid
        if code == BOOT_ERROR:
            if not self.served and self.reloader is None:
                self.boot_failed = True   # it never served: stop instead of retrying forever
                return
            if not self.served:
                log.error("tgreen-serve: worker %d (pid %d) failed to boot; waiting for a source "
                          "file to change (--reload)", wid, pid)
                return
        if w.stuck:
            log.warning("tgreen-serve: worker %d (pid %d) killed by the watchdog; respawning", wid, pid)
        elif code < 0:
            log.warning("tgreen-serve: worker %d (pid %d) %s; respawning", wid, pid, what)
        elif code == BOOT_ERROR:
            log.error("tgreen-serve: worker %d (pid %d) failed to boot (does the app still import?); "
                      "retrying", wid, pid)
        elif code != 0:
            log.warning("tgreen-serve: worker %d (pid %d) %s; respawning", wid, pid, what)
        else:
            log.info("tgreen-serve: worker %d (pid %d) exited; respawning", wid, pid)
        self.worker_restarted(wid, "timeout" if w.stuck else "exit" if code == 0 else "crash")
        delay = 0.0
        if time.monotonic() - w.spawned_at < 1.0 or code == BOOT_ERROR:
            n = self.quick_deaths[wid] = self.quick_deaths.get(wid, 0) + 1
            if n > 3 or code == BOOT_ERROR:
                delay = min(0.5 * n, 5.0)   # a crash loop: do not spin
        else:
            self.quick_deaths[wid] = 0
        if delay:
            self.respawn_at[wid] = time.monotonic() + delay
        else:
            self.spawn(wid, self.gen)

    def respawn_due(self) -> None:
        now = time.monotonic()
        for wid, when in list(self.respawn_at.items()):
            if when <= now and not self.stopping:
                del self.respawn_at[wid]
                self.spawn(wid, self.gen)

    def worker_restarted(self, wid: int, reason: str) -> None:
        """Hook: call once each time a worker is replaced by a new one.
        ``reason``: "crash" (died), "exit" (exited 0, e.g. --max-requests),
        "timeout" (killed by the watchdog), "reload" (SIGHUP, --reload).
        Counted in ``tgreen_worker_restarts_total{reason}``."""
        if self.metrics is not None:
            self.metrics.restarted(reason)

    def stop(self, graceful: bool) -> int:
        self.stopping = True
        self.respawn_at.clear()
        if graceful:
            refused = [_refuse_new_connections(sock) for sock in self.sockets]
            if any(refused):
                _sleep(HANDSHAKE_SETTLE)
        sig = signal.SIGTERM if graceful else signal.SIGINT
        for pid in list(self.workers):
            _kill(pid, sig)
        # The workers hold their own copies; ours only kept the sockets open.
        self._close_sockets()
        wait = self.cfg.graceful_timeout + 5.0 if graceful else FAST_STOP_WAIT
        deadline = time.monotonic() + wait
        while self.workers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            info = _sigtimedwait(_MASTER_SIGNALS, min(left, 0.5))
            self.reap()
            if info is not None and graceful and info.si_signo in (signal.SIGINT, signal.SIGQUIT):
                graceful = False
                for pid in list(self.workers):
                    _kill(pid, signal.SIGINT)
                deadline = min(deadline, time.monotonic() + FAST_STOP_WAIT)
        for pid, w in list(self.workers.items()):
            log.warning("tgreen-serve: worker %d (pid %d) did not stop; killing it", w.wid, pid)
            _kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = _waitpid(-1, 0)
            except ChildProcessError:
                break
            gone = self.workers.pop(pid, None)
            if gone is not None:
                gone.line.close()
        log.info("tgreen-serve: stopped")
        return 2 if self.boot_failed else 0

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        self.sockets = []
        if self.metrics is not None:
            self.metrics.close()
        if os.getpid() == self.pid:
            for path in self._unix_paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            self._unix_paths = []


# -- a worker's life ---------------------------------------------------------------------

def _worker_main(wid: int, master_pid: int, sockets: list, cfg: Config, app_spec: str,
                 mask: Any, line: WorkerEnd, metrics: Any = None) -> int:
    for sig in _MASTER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    from . import _postfork, _serve_setup
    from . import loop as loop_mod
    from .wsgi import WSGIServer
    from .wsgi.loader import load_app, load_error_report

    # Anything failing before the server runs is a boot error: the master
    # stops instead of respawning a worker that can never serve.
    try:
        _postfork.set_worker_id(wid)
        if cfg.loop:
            loop_mod.set_loop_kind(cfg.loop)
        loop = loop_mod.new_event_loop()
        asyncio.set_event_loop(loop)
        app = load_app(app_spec)
        _postfork.run_postfork_hooks()
        server = WSGIServer(sockets, app, config=cfg)
        if metrics is not None:   # count into the master's block; serve its listener
            from .wsgi.metrics import attach

            attach(server, metrics.block, metrics.child_slot, metrics.sockets)
        _serve_setup.start_block_report(cfg)
    except BaseException as e:
        # One line, then the app's own frames (not tgreen's): wsgi.loader; once
        # for all the workers that fail alike: _serve_setup.
        _serve_setup.report_boot_error(e, functools.partial(load_error_report, app_spec, e))
        return BOOT_ERROR

    if cfg.max_requests:
        server.max_requests = cfg.max_requests + random.randint(0, cfg.max_requests_jitter)

    def graceful(reason: str) -> None:
        if not server.draining:
            log.info("tgreen-serve: worker %d: %s: finishing requests in flight", wid, reason)
            server.begin_stop()
            for sock in sockets:
                sock.close()

    def fast(reason: str) -> None:
        log.info("tgreen-serve: worker %d: %s: stopping now", wid, reason)
        server.close()

    def watch_master() -> None:
        if os.getppid() != master_pid:
            graceful("the master is gone")
        elif not server.closed:
            loop.call_later(1.0, watch_master)

    server.on_max_requests = lambda: graceful(f"served {server.requests} requests (--max-requests)")
    loop.add_signal_handler(signal.SIGTERM, graceful, "SIGTERM")
    loop.add_signal_handler(signal.SIGHUP, graceful, "SIGHUP")
    loop.add_signal_handler(signal.SIGINT, fast, "SIGINT")
    loop.add_signal_handler(signal.SIGQUIT, fast, "SIGQUIT")
    server.add_stop_callback(loop.stop)
    server.start()
    loop.call_later(1.0, watch_master)
    # Heartbeats only matter to the watchdog (--timeout); readiness always
    # does: a reload retires the old workers once the new ones said it.
    line.start(loop, max(0.02, min(1.0, cfg.timeout / 4)) if cfg.timeout else None)
    loop.call_soon(line.send, "ready")
    loop.run_forever()
    return 0


#: Seconds between refusing new connections and telling the workers to stop:
#: handshakes already under way complete meanwhile (loopback and LAN round
#: trips are far shorter), so their connections are in the accept queue when
#: the workers take it for the last time.
HANDSHAKE_SETTLE = 0.05

# Classic BPF, run on each packet for the listening socket from its TCP header:
# drop a SYN without ACK (a new connection attempt), keep everything else.
_DROP_NEW_SYNS = ((0x30, 0, 0, 13),           # ldb [13]        TCP flags
                  (0x54, 0, 0, 0x12),         # and #SYN|ACK
                  (0x15, 0, 1, 0x02),         # jeq #SYN        -> drop
                  (0x06, 0, 0, 0),            # ret #0          drop
                  (0x06, 0, 0, 0xFFFFFFFF))   # ret #-1         keep


def _refuse_new_connections(sock: Any) -> bool:
    """Make the kernel ignore new connection attempts on a listening TCP
    socket while keeping the ones already in its accept queue (Linux; best
    effort). True if it did.

    Closing a listening socket resets every connection still in its accept
    queue: clients that connected and sent a request would see a reset
    although no worker ever accepted them. With a socket filter that drops
    SYNs, no new handshake starts, ones under way still complete (their
    final ACK passes), the workers' last ``accept()`` empties the queue for
    good, and a client trying meanwhile retransmits its SYN and is refused
    once the socket is closed. (Dropping every packet instead would also
    drop the final ACK of a handshake under way: that client believes it is
    connected, sends its request, and gets a reset.)
    """
    if not sys.platform.startswith("linux") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    import ctypes
    import struct

    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _DROP_NEW_SYNS))
    prog = struct.pack("HL", len(_DROP_NEW_SYNS), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, 26, prog)  # SO_ATTACH_FILTER (the kernel copies it)
    except OSError:
        return False
    return True


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _flush_logs() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for h in logging.getLogger().handlers + logging.getLogger("tgreen.access").handlers:
        try:
            h.flush()
        except Exception:
            pass


def _spec_str(spec: tuple) -> str:
    if spec[0] == "tcp":
        host = f"[{spec[1]}]" if ":" in spec[1] else spec[1]
        return f"{host}:{spec[2]}"
    if spec[0] == "unix":
        return f"unix:{spec[1]}"
    return f"fd://{spec[1]}"
