"""Where tgreen-serve's settings come from: flags, TGREEN_SERVE_* variables, a
TOML --config file, systemd socket activation; --pid, --chdir, --user/--group;
errors that name the setting the way the user wrote it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests
from _serve_helpers import ROOT, Serve, _env, free_port, run_cli, write_app

# Each answer says which worker served it, under which uid, and the environ
# values a setting changes.
APP = textwrap.dedent("""
    import os
    import tgreen

    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{tgreen.worker_id()} {os.getuid()} {os.getgid()} {environ['SCRIPT_NAME']!r} "
                f"{os.getcwd()} {os.environ.get('LISTEN_FDS')}".encode()]
""")


def _run(*args: str, env: dict | None = None, cwd: str | os.PathLike = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tgreen.serve", *args], capture_output=True, text=True,
                          timeout=20, cwd=cwd, env=_env(env), check=False)


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tgreen-serve: error: "), out.stderr
    return lines[0][len("tgreen-serve: error: "):]


def test_tgreen_serve_workers_in_the_environment_sets_the_worker_count(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, env={"TGREEN_SERVE_WORKERS": "2"}) as srv:
        assert len(srv.wait_workers(2)) == 2
        seen = {requests.get(srv.url, timeout=5).text.split()[0] for _ in range(40)}
    assert seen <= {"1", "2"}


def test_flags_win_over_the_environment_which_wins_over_the_config_file(tmp_path):
    app = write_app(tmp_path, APP)
    log = tmp_path / "access.log"
    port = free_port()
    conf = tmp_path / "serve.toml"
    conf.write_text(textwrap.dedent(f"""
        app = "{app}"
        bind = ["127.0.0.1:{port}"]
        workers = 3
        root-path = "/from-file"
        access-log = "{log}"
        keep_alive = 2.5
    """))
    env = {"TGREEN_SERVE_CONFIG": str(conf), "TGREEN_SERVE_WORKERS": "2",
           "TGREEN_SERVE_ROOT_PATH": "/from-env"}
    # No app argument and no --bind: both come from the file.
    proc = subprocess.Popen([sys.executable, "-m", "tgreen.serve", "--root-path", "/from-flag"],
                            cwd=ROOT, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    srv = Serve(app, "--bind", "x")
    srv.proc, srv.port = proc, port
    try:
        srv.wait_listening()
        assert len(srv.wait_workers(2)) == 2          # env over file
        time.sleep(0.5)
        assert len(srv.workers()) == 2
        body = requests.get(srv.url + "/from-flag/x", timeout=5).text
        assert body.split()[3] == "'/from-flag'"      # flag over env over file
        deadline = time.monotonic() + 5               # a file-only setting applies
        while "/from-flag/x" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


@pytest.mark.parametrize("env, toml, args, message", [
    ({"TGREEN_SERVE_CORES": "0"}, None, [], "TGREEN_SERVE_CORES must be at least 1 (got 0)"),
    ({"TGREEN_SERVE_KEEP_ALIVE": "soon"}, None, [],
     "TGREEN_SERVE_KEEP_ALIVE must be a number of seconds (got 'soon')"),
    ({"TGREEN_SERVE_WORKRS": "2"}, None, [],
     "TGREEN_SERVE_WORKRS is not a tgreen-serve setting (did you mean TGREEN_SERVE_WORKERS?)"),
    ({"TGREEN_SERVE_NO_PATCH": "maybe"}, None, [], "TGREEN_SERVE_NO_PATCH must be true or false"),
    ({}, "workers = 0\n", [], "serve.toml: workers must be at least 1 (got 0)"),
    ({}, "keep-alive = -1\n", [], "serve.toml: keep-alive must be a finite number of seconds"),
    ({}, "wrokers = 2\n", [], "serve.toml: wrokers: not a tgreen-serve setting (did you mean workers?)"),
    ({}, "no-patch = 1\n", [], "serve.toml: no-patch must be true or false (got 1)"),
    ({}, "workers = \n", [], "--config {conf}: not valid TOML: "),
    ({}, "certfile = 'c.pem'\n", [], "serve.toml: certfile and --keyfile go together"),
    ({"TGREEN_SERVE_CONFIG": "{tmp}/nope.toml"}, None, [],
     "TGREEN_SERVE_CONFIG {tmp}/nope.toml: no such file"),
    ({}, None, ["--config", "{tmp}/nope.toml"], "--config {tmp}/nope.toml: no such file"),
    ({}, "config = 'other.toml'\n", [], "serve.toml: config: a config file cannot name another one"),
])
def test_a_bad_setting_is_one_line_naming_it_as_written(tmp_path, env, toml, args, message):
    app = write_app(tmp_path, APP)
    conf = tmp_path / "serve.toml"
    args = [a.format(tmp=tmp_path) for a in args]
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    if toml is not None:
        conf.write_text(toml)
        args = ["--config", str(conf), *args]
    err = _one_line_error(_run(str(app), *args, env=env))
    assert err.startswith(message.format(tmp=tmp_path, conf=conf)), err


def test_a_flag_wins_even_over_a_bad_environment_value_of_another_setting_only(tmp_path):
    # A bad value is an error wherever it is given: a flag for another
    # setting does not hide it.
    app = write_app(tmp_path, APP)
    err = _one_line_error(_run(str(app), "--cores", "5", env={"TGREEN_SERVE_WORKERS": "x"}))
    assert err.startswith("TGREEN_SERVE_WORKERS must be an integer")


def test_no_app_anywhere_is_one_line(tmp_path):
    err = _one_line_error(_run(cwd=tmp_path))
    assert err.startswith("no app given")


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd-socket-activate missing")
def test_systemd_socket_activation_serves_the_passed_socket(tmp_path):
    app = write_app(tmp_path, APP)
    port = free_port()
    # systemd's own test tool: listens, then execs us with LISTEN_FDS=1,
    # LISTEN_PID=<our pid> and the socket as fd 3. --bind names another
    # port, which must not be bound (the systemd socket replaces it).
    other = free_port()
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                             "-E", "PYTHONPATH", sys.executable, "-m", "tgreen.serve", str(app),
                             "--bind", f"127.0.0.1:{other}", "--log-level", "info"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:  # until systemd-socket-activate listens
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=15)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert r.status_code == 200 and r.text.startswith("1 ")
        # The app's environment no longer claims the sockets (sd_listen_fds(1)).
        assert r.text.split()[-1] == "None"
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", other), timeout=2):
            pass
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert "socket activation" in out and "fd" in out, out


def test_systemd_variables_for_another_process_are_ignored(tmp_path):
    app = write_app(tmp_path, APP)
    with Serve(app, env={"LISTEN_FDS": "1", "LISTEN_PID": "1"}) as srv:
        assert requests.get(srv.url, timeout=5).status_code == 200


def test_pid_file_holds_the_master_pid_and_is_removed_at_exit(tmp_path):
    app = write_app(tmp_path, APP)
    pidfile = tmp_path / "serve.pid"
    with Serve(app, "--pid", str(pidfile)) as srv:
        assert pidfile.read_text().strip() == str(srv.pid)
        # A second server on the same pid file is refused: one line, exit 2.
        err = _one_line_error(_run(str(app), "--pid", str(pidfile), "--bind", f"127.0.0.1:{free_port()}"))
        assert err == f"--pid {pidfile}: already running as pid {srv.pid} " \
                      "(or a stale file naming a live process)"
        assert pidfile.read_text().strip() == str(srv.pid)
        srv.stop(signal.SIGTERM)
    assert not pidfile.exists()


def test_a_stale_pid_file_is_replaced(tmp_path):
    app = write_app(tmp_path, APP)
    pidfile = tmp_path / "serve.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    with Serve(app, "--pid", str(pidfile)) as srv:
        assert pidfile.read_text().strip() == str(srv.pid)


def test_pid_file_in_a_missing_directory_is_one_line(tmp_path):
    app = write_app(tmp_path, APP)
    err = _one_line_error(_run(str(app), "--pid", str(tmp_path / "no" / "x.pid"),
                               "--bind", f"127.0.0.1:{free_port()}"))
    assert err == f"--pid {tmp_path / 'no' / 'x.pid'}: No such file or directory"


def test_chdir_comes_first_so_the_app_is_found_from_there(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    write_app(site, APP, name="web.py")
    with Serve("web.py", "--chdir", str(site)) as srv:
        body = requests.get(srv.url, timeout=5).text
    assert body.split()[-2] == str(site)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_user_and_group_switch_the_workers_not_the_master(tmp_path):
    import grp
    import pwd
    import tempfile
    from pathlib import Path

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    # pytest's tmp_path is private to root; the worker must read the app.
    site = Path(tempfile.mkdtemp(prefix="tgreen-user-"))
    os.chmod(site, 0o755)
    app = write_app(site, APP)
    os.chmod(app, 0o644)
    with Serve(app, "--user", "nobody", "--group", group) as srv:
        wid, uid, gid = requests.get(srv.url, timeout=5).text.split()[:3]
        master_uid = os.stat(f"/proc/{srv.pid}").st_uid
    shutil.rmtree(site)
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert master_uid == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, switching user is allowed")
def test_user_without_root_is_one_line(tmp_path):
    app = write_app(tmp_path, APP)
    err = _one_line_error(_run(str(app), "--user", "0"))
    assert err == "--user: switching to another user needs tgreen-serve to start as root"


def test_monkey_help_prints_usage():
    out = subprocess.run([sys.executable, "-m", "tgreen.monkey", "--help"], capture_output=True,
                         text=True, timeout=20, cwd=ROOT, env=_env(), check=False)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m tgreen.monkey"), out
    assert out.stderr == ""
    bad = subprocess.run([sys.executable, "-m", "tgreen.monkey", "--frobnicate"], capture_output=True,
                         text=True, timeout=20, cwd=ROOT, env=_env(), check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad


def test_help_lists_the_config_flags():
    out = run_cli("--help")
    for flag in ("--config", "--no-patch", "--pid", "--chdir", "--user", "--group"):
        assert flag in out.stdout
