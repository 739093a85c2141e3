"""Random fd lifecycles (hypothesis): no sequence of open / wait / close /
drop-and-collect / kill the waiter / os.close / fork over a small pool of
socketpairs and pipes leaves a registration that blinds or breaks the next fd
with the same number (hub.py, "Registrations").

Every step is checked against its expected outcome (a waiter gets its byte,
EOF after its peer was dropped, EBADF after a close in another greenlet) and
against a hang: waits are bounded and a waiter that does not finish within
``HANG`` seconds fails the run. After every step a fresh socketpair and a
fresh pipe must still work.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os

import pytest

import tgreen
import tgreen.loop
import tgreen.os as gos
from tgreen import hub as _hub
from tgreen import socket
from tgreen.fileobject import GreenFileIO

# In the `test` extra; a venv made before it was added skips this file
# instead of failing collection (CI installs the extra).
hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
stateful = pytest.importorskip("hypothesis.stateful")
HealthCheck, settings = hypothesis.HealthCheck, hypothesis.settings
RuleBasedStateMachine = stateful.RuleBasedStateMachine
initialize, invariant, precondition, rule = (stateful.initialize, stateful.invariant,
                                             stateful.precondition, stateful.rule)
run_state_machine_as_test = stateful.run_state_machine_as_test

HANG = 10.0
SLOTS = 3

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]


class Slot:
    """One open fd pair: ``kind`` socketpair (a, b) or pipe (reader a, writer b)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "socketpair":
            self.a, self.b = socket.socketpair()
            for sock in (self.a, self.b):
                sock.settimeout(HANG)
                # small buffers: a write wait takes a few KiB to provoke
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        else:
            r, w = os.pipe()
            self.a, self.b = GreenFileIO(r, "rb"), GreenFileIO(w, "wb")
        self.waiter: tgreen.Greenlet | None = None

    def read1(self) -> bytes:
        return self.a.recv(1) if self.kind == "socketpair" else self.a.read(1)

    def write1(self) -> None:
        if self.kind == "socketpair":
            self.b.sendall(b"x")
        else:
            self.b.write(b"x")

    def fds(self) -> tuple[int, int]:
        return (self.a.fileno(), self.b.fileno())


def finish(g: tgreen.Greenlet) -> tuple[str, object]:
    """Wait (bounded) for a waiter: ("value", v) or ("error", errno)."""
    g.join(HANG)
    assert g.dead, "hang: a waiter did not finish"
    if g.successful():
        return ("value", g.value)
    exc = g.exception
    if isinstance(exc, OSError):
        return ("error", exc.errno)
    return ("error", type(exc).__name__)


def works() -> None:
    """A fresh socketpair and a fresh pipe: read waits fire on both, and a
    write wait on the socketpair (with a stale read registration under its
    number, asyncio's epoll.modify raised FileNotFoundError here)."""
    s = Slot("socketpair")
    p = Slot("pipe")
    try:
        for slot in (s, p):
            g = tgreen.spawn(slot.read1)
            tgreen.sleep(0)
            slot.write1()
            assert finish(g) == ("value", b"x")
        for sender, receiver in ((s.a, s.b), (s.b, s.a)):
            sender.setblocking(False)
            sent = 0
            try:
                while True:
                    sent += sender.send(b"f" * 4096)
            except BlockingIOError:
                pass
            sender.settimeout(HANG)
            g = tgreen.spawn(sender.sendall, b"w" * 4096)   # must wait to write
            tgreen.sleep(0)
            want = sent + 4096
            while want:
                want -= len(receiver.recv(want))
            assert finish(g) == ("value", None)
    finally:
        for slot in (s, p):
            slot.a.close()
            slot.b.close()


