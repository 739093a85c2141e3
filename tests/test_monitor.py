"""tgreen.monitor: the blocking detector."""

import io
import logging
import subprocess
import sys
import textwrap

import pytest

import tgreen
import tgreen.loop
import tgreen.monitor as monitor
from tgreen import _originals

real_sleep = _originals.get("time", "sleep")


selector_loop_only = pytest.mark.skipif(
    tgreen.loop.loop_kind() == "uvloop",
    reason="needs asyncio's selector loop (uvloop: no Python-level selector or timer "
           "queue to look at, no would-block-forever check)")


@pytest.fixture(autouse=True)
def no_monitors():
    yield
    monitor.stop_all()


def blocking_parse_step():
    real_sleep(0.3)  # a C call that holds the thread: what the monitor is for


def test_logs_the_stack_of_the_greenlet_that_blocks(caplog):
    caplog.set_level(logging.WARNING, logger="tgreen.monitor")
    m = monitor.start(threshold_ms=100)
    tgreen.spawn(blocking_parse_step).join()
    tgreen.sleep(0.05)
    assert m.reports == 1
    [record] = [r for r in caplog.records if r.name == "tgreen.monitor"]
    text = record.getMessage()
    assert "blocking_parse_step" in text
    assert "real_sleep(0.3)" in text
    assert "Greenlet blocking_parse_step" in text
    assert "threshold 100 ms" in text


def test_writes_to_a_stream_when_given_one():
    out = io.StringIO()
    monitor.start(threshold_ms=50, stream=out)
    tgreen.spawn(blocking_parse_step).join()
    tgreen.sleep(0.05)
    assert "blocking_parse_step" in out.getvalue()
    assert "turned again after about" in out.getvalue()


def test_an_idle_or_green_loop_is_not_reported():
    out = io.StringIO()
    m = monitor.start(threshold_ms=100, stream=out)
    tgreen.sleep(0.3)                                  # idle loop, sleeping in epoll
    gs = [tgreen.spawn(lambda: [tgreen.sleep(0.001) for _ in range(100)]) for _ in range(10)]
    tgreen.joinall(gs)                                 # busy, but always coming back
    real_sleep(0.2)                                    # plain code, nothing due: not blocking
    assert m.reports == 0, out.getvalue()


@selector_loop_only
def test_main_greenlet_starving_due_timers_is_reported():
    out = io.StringIO()
    m = monitor.start(threshold_ms=50, stream=out)
    g = tgreen.spawn_later(0.01, lambda: None)         # due in 10 ms
    blocking_parse_step()                              # main holds the thread 300 ms
    g.join()
    assert m.reports == 1
    assert "main greenlet" in out.getvalue()
    assert "blocking_parse_step" in out.getvalue()


@selector_loop_only
def test_stop_ends_reporting_and_restores_the_selector():
    hub = tgreen.get_hub()
    before = hub.loop._selector
    m = monitor.start(threshold_ms=50, stream=io.StringIO())
    assert monitor.is_running()
    monitor.stop()
    assert not monitor.is_running()
    assert hub.loop._selector is before
    tgreen.spawn(blocking_parse_step).join()
    assert m.reports == 0


@selector_loop_only
def test_monitoring_keeps_the_would_block_forever_check():
    # A fresh interpreter: LoopExit needs no other OS thread alive, and
    # earlier tests leave idle executor threads; the watchdog must not count.
    code = textwrap.dedent("""
        import io, tgreen
        from tgreen import monitor
        monitor.start(threshold_ms=50, stream=io.StringIO())
        try:
            tgreen.Event().wait()
        except tgreen.LoopExit:
            print("LoopExit")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["LoopExit"], out.stdout + out.stderr


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError):
        monitor.start(threshold_ms=0)


def test_enabled_from_the_environment_at_hub_creation():
    code = textwrap.dedent("""
        import tgreen
        from tgreen import _originals
        def hogging_function():
            _originals.get("time", "sleep")(0.3)
        tgreen.spawn(hogging_function).join()
        tgreen.sleep(0.05)
    """)
    env = {"TGREEN_MONITOR_MS": "100", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    assert "hogging_function" in out.stderr
    assert "has not turned for" in out.stderr


def test_not_enabled_without_the_environment():
    code = "import tgreen; tgreen.sleep(0); import tgreen.monitor as m; print(m.is_running())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "False", out.stderr


def test_works_on_uvloop_with_a_heartbeat():
    pytest.importorskip("uvloop")
    code = textwrap.dedent("""
        import io, tgreen, tgreen.monitor
        from tgreen import _originals
        tgreen.use_uvloop()
        out = io.StringIO()
        m = tgreen.monitor.start(100, stream=out)
        def uv_blocker():
            _originals.get("time", "sleep")(0.4)
        tgreen.sleep(0.2)
        assert m.reports == 0, out.getvalue()
        tgreen.spawn(uv_blocker).join()
        tgreen.sleep(0.1)
        assert m.reports == 1 and "uv_blocker" in out.getvalue(), out.getvalue()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_tgreen_serve_block_warning_ms_logs_the_blocking_app_frame(tmp_path):
    import os
    import signal
    import socket as stdsocket
    import subprocess
    import sys
    import time
    import urllib.request

    app = tmp_path / "blockapp.py"
    app.write_text(
        "import tgreen.monkey\n"
        "sleep = tgreen.monkey.get_original('time', 'sleep')\n"
        "def hold_the_loop_for_a_while():\n"
        "    sleep(0.4)\n"
        "def application(environ, start_response):\n"
        "    hold_the_loop_for_a_while()\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n")
    s = stdsocket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "tgreen.serve", str(app), "--bind", f"127.0.0.1:{port}",
                             "--block-warning-ms", "100"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert body == b"ok"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "hold_the_loop_for_a_while" in err and "tgreen.monitor" in err, err
