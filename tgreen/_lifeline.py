"""The lifeline between a ``tgreen-serve`` worker and its master: readiness,
heartbeats, other messages, and the worker's stack on demand.

Theory of operation
-------------------
Before each fork the master makes a ``Lifeline``: a pipe (the worker writes,
the master reads) and an unlinked stack file. In the worker,
``WorkerEnd.start`` arms two things on its loop:

* a heartbeat: a loop timer writes ``beat`` every ``interval`` seconds. It
  is sent from the loop, not from a thread, so it stops exactly when the
  loop stops turning (a CPU loop, a blocking C call in a request);
* ``faulthandler`` on ``STACK_SIGNAL``: the C-level handler writes every
  thread's stack to the stack file even when the worker is stuck in C code
  or in a Python loop that never returns to the loop.

The worker sends ``ready`` once its server accepts on its loop. The master
reads every pipe each tick (``MasterEnd.read``): any message counts as a sign
of life, and ``ready`` lets a reload retire the old workers. To report a
stuck worker the master sends ``STACK_SIGNAL`` and reads the stack file
(``MasterEnd.dump_stack``) before it kills the worker. ::

    master: Lifeline() -> fork -> MasterEnd(line)      worker: WorkerEnd(line).start(loop, 0.25)
            read() -> [("ready", ""), ("beat", "")]            send("ready"); beat ... beat
            dump_stack(pid) -> "Thread 0x... File ..."         (SIGUSR2: faulthandler writes)

Messages are one line each (``kind`` or ``kind payload``), at most
``MAX_MESSAGE`` bytes (below ``PIPE_BUF``), so a write is atomic and never
interleaves.

Rules of this file:

1. The worker never blocks on the pipe: its end is non-blocking and a
   message that does not fit (a master that stopped reading) is dropped.
2. Only unpatched ``os`` calls: the master and the worker may run with
   ``patch_all()`` applied, and these must never wait on a hub.
"""

from __future__ import annotations

import faulthandler
import signal
import tempfile
import time
from typing import Any

from . import _originals

__all__ = ["STACK_SIGNAL", "Lifeline", "MasterEnd", "WorkerEnd"]

_os = _originals.module("os")
_sleep = _originals.get("time", "sleep")

#: The signal that makes a worker write its threads' stacks (faulthandler).
STACK_SIGNAL = signal.SIGUSR2

#: Longest message, so that a write is atomic on every POSIX pipe.
MAX_MESSAGE = 512

class Lifeline:
    """The fds shared by one master and one worker (made before the fork)."""

    def __init__(self) -> None:
        self.r, self.w = _os.pipe()
        self.stack = tempfile.TemporaryFile(prefix="tgreen-stack-")  # noqa: SIM115 (lives with the worker)

    def fds(self) -> tuple[int, ...]:
        return (self.r, self.w, self.stack.fileno())


class MasterEnd:
    """The master's side of one worker's lifeline."""

    def __init__(self, line: Lifeline) -> None:
        _os.close(line.w)     # only the worker writes
        _os.set_blocking(line.r, False)
        self.fd = line.r
        self.stack = line.stack
        self.last_heard = time.monotonic()
        self._buf = b""

    def read(self) -> list[tuple[str, str]]:
        """Every complete message waiting in the pipe, in order."""
        chunks = []
        while True:
            try:
                data = _os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return []
        self.last_heard = time.monotonic()
        buf = self._buf + b"".join(chunks)
        *lines, self._buf = buf.split(b"\n")
        out = []
        for raw in lines:
            kind, _, payload = raw.decode("utf-8", "replace").partition(" ")
            out.append((kind, payload))
        return out

    def dump_stack(self, pid: int, wait: float = 1.0) -> str:
        """Ask the worker for its stacks (``STACK_SIGNAL``) and return what
        it wrote within ``wait`` seconds ("" if nothing: not a worker of
        ours any more, or stopped)."""
        fd = self.stack.fileno()
        start = _os.fstat(fd).st_size
        try:
            _os.kill(pid, STACK_SIGNAL)
        except ProcessLookupError:
            return ""
        deadline = time.monotonic() + wait
        size = start
        while time.monotonic() < deadline:
            _sleep(0.02)
            now = _os.fstat(fd).st_size
            if now > start and now == size:
                break   # written, and no longer growing
            size = now
        end = _os.fstat(fd).st_size
        return _os.pread(fd, end - start, start).decode("utf-8", "replace") if end > start else ""

    def close(self) -> None:
        try:
            _os.close(self.fd)
        except OSError:
            pass
        self.stack.close()


class WorkerEnd:
    """The worker's side: ``send`` messages, heartbeats, stack on demand."""

    def __init__(self, line: Lifeline) -> None:
        _os.close(line.r)
        _os.set_blocking(line.w, False)
        self.fd = line.w
        self.stack = line.stack
        self._handle: Any = None
        self._loop: Any = None
        self._interval = 0.0

    def start(self, loop: Any, interval: float | None) -> None:
        """Dump stacks on ``STACK_SIGNAL``; beat every ``interval`` seconds
        from ``loop`` (None: no heartbeat)."""
        faulthandler.register(STACK_SIGNAL, file=self.stack, all_threads=True)
        if interval:
            self._loop = loop
            self._interval = interval
            self._handle = loop.call_later(interval, self._beat)

    def _beat(self) -> None:
        self.send("beat")
        self._handle = self._loop.call_later(self._interval, self._beat)

    def send(self, kind: str, payload: str = "") -> bool:
        """Send one message (rule 1: dropped, False, if the pipe is full)."""
        msg = (f"{kind} {payload}" if payload else kind).encode() + b"\n"
        if len(msg) > MAX_MESSAGE or b"\n" in msg[:-1]:
            raise ValueError(f"tgreen: a lifeline message is one line of at most {MAX_MESSAGE} bytes")
        try:
            return _os.write(self.fd, msg) == len(msg)
        except (BlockingIOError, BrokenPipeError, OSError):
            return False

