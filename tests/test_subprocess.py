"""tgreen.subprocess and tgreen.os: child processes and pipes that block only
the calling greenlet. Scenarios that patch run in fresh interpreters."""

import os
import subprocess as std_subprocess
import sys
import textwrap
import threading
import time

import pytest

import tgreen
import tgreen.os as gos
import tgreen.subprocess as sp
from tgreen import _originals

PY = sys.executable
real_sleep = _originals.get("time", "sleep")


def run_script(code: str, timeout: float = 30) -> std_subprocess.CompletedProcess:
    out = std_subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True,
                             text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


class Ticker:
    """A greenlet that ticks every 10 ms and records the longest gap: if the
    hub was ever blocked, the gap shows it."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.max_gap = 0.0
        self.ticks = 0
        self._g = tgreen.spawn(self._run)

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            tgreen.sleep(self.period)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def stop(self) -> float:
        self._g.kill()
        return self.max_gap


# -- patched: the acceptance scenario ---------------------------------------------------

def test_run_from_ten_greenlets_is_concurrent_under_patch_all():
    out = run_script("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import subprocess, time, tgreen
        assert subprocess.Popen is tgreen.subprocess.Popen
        gaps = []
        def ticker():
            last = time.monotonic()
            while True:
                time.sleep(0.01)
                now = time.monotonic(); gaps.append(now - last); last = now
        t = tgreen.spawn(ticker)
        t0 = time.monotonic()
        jobs = [tgreen.spawn(subprocess.run, ["sleep", "0.2"], check=True) for _ in range(10)]
        tgreen.joinall(jobs, raise_error=True)
        elapsed = time.monotonic() - t0
        t.kill()
        assert all(j.value.returncode == 0 for j in jobs)
        print(round(elapsed, 3), round(max(gaps), 3), len(gaps))
    """)
    elapsed, max_gap, ticks = out.stdout.split()
    assert float(elapsed) < 1.5, out.stdout     # 10 x 0.2 s serially would be 2 s
    assert float(max_gap) < 0.19, out.stdout    # the hub never stalled for a child's 0.2 s
    assert int(ticks) >= 10


def test_patched_helpers_and_os_waits_are_green():
    run_script("""
        import tgreen.monkey; tgreen.monkey.patch_all()
        import os, subprocess, signal, time, tgreen
        assert os.waitpid is tgreen.os.waitpid
        assert subprocess.check_output(["echo", "hi"]) == b"hi\\n"
        assert subprocess.getstatusoutput("echo out; exit 3") == (3, "out")
        assert subprocess.getoutput("echo x") == "x"
        assert subprocess.call(["true"]) == 0
        try:
            subprocess.check_call(["false"])
        except subprocess.CalledProcessError as e:
            assert e.returncode == 1
        else:
            raise AssertionError("no CalledProcessError")
        # os.waitpid on a raw child while another greenlet keeps running
        p = subprocess.Popen(["sleep", "0.2"])
        ticks = []
        g = tgreen.spawn(lambda: [ticks.append(time.sleep(0.01)) for _ in range(10)])
        pid, status = os.waitpid(p.pid, 0)
        assert pid == p.pid and os.waitstatus_to_exitcode(status) == 0
        assert len(ticks) >= 5, ticks
        p.returncode = 0
        g.join()
    """)


# -- Popen: waits ----------------------------------------------------------------------

def test_wait_timeout_raises_TimeoutExpired_and_the_child_can_be_killed():
    p = sp.Popen(["sleep", "5"])
    t0 = time.monotonic()
    with pytest.raises(std_subprocess.TimeoutExpired) as info:
        p.wait(timeout=0.1)
    assert 0.09 < time.monotonic() - t0 < 1.0
    assert info.value.timeout == 0.1
    assert p.returncode is None
    p.kill()
    assert p.wait(timeout=5) == -9
    assert p.poll() == -9


def test_wait_lets_other_greenlets_run():
    ticker = Ticker()
    p = sp.Popen(["sleep", "0.3"])
    assert p.wait() == 0
    assert ticker.stop() < 0.1
    assert ticker.ticks >= 15


def test_many_greenlets_wait_for_one_child():
    p = sp.Popen(["sleep", "0.2"])
    waiters = [tgreen.spawn(p.wait) for _ in range(5)]
    tgreen.joinall(waiters, timeout=5)
    assert [w.value for w in waiters] == [0] * 5


def test_killed_child_reports_the_signal_as_stdlib():
    p = sp.Popen([PY, "-c", "import time; time.sleep(10)"])
    p.terminate()
    assert p.wait(timeout=5) == -15


def test_wait_without_pidfd_polls_and_still_works(monkeypatch):
    monkeypatch.setattr(gos, "_pidfd_works", False)
    ticker = Ticker()
    t0 = time.monotonic()
    p = sp.Popen(["sleep", "0.2"])
    assert p.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(std_subprocess.TimeoutExpired):
        sp.Popen(["sleep", "1"]).wait(timeout=0.05)
    assert ticker.stop() < 0.1


