"""Real libraries against real servers under ``patch_all()``: concurrent,
correct, and never blocking the hub.

Each case runs one scenario of ``library_scenarios.py`` in a fresh Python
process (patching never leaks into this test process) against servers that
``servers.py`` starts on loopback for the session. A scenario runs N tasks
that each wait DELAY seconds in the server; the assertions:

* correctness: the scenario checks every result itself (it exits non-zero
  otherwise);
* concurrency: N tasks finish in well under N x DELAY (``MAX_WALL``);
* the hub never blocked: a greenlet ticking every 10 ms never saw a gap
  near DELAY (``MAX_GAP``; a blocking call would show as a gap >= DELAY, as
  the negative controls prove). Connection set-up phases (N TCP/TLS
  handshakes or logins at once) are CPU-bound bursts and get the looser
  ``MAX_SETUP_GAP``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import mariadb_server, postgres_server, redis_server  # noqa: F401, F811 - fixtures

SCRIPT = Path(__file__).with_name("library_scenarios.py")
DELAY = 0.2          # seconds each task waits in the server (library_scenarios.DELAY)
MAX_WALL = 0.8       # 50 tasks x 0.2 s one after the other would take 10 s
MAX_GAP = 0.15       # < DELAY: no single wait blocked the loop
MAX_SETUP_GAP = 0.5  # handshakes/logins: CPU bursts, still far from blocking
NO_PSYCOPG = {"TGREEN_SCENARIO_NO_PSYCOPG": "1"}  # patch_all(psycopg=False)

pytestmark = pytest.mark.timeout(120)


def run_scenario(name: str, config: dict | None = None, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), name, json.dumps(config or {})],
                         check=False, capture_output=True, text=True, timeout=90,
                         env=dict(os.environ, **(env or {})), cwd=SCRIPT.parent)
    lines = out.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    assert out.returncode == 0, f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-6000:]}"
    if last.startswith("SKIP "):
        pytest.skip(last[5:])
    assert last.startswith("RESULT "), f"{name} printed no result:\n{out.stdout}\n{out.stderr}"
    result = json.loads(last[7:])
    print(f"{name}: {result}")
    return result


def _is_green(result: dict) -> bool:
    return (result["wall"] < MAX_WALL and result["max_gap"] < MAX_GAP
            and result.get("setup_max_gap", 0) < MAX_SETUP_GAP)


def check_green(name: str, config: dict | None = None) -> dict:
    """Run the scenario; on a timing miss run it again, three runs at most.

    Correctness must hold on every run (the scenario exits non-zero
    otherwise). Timing gets three chances because CI shares two cores
    with whatever else runs: a burst of load can stretch one loop turn, but
    a call that really blocks stretches every run past DELAY.
    """
    result = run_scenario(name, config)
    for _ in range(2):
        if _is_green(result):
            break
        print(f"{name}: timing missed, running again")
        result = run_scenario(name, config)
    assert result["wall"] < MAX_WALL, result
    assert result["max_gap"] < MAX_GAP, result
    if "setup_wall" in result:
        assert result["setup_max_gap"] < MAX_SETUP_GAP, result
    return result


def assert_blocking(result: dict) -> None:
    """A negative control: n tasks ran one after the other, hub frozen."""
    assert result["wall"] >= 0.9 * result["n"] * DELAY, result
    assert result["max_gap"] >= 0.9 * DELAY, result
    assert result["max_idle_gap"] >= 0.8 * DELAY, result  # waiting, not computing


@pytest.fixture
def pg(postgres_server):
    s = postgres_server
    return {"pg": {"host": s.host, "port": s.port, **s.info}}


@pytest.fixture
def mysql(mariadb_server):
    s = mariadb_server
    return {"mysql": {"host": s.host, "port": s.port, **s.info}}


@pytest.fixture
def redis_cfg(redis_server):
    return {"redis": {"host": redis_server.host, "port": redis_server.port}}


# -- HTTP ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["http_client", "urllib_request", "requests_http", "urllib3_http"])
def test_http_clients_run_concurrently_against_a_green_http_server(name):
    needs = {"requests_http": "requests", "urllib3_http": "urllib3"}.get(name)
    if needs:
        pytest.importorskip(needs)
    check_green(name)


def test_requests_over_https_with_a_test_ca():
    pytest.importorskip("requests")
    pytest.importorskip("cryptography")
    result = check_green("requests_https")
    assert result.get("untrusted_ca_rejected"), result


def test_thread_pool_executor_with_green_threads_fetches_concurrently():
    pytest.importorskip("requests")
    check_green("threadpool_requests")


# -- Redis --------------------------------------------------------------------------


def test_redis_blpop_from_100_greenlets(redis_cfg):
    pytest.importorskip("redis")
    check_green("redis_blpop", redis_cfg)


# -- PostgreSQL ---------------------------------------------------------------------


def test_pg8000_queries_run_concurrently(pg):
    pytest.importorskip("pg8000")
    check_green("pg8000_sleep", pg)


def test_psycopg2_with_the_green_wait_callback_runs_concurrently(pg):
    pytest.importorskip("psycopg2")
    check_green("psycopg2_green", pg)


def test_psycopg2_without_the_wait_callback_blocks_the_hub(pg):
    """Negative control: patching the socket module cannot reach libpq's
    socket (patch_all(psycopg=False) leaves the wait callback unset)."""
    pytest.importorskip("psycopg2")
    assert_blocking(run_scenario("psycopg2_blocking", pg, env=NO_PSYCOPG))


def test_patch_all_makes_psycopg2_and_psycopg3_green_when_they_are_imported(pg):
    """An app that never imports tgreen (Django under tgreen-serve) gets
    green queries: patch_all() hooks the drivers' import."""
    pytest.importorskip("psycopg2")
    pytest.importorskip("psycopg")
    check_green("psycopg_drivers_patched_by_patch_all", pg)


