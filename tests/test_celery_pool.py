"""tgreen.celery.TaskPool under real Celery workers (``python -m tgreen.celery``
and ``celery worker -P custom``) with a real Redis as broker and result
backend: concurrency, two workers sharing one broker, soft and hard time
limits, revoke with terminate, countdown/ETA, heartbeats while busy,
--autoscale, and the warm shutdown.

The task module never imports tgreen: the worker patches the stdlib, so its
``time.sleep`` is green. The test process is a plain (unpatched) Celery client.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from _serve_helpers import ROOT
from servers import redis_server  # noqa: F401 - pytest fixture

celery = pytest.importorskip("celery")

TASKS = textwrap.dedent("""
    import os
    import time

    from celery import Celery
    from celery.exceptions import SoftTimeLimitExceeded

    url = os.environ["CAPP_URL"]
    app = Celery("capp", broker=url, backend=url)
    app.conf.update(broker_connection_retry_on_startup=True, task_track_started=True,
                    worker_redirect_stdouts=False)

    @app.task
    def nap(seconds):
        start = time.time()
        time.sleep(seconds)
        return [start, time.time(), os.getpid()]

    @app.task
    def catches_soft_limit(seconds):
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceeded:
            return "caught SoftTimeLimitExceeded"
        return "slept"

    @app.task
    def cleans_up(seconds, key):
        import redis
        try:
            time.sleep(seconds)
        finally:
            redis.Redis.from_url(url).set(key, "cleaned up")

    @app.task
    def stamp():
        return time.time()