def test_wait_from_a_plain_thread_blocks_that_thread_only():
    result = []
    p = sp.Popen(["sleep", "0.1"])
    t = threading.Thread(target=lambda: result.append(p.wait()))
    t.start()
    t.join(5)
    assert result == [0]


# -- Popen: pipes -----------------------------------------------------------------------

def test_communicate_moves_megabytes_both_ways():
    data = os.urandom(3 * 1024 * 1024) * 2            # 6 MiB
    ticker = Ticker()
    code = ("import sys; d = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(d); sys.stderr.buffer.write(d[::-1])")
    p = sp.Popen([PY, "-c", code], stdin=sp.PIPE, stdout=sp.PIPE, stderr=sp.PIPE)
    out, err = p.communicate(data, timeout=30)
    assert out == data
    assert err == data[::-1]
    assert p.returncode == 0
    assert ticker.stop() < 0.2


def test_concurrent_communicates_with_cat():
    chunks = [bytes([i]) * (512 * 1024 + i) for i in range(4)]

    def one(chunk):
        return sp.run(["cat"], input=chunk, capture_output=True, check=True).stdout

    jobs = [tgreen.spawn(one, c) for c in chunks]
    tgreen.joinall(jobs, timeout=20, raise_error=True)
    assert [j.value for j in jobs] == chunks


def test_communicate_timeout_keeps_partial_output_and_can_resume():
    p = sp.Popen(["sh", "-c", "echo first; sleep 5; echo never"], stdout=sp.PIPE)
    with pytest.raises(std_subprocess.TimeoutExpired) as info:
        p.communicate(timeout=0.3)
    assert info.value.output == b"first\n"
    p.kill()
    out, err = p.communicate(timeout=5)
    assert out == b"first\n" and err is None
    assert p.returncode == -9


def test_run_timeout_kills_the_child():
    t0 = time.monotonic()
    with pytest.raises(std_subprocess.TimeoutExpired) as info:
        sp.run(["sh", "-c", "echo partial; exec sleep 10"], capture_output=True, timeout=0.3)
    assert time.monotonic() - t0 < 3
    assert info.value.stdout == b"partial\n"


def test_communicate_text_mode_and_universal_newlines():
    p = sp.Popen([PY, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper() + '\\r\\n')"],
                 stdin=sp.PIPE, stdout=sp.PIPE, text=True)
    out, _ = p.communicate("héllo")
    assert out == "HÉLLO\n"


def test_communicate_ignores_a_child_that_closed_stdin():
    # The child exits without reading: our input hits a closed pipe, which
    # communicate() must swallow, as the stdlib does.
    p = sp.Popen([PY, "-c", "import os; os.close(0); print('bye')"],
                 stdin=sp.PIPE, stdout=sp.PIPE)
    out, _ = p.communicate(b"x" * (1024 * 1024))
    assert out == b"bye\n"
    assert p.returncode == 0


def test_writing_to_a_dead_childs_stdin_raises_BrokenPipeError():
    p = sp.Popen(["true"], stdin=sp.PIPE)
    p.wait()
    with pytest.raises(BrokenPipeError):
        p.stdin.write(b"x" * 100000)
        p.stdin.flush()
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass


def test_reading_stdout_line_by_line_is_green():
    ticker = Ticker()
    code = "import time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.1)"
    p = sp.Popen([PY, "-c", code], stdout=sp.PIPE, text=True)
    lines = [line.strip() for line in p.stdout]
    assert lines == ["0", "1", "2"]
    assert p.wait() == 0
    p.stdout.close()
    assert ticker.stop() < 0.1


def test_pipe_objects_are_the_stdlib_io_types():
    import io

    p = sp.Popen(["cat"], stdin=sp.PIPE, stdout=sp.PIPE, bufsize=0)
    assert isinstance(p.stdin, io.RawIOBase) and isinstance(p.stdout, io.RawIOBase)
    p.stdin.write(b"abc")
    assert p.stdout.read(3) == b"abc"
    p.stdin.close()
    assert p.stdout.read() == b""
    p.stdout.close()
    p.wait()
    q = sp.Popen(["true"], stdout=sp.PIPE)
    assert isinstance(q.stdout, io.BufferedIOBase)
    q.communicate()


def test_pipeline_hands_a_green_pipe_to_another_child_as_blocking():
    p1 = sp.Popen([PY, "-c", "import time; time.sleep(0.1); print('a' * 100000)"],
                  stdout=sp.PIPE)
    p2 = sp.Popen(["wc", "-c"], stdin=p1.stdout, stdout=sp.PIPE)
    p1.stdout.close()
    out, _ = p2.communicate(timeout=10)
    assert out.strip() == b"100001"
    assert p1.wait() == 0