def test_patch_all_makes_already_imported_psycopg_drivers_green(pg):
    pytest.importorskip("psycopg2")
    pytest.importorskip("psycopg")
    result = run_scenario("psycopg_drivers_imported_before_patch_all", pg,
                          env={"TGREEN_SCENARIO_NO_PATCH": "1"})
    assert result["wall"] < MAX_WALL and result["max_gap"] < MAX_GAP, result


def test_psycopg2_killed_or_timed_out_query_is_cancelled_in_the_server(pg):
    pytest.importorskip("psycopg2")
    result = run_scenario("psycopg2_cancel", pg)
    assert result["timeout_raised_after"] < DELAY + 2.0, result  # the query sleeps 30 s
    assert result["kill_took"] < 5.0, result
    assert result["queries_left_running"] == 0, result


def test_psycopg3_with_c_speedups_blocks_under_patch_all_without_psycopg(pg):
    """Documents why make_psycopg_green() exists: psycopg[binary]/[c] waits in C,
    which patching the socket and select modules cannot reach."""
    pytest.importorskip("psycopg")
    result = run_scenario("psycopg3_patched_only", pg, env=NO_PSYCOPG)
    if result["wait_function"] == "wait_c":
        assert_blocking(result)
    else:  # the pure-Python build waits with the (patched) select.poll
        assert result["wall"] < MAX_WALL, result


def test_psycopg3_made_green_runs_concurrently(pg):
    pytest.importorskip("psycopg")
    check_green("psycopg3_green", pg)


def test_psycopg3_killed_or_timed_out_query_is_cancelled_in_the_server(pg):
    pytest.importorskip("psycopg")
    result = run_scenario("psycopg3_cancel", pg)
    assert result["timeout_raised_after"] < DELAY + 2.0, result  # the query sleeps 30 s
    assert result["kill_took"] < 5.0, result
    assert result["queries_left_running"] == 0, result


def test_psycopg_drivers_survive_libpq_reusing_fd_numbers(pg):
    """Regression: a loop registration left on a fd that libpq closed made
    the next connection with that fd number hang (psycopg 3) or fail with
    ENOENT from epoll (psycopg2)."""
    pytest.importorskip("psycopg2")
    pytest.importorskip("psycopg")
    result = run_scenario("pg_fd_reuse", pg)
    for driver in ("psycopg2", "psycopg3"):
        assert result[f"{driver}_distinct_fds"] <= 2, result  # the numbers were reused
        assert result[f"{driver}_reconnects_wall"] < 6.0, result
    assert all(result["waits_read_write_either"][:2]), result


def test_psycopg_green_waits_leave_real_os_threads_alone(pg):
    """The wait callback is process-wide: in a real OS thread it must block
    that thread only (10 queries in 10 threads, concurrently), not give it
    an event loop."""
    pytest.importorskip("psycopg2")
    pytest.importorskip("psycopg")
    check_green("pg_in_os_threads", pg)


def test_pure_python_psycopg3_reconnects_promptly_under_patch_all_without_psycopg(pg):
    pytest.importorskip("psycopg")
    result = run_scenario("psycopg3_python_reconnects", pg, env={"PSYCOPG_IMPL": "python", **NO_PSYCOPG})
    assert result["wait_function"] == "wait_poll", result
    assert result["reconnects_wall"] < 1.0, result  # 20 connect/query/close; ~0.15 s when right


# -- MariaDB ------------------------------------------------------------------------


def test_pymysql_queries_run_concurrently(mysql):
    pytest.importorskip("pymysql")
    check_green("pymysql_sleep", mysql)


# -- SMTP, subprocess ------------------------------------------------------------------


def test_smtplib_sends_concurrently_to_an_smtp_server_on_the_same_loop():
    pytest.importorskip("aiosmtpd")
    check_green("smtplib_send")


def test_subprocess_run_from_10_greenlets():
    result = check_green("subprocess_run")  # 10 x 0.2 s one after the other: 2 s
    assert result["n"] == 10