class FdLifecycles(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.slots: list[Slot | None] = [None] * SLOTS
        # Objects whose fds were closed behind their back: kept alive (their
        # collection would close whatever now has the number, as in CPython)
        # and detached at the end.
        self.zombies: list[Slot] = []

    @initialize()
    def start(self) -> None:
        gc.collect()

    # -- rules -----------------------------------------------------------------

    @rule(i=st.integers(0, SLOTS - 1), kind=st.sampled_from(["socketpair", "pipe"]))
    def open(self, i: int, kind: str) -> None:
        if self.slots[i] is None:
            self.slots[i] = Slot(kind)

    @rule(i=st.integers(0, SLOTS - 1))
    def wait(self, i: int) -> None:
        slot = self.slots[i]
        if slot is not None and slot.waiter is None:
            slot.waiter = tgreen.spawn(slot.read1)
            tgreen.sleep(0)          # it is parked in the hub now

    @rule(i=st.integers(0, SLOTS - 1))
    def deliver(self, i: int) -> None:
        slot = self.slots[i]
        if slot is None:
            return
        g, slot.waiter = slot.waiter, None
        if g is None:
            g = tgreen.spawn(slot.read1)     # a wait: its registration is kept
            tgreen.sleep(0)
        slot.write1()
        assert finish(g) == ("value", b"x")

    @rule(i=st.integers(0, SLOTS - 1))
    def close(self, i: int) -> None:
        slot = self.slots[i]
        if slot is None:
            return
        self.slots[i] = None
        slot.a.close()
        slot.b.close()
        if slot.waiter is not None:
            assert finish(slot.waiter) == ("error", errno.EBADF)

    @rule(i=st.integers(0, SLOTS - 1))
    def drop_and_collect(self, i: int) -> None:
        slot = self.slots[i]
        if slot is None:
            return
        self.slots[i] = None
        waiter = slot.waiter
        slot.waiter = None
        slot.b = None            # the peer goes first: a waiter sees EOF
        if waiter is None:
            slot.a = None
        del slot
        gc.collect()
        if waiter is not None:
            assert finish(waiter) == ("value", b"")
            del waiter
            gc.collect()

    @rule(i=st.integers(0, SLOTS - 1))
    def kill_waiter(self, i: int) -> None:
        slot = self.slots[i]
        if slot is not None and slot.waiter is not None:
            g, slot.waiter = slot.waiter, None
            g.kill(timeout=HANG)
            assert g.dead

    @precondition(lambda self: any(s is not None and s.waiter is None for s in self.slots))
    @rule(data=st.data())
    def os_close_behind_the_back(self, data) -> None:
        i = data.draw(st.sampled_from([k for k, s in enumerate(self.slots)
                                       if s is not None and s.waiter is None]))
        slot = self.slots[i]
        self.slots[i] = None
        for fd in slot.fds():
            os.close(fd)
        self.zombies.append(slot)

    @precondition(lambda self: hasattr(os, "fork"))
    @rule()
    def fork(self) -> None:
        pid = gos.fork()
        if pid == 0:
            code = 1
            try:
                works()
                for slot in self.slots:
                    if slot is not None and slot.waiter is None:
                        slot.write1()
                        if slot.read1() != b"x":
                            raise AssertionError("inherited pair broken in the child")
                code = 0
            except BaseException:  # noqa: BLE001 - report through the exit code
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = gos.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    # -- invariants --------------------------------------------------------------

    @invariant()
    def fresh_fds_work(self) -> None:
        works()

    def teardown(self) -> None:
        for slot in self.slots:
            if slot is not None:
                if slot.waiter is not None:
                    slot.waiter.kill(timeout=HANG)
                slot.a.close()
                slot.b.close()
        for slot in self.zombies:
            if slot.kind == "socketpair":
                slot.a.detach()
                slot.b.detach()
            else:
                slot.a._closefd = slot.b._closefd = False
                slot.a.close()
                slot.b.close()
        self.zombies.clear()
        gc.collect()


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_random_fd_lifecycles_never_blind_or_break_the_loop(kind):
    if kind == "uvloop":
        pytest.importorskip("uvloop")
    before = tgreen.loop.loop_kind()
    tgreen.loop.set_loop_kind(kind)
    _hub._local.__dict__.clear()
    loop = _hub._new_loop()
    asyncio.set_event_loop(loop)
    try:
        run_state_machine_as_test(FdLifecycles, settings=settings(
            max_examples=int(os.environ.get("TGREEN_FD_EXAMPLES", "40")),
            stateful_step_count=25, deadline=None, derandomize=False,
            suppress_health_check=list(HealthCheck)))
    finally:
        gc.collect()   # under this test's ResourceWarning filter
        tgreen.loop.set_loop_kind(before)
        h = getattr(_hub._local, "hub", None)
        _hub._local.__dict__.clear()
        asyncio.set_event_loop(None)
        for lp in {loop, h.loop if h else loop}:
            if not lp.is_closed() and not lp.is_running():
                lp.close()