def test_pipeline_by_fd_number_also_gets_a_blocking_pipe():
    p1 = sp.Popen(["sh", "-c", "sleep 0.1; echo hello"], stdout=sp.PIPE)
    p2 = sp.Popen(["cat"], stdin=p1.stdout.fileno(), stdout=sp.PIPE)
    p1.stdout.close()
    assert p2.communicate(timeout=10)[0] == b"hello\n"
    assert p1.wait() == 0


def test_communicate_on_a_pipe_shared_with_another_child_keeps_it_blocking():
    p1 = sp.Popen(["sh", "-c", "sleep 0.1; echo shared"], stdout=sp.PIPE)
    p2 = sp.Popen(["sleep", "0.3"], stdin=p1.stdout)       # p1.stdout is blocking now
    out, _ = p1.communicate(timeout=10)
    assert out == b"shared\n"
    assert p2.wait() == 0


def test_getstatusoutput_and_check_output_are_green():
    ticker = Ticker()
    assert sp.getstatusoutput("sleep 0.2; echo done") == (0, "done")
    assert sp.check_output(["sh", "-c", "sleep 0.1; echo x"]) == b"x\n"
    with pytest.raises(std_subprocess.CalledProcessError):
        sp.check_output(["false"])
    assert ticker.stop() < 0.1


# -- tgreen.os ---------------------------------------------------------------------------

def test_os_waitpid_blocks_only_the_calling_greenlet():
    ticker = Ticker()
    p = std_subprocess.Popen(["sleep", "0.2"])
    pid, status = gos.waitpid(p.pid, 0)
    p.returncode = 0  # reaped by us
    assert pid == p.pid and os.waitstatus_to_exitcode(status) == 0
    assert ticker.stop() < 0.1
    assert ticker.ticks >= 10


def test_os_waitpid_any_child_and_nohang():
    p = std_subprocess.Popen(["sleep", "0.1"])
    assert gos.waitpid(p.pid, os.WNOHANG) == (0, 0)
    pid, status = gos.waitpid(-1, 0)
    p.returncode = 0
    assert pid == p.pid
    with pytest.raises(ChildProcessError):
        gos.waitpid(-1, 0)


def test_os_read_waits_greenly_on_a_blocking_pipe():
    r, w = os.pipe()
    try:
        ticker = Ticker()
        tgreen.spawn_later(0.15, gos.write, w, b"ping")
        t0 = time.monotonic()
        assert gos.read(r, 10) == b"ping"
        assert time.monotonic() - t0 > 0.1
        assert ticker.stop() < 0.1
        assert os.get_blocking(r)  # the fd's mode is untouched
    finally:
        os.close(r)
        os.close(w)


def test_os_write_waits_greenly_on_a_full_blocking_pipe():
    r, w = os.pipe()
    try:
        data = b"z" * (1024 * 1024)
        received = []

        def drain():
            n = 0
            while n < len(data):
                chunk = gos.read(r, 65536)
                received.append(chunk)
                n += len(chunk)

        d = tgreen.spawn(drain)
        assert gos.write(w, data) == len(data)
        d.join(5)
        assert b"".join(received) == data
    finally:
        os.close(r)
        os.close(w)


def test_os_read_on_a_nonblocking_fd_keeps_EAGAIN():
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            gos.read(r, 10)
        tgreen.spawn_later(0.05, os.write, w, b"x")
        assert gos.nb_read(r, 10) == b"x"
    finally:
        os.close(r)
        os.close(w)


def test_os_read_and_write_on_a_bad_fd_raise_the_stdlib_errors():
    # asyncore's file_wrapper reads fd -1 after close() and expects OSError.
    for fd, error in ((-1, OSError), (10**6, OSError), (2**40, OverflowError)):
        with pytest.raises(error):
            gos.read(fd, 1)
        with pytest.raises(error):
            gos.write(fd, b"x")


def test_fork_child_gets_a_fresh_loop_and_parent_keeps_its_events():
    # Without the at-fork hook the child would run the parent's loop, whose
    # epoll it shares: it stole the data sent to the parent's socket.
    out = run_script("""
        import os, tgreen, tgreen.os, tgreen.socket
        a, b = tgreen.socket.socketpair()
        got = []
        reader = tgreen.spawn(lambda: got.append(a.recv(10)))
        tgreen.sleep(0.01)                       # reader waits: fd a is in the epoll
        r, w = os.pipe()
        def child_part():
            pid = os.fork()
            if pid == 0:
                try:
                    tgreen.sleep(0.4)            # needs a loop of its own
                    os.write(w, b"child got %r" % got)
                finally:
                    os._exit(0)
            return pid
        pid = tgreen.spawn(child_part).get()
        tgreen.sleep(0.1)
        b.send(b"parent")
        reader.join(2)
        assert got == [b"parent"], got
        assert tgreen.os.read(r, 100) == b"child got []"
        _, status = tgreen.os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        print("ok")
    """)
    assert out.stdout.strip() == "ok"