""")

HOST = "tgreen"
_dbs = itertools.count(1)


class Worker:
    """A Celery worker subprocess running capp's tasks on tgreen's pool:
    ``python -m tgreen.celery`` (``via="module"``) or ``celery worker -P
    custom`` with CELERY_CUSTOM_WORKER_POOL (``via="custom"``); Celery's
    own ``-P gevent`` (``via="gevent"``) for the benchmark's calibration."""

    def __init__(self, tmp_path: Path, url: str, name: str, *args: str, via: str = "module",
                 env: dict | None = None) -> None:
        (tmp_path / "capp.py").write_text(TASKS)
        self.name = f"{name}@{HOST}"
        self.log_path = tmp_path / f"{name}.log"
        common = ["-A", "capp", "worker", "-n", self.name, "--loglevel", "WARNING",
                  "--without-gossip", "--without-mingle", *args]
        if via == "module":
            self.cmd = [sys.executable, "-m", "tgreen.celery", *common]
        else:
            pool = "gevent" if via == "gevent" else "custom"
            self.cmd = [sys.executable, "-m", "celery", *common[:3], "-P", pool, *common[3:]]
        self.env = dict(os.environ, CAPP_URL=url, **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), self.env.get("PYTHONPATH", "")])
        if via == "custom":
            self.env["CELERY_CUSTOM_WORKER_POOL"] = "tgreen.celery:TaskPool"
        self.cwd = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self, client: celery.Celery) -> Worker:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not client.control.ping(destination=[self.name], timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the worker did not start:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stats(self, client: celery.Celery) -> dict:
        return (client.control.inspect([self.name], timeout=2).stats() or {}).get(self.name, {})


def _client(url: str) -> celery.Celery:
    app = celery.Celery("client", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = True
    return app


@pytest.fixture
def db_url(redis_server):  # noqa: F811
    """A Redis database of its own for each test (and each shared worker)."""
    import redis

    db = next(_dbs) % 16
    url = f"redis://{redis_server.host}:{redis_server.port}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def shared(redis_server, tmp_path_factory):  # noqa: F811
    """One ``python -m tgreen.celery -c 200`` worker for the tests that do not stop it."""
    import redis

    url = f"redis://{redis_server.host}:{redis_server.port}/15"
    redis.Redis.from_url(url).flushdb()
    client = _client(url)
    worker = Worker(tmp_path_factory.mktemp("celery"), url, "shared", "-c", "200")
    worker.start(client)
    try:
        yield worker, client, url
    finally:
        worker.stop()
        client.close()


def _spans(values: list) -> tuple[float, float]:
    starts = [v[0] for v in values]
    ends = [v[1] for v in values]
    return max(ends) - min(starts), max(starts) - min(starts)


def _peak_overlap(values: list) -> int:
    edges = sorted([(v[0], 1) for v in values] + [(v[1], -1) for v in values], key=lambda e: (e[0], e[1]))
    peak = cur = 0
    for _, d in edges:
        cur += d
        peak = max(peak, cur)
    return peak


def _wait_state(result, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"task stayed {result.state}, expected {state}"
        time.sleep(0.05)


# -- concurrency -------------------------------------------------------------------------


def test_400_half_second_tasks_on_200_greenlets_take_about_a_second_not_200(shared):
    worker, client, _ = shared
    # Queued before the worker consumes them, so the client's publishing
    # rate is not what is measured; then the worker is told to consume.
    results = [client.send_task("capp.nap", (0.5,), queue="burst") for _ in range(400)]
    t0 = time.monotonic()
    client.control.add_consumer("burst", destination=[worker.name], reply=True, timeout=5)
    values = [r.get(timeout=60) for r in results]
    wall = time.monotonic() - t0
    span, _ = _spans(values)
    print(f"400 x 0.5 s on -c 200: first start to last end {span:.2f} s, {wall:.2f} s from add_consumer")
    peak = _peak_overlap(values)
    assert 20 < peak <= 200, peak                  # many at once, never more than -c
    assert span < 10, span                         # serially: 200 s; ideally ~1 s
    client.control.cancel_consumer("burst", destination=[worker.name], reply=True, timeout=5)


def test_two_workers_consuming_one_broker_share_the_work(shared):
    worker, client, url = shared
    other = Worker(worker.cwd, url, "other", "-c", "50", via="custom").start(client)
    try:
        results = [client.send_task("capp.nap", (0.3,)) for _ in range(100)]
        pids = [r.get(timeout=60)[2] for r in results]
        by_worker = {pid: pids.count(pid) for pid in set(pids)}
        assert set(by_worker) == {worker.proc.pid, other.proc.pid}, by_worker
    finally:
        other.stop()


# -- time limits and revocation --------------------------------------------------------


def test_a_soft_time_limit_raises_SoftTimeLimitExceeded_in_the_task_which_can_catch_it(shared):
    worker, client, _ = shared
    t0 = time.monotonic()
    caught = client.send_task("capp.catches_soft_limit", (30,), soft_time_limit=0.5)
    uncaught = client.send_task("capp.nap", (30,), soft_time_limit=0.5)
    assert caught.get(timeout=20) == "caught SoftTimeLimitExceeded"
    with pytest.raises(Exception) as info:
        uncaught.get(timeout=20)
    assert type(info.value).__name__ == "SoftTimeLimitExceeded"
    assert time.monotonic() - t0 < 15
    assert "Soft time limit (0.5s) exceeded" in worker.log()


def test_a_hard_time_limit_ends_the_task_and_the_worker_keeps_working(shared):
    worker, client, _ = shared
    beside = client.send_task("capp.nap", (2,))
    killed = client.send_task("capp.catches_soft_limit", (30,), time_limit=0.5)
    with pytest.raises(Exception) as info:
        killed.get(timeout=20)
    assert type(info.value).__name__ == "TimeLimitExceeded"
    assert killed.state == "FAILURE"
    assert "Hard time limit (0.5s) exceeded" in worker.log()
    assert len(beside.get(timeout=20)) == 3            # the task beside it was not touched
    assert len(client.send_task("capp.nap", (0,)).get(timeout=20)) == 3


def test_revoke_with_terminate_ends_a_running_task_and_runs_its_finally(shared):
    worker, client, url = shared
    import redis

    key = f"cleanup-{time.time()}"
    running = client.send_task("capp.cleans_up", (30, key))
    _wait_state(running, "STARTED")
    t0 = time.monotonic()
    running.revoke(terminate=True)
    _wait_state(running, "REVOKED", timeout=10)
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 10
    while redis.Redis.from_url(url).get(key) != b"cleaned up":
        assert time.monotonic() < deadline, "the task's finally block did not run"
        time.sleep(0.05)
    active = client.control.inspect([worker.name], timeout=2).active() or {}
    assert running.id not in [t["id"] for t in active.get(worker.name, [])]
    assert len(client.send_task("capp.nap", (0,)).get(timeout=20)) == 3


# -- timers ------------------------------------------------------------------------------


def test_countdown_and_eta_tasks_run_at_their_time_while_other_tasks_run(shared):
    _, client, _ = shared
    sent = time.time()
    later = client.send_task("capp.stamp", countdown=2)
    eta = client.send_task("capp.stamp", eta=datetime.datetime.now(datetime.timezone.utc)
                           + datetime.timedelta(seconds=1.5))
    now = client.send_task("capp.nap", (0,))
    assert now.get(timeout=20)[0] < sent + 1.5         # not held up by the waiting ones
    assert sent + 1.9 <= later.get(timeout=20) < sent + 6
    assert sent + 1.4 <= eta.get(timeout=20) < sent + 6


def test_heartbeats_and_control_commands_go_on_while_200_tasks_run(shared):
    worker, client, _ = shared
    results = [client.send_task("capp.nap", (6,)) for _ in range(200)]
    _wait_state(results[-1], "STARTED")
    beats: list[float] = []

    def capture() -> None:
        with client.connection_for_read() as conn:
            recv = client.events.Receiver(conn, handlers={
                "worker-heartbeat": lambda e: beats.append(time.time()) if e["hostname"] == worker.name else None})
            with contextlib.suppress(TimeoutError):     # no event for 6 s
                recv.capture(limit=2, timeout=6, wakeup=False)

    t = threading.Thread(target=capture)
    t.start()
    t0 = time.monotonic()
    assert client.control.ping(destination=[worker.name], timeout=2)
    assert time.monotonic() - t0 < 2
    t.join(15)
    assert not t.is_alive()
    assert beats, "no worker-heartbeat event while the tasks ran"
    for r in results:
        r.get(timeout=30)


# -- scaling and shutdown ----------------------------------------------------------------


def test_autoscale_grows_the_pool_under_load_and_shrinks_it_when_idle(tmp_path, db_url):
    client = _client(db_url)
    worker = Worker(tmp_path, db_url, "auto", "--autoscale", "20,2",
                    env={"AUTOSCALE_KEEPALIVE": "1"}).start(client)
    try:
        assert worker.stats(client)["pool"]["max-concurrency"] == 2
        values = [r.get(timeout=60) for r in [client.send_task("capp.nap", (1.5,)) for _ in range(20)]]
        assert _peak_overlap(values) > 2
        deadline = time.monotonic() + 20
        while worker.stats(client)["pool"]["max-concurrency"] != 2:
            assert time.monotonic() < deadline, worker.stats(client)
            time.sleep(0.5)
    finally:
        worker.stop()
        client.close()


def test_sigterm_lets_running_tasks_finish_and_returns_the_waiting_ones_to_the_broker(tmp_path, db_url):
    client = _client(db_url)
    worker = Worker(tmp_path, db_url, "term", "-c", "3", via="custom").start(client)
    try:
        results = [client.send_task("capp.nap", (2,)) for _ in range(6)]
        deadline = time.monotonic() + 20
        while sum(r.state == "STARTED" for r in results) < 3:
            assert time.monotonic() < deadline, [r.state for r in results]
            time.sleep(0.05)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(20) == 0
        states = [r.state for r in results]
        assert states.count("SUCCESS") == 3 and states.count("PENDING") == 3, states
        # Nothing is lost: the next worker runs the three that had not started.
        later = Worker(tmp_path, db_url, "next", "-c", "3").start(client)
        try:
            assert all(len(r.get(timeout=30)) == 3 for r in results)
        finally:
            later.stop()
    finally:
        worker.stop()
        client.close()


# -- the command line ---------------------------------------------------------------------


def test_python_m_tgreen_celery_refuses_another_pool_in_one_line():
    out = subprocess.run([sys.executable, "-m", "tgreen.celery", "-A", "capp", "worker", "-P", "prefork"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "-P" in out.stderr, out.stderr


def test_a_pool_named_only_in_the_configuration_refuses_to_start_saying_how(tmp_path, db_url):
    (tmp_path / "capp.py").write_text(TASKS + "\napp.conf.worker_pool = 'custom'\n")
    env = dict(os.environ, CAPP_URL=db_url, CELERY_CUSTOM_WORKER_POOL="tgreen.celery:TaskPool",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "capp", "worker", "--without-mingle"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False)
    assert out.returncode != 0
    assert "python -m tgreen.celery -A APP worker" in out.stdout + out.stderr
