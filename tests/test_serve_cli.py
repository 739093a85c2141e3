"""tgreen-serve's command line: options, app specs, binds, logs."""

from __future__ import annotations

import os
import re
import socket
import textwrap
import time

import pytest
import requests
from _serve_helpers import Serve, free_port, run_cli, write_app

HELLO = textwrap.dedent("""
    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello from " + environ["PATH_INFO"].encode()]
""")


def test_help_documents_every_option():
    from tgreen.wsgi.config import OPTIONS

    out = run_cli("--help")
    assert out.returncode == 0
    for opt in OPTIONS:
        assert opt.cli_flag in out.stdout
    assert "TERM graceful stop" in out.stdout and "postfork" in out.stdout


def test_python_m_and_console_script_entry_point_agree():
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["tgreen-serve"] == "tgreen.serve:main"


@pytest.mark.parametrize("args, message", [
    (["--cores", "0"], "--cores must be at least 1"),
    (["--cores", "many"], "--cores must be an integer"),
    (["--workers", "-2"], "--workers must be at least 1"),
    (["--bind", "localhost:http"], "bad port"),
    (["--bind", "::1:80"], "[ADDR]:PORT"),
    (["--keep-alive", "-1"], "--keep-alive must be a finite number of seconds"),
    (["--graceful-timeout", "soon"], "--graceful-timeout must be a number of seconds"),
    (["--loop", "trio"], "--loop must be one of asyncio, uvloop"),
    (["--log-level", "loud"], "--log-level must be one of"),
    (["--forwarded-allow-ips", "10.0.0.300"], "--forwarded-allow-ips: '10.0.0.300' is not an IP"),
    (["--root-path", "app/"], "--root-path must start with '/'"),
    (["--certfile", "c.pem"], "--certfile and --keyfile go together"),
    (["--certfile", "nope.pem", "--keyfile", "nope.key"],
     "--certfile nope.pem, --keyfile nope.key: cannot load the certificate and key: No such file"),
    (["--chdir", "/no/such/dir"], "--chdir /no/such/dir: No such file or directory"),
    (["--user", "no-such-user-here"], "--user: no such user 'no-such-user-here'"),
    (["--group", "no-such-group-here"], "--group: no such group 'no-such-group-here'"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_bad_value_exits_nonzero_with_one_line(tmp_path, args, message):
    app = write_app(tmp_path, HELLO)
    out = run_cli(str(app), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tgreen-serve: error:"), out.stderr
    assert message in lines[0]


@pytest.mark.parametrize("spec, message", [
    ("missing_file.py", "no such file"),
    ("not a module", "not a module name"),
    ("app.py:1bad", "not a callable name"),
])
def test_bad_app_spec_exits_nonzero_with_one_line(spec, message):
    out = run_cli(spec)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr


def test_app_that_fails_to_import_stops_the_master_with_one_line_and_the_apps_traceback(tmp_path):
    (tmp_path / "helper.py").write_text("def connect():\n    raise ImportError('no database driver')\n")
    app = write_app(tmp_path, "import helper\nhelper.connect()\n")
    port = free_port()
    out = run_cli(str(app), "--bind", f"127.0.0.1:{port}", "--log-level", "warning")
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if "[ERROR]" not in ln]
    assert lines[0] == f"tgreen-serve: error: cannot load {app}: ImportError: no database driver"
    assert lines[1] == "Traceback (most recent call last):"
    # Only the user's frames: their app, their helper; no tgreen, no importlib.
    frames = [ln for ln in lines if ln.startswith("  File ")]
    assert frames == [f'  File "{app}", line 2, in <module>',
                      f'  File "{tmp_path / "helper.py"}", line 2, in connect'], out.stderr
    assert lines[-1] == "ImportError: no database driver"
    assert "failed to boot" in out.stderr


def test_app_with_a_syntax_error_is_one_line_and_the_offending_line(tmp_path):
    app = write_app(tmp_path, "def application(environ, start_response):\n    return [\n")
    out = run_cli(str(app), "--bind", f"127.0.0.1:{free_port()}", "--log-level", "warning")
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if "[ERROR]" not in ln]
    assert lines[0].startswith(f"tgreen-serve: error: cannot load {app}: SyntaxError:"), out.stderr
    assert f'  File "{app}", line 2' in lines and "tgreen" not in "".join(lines[1:]), out.stderr


def test_app_without_application_or_app_is_refused(tmp_path):
    app = write_app(tmp_path, "x = 1\n")
    out = run_cli(str(app), "--bind", f"127.0.0.1:{free_port()}")
    assert out.returncode != 0
    assert "neither 'application' nor 'app'" in out.stderr


def test_cannot_bind_is_one_line(tmp_path):
    app = write_app(tmp_path, HELLO)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = run_cli(str(app), "--bind", f"127.0.0.1:{busy.getsockname()[1]}")
    assert out.returncode == 1
    assert "cannot listen on 127.0.0.1" in out.stderr and "in use" in out.stderr


@pytest.mark.parametrize("spec_kind", ["file", "file:callable", "module:callable", "factory", "app-name"])
def test_app_spec_forms(tmp_path, spec_kind):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "web.py").write_text(HELLO + textwrap.dedent("""
        def create():
            return application
        other = application
    """))
    if spec_kind == "file":
        spec = str(pkg / "web.py")
    elif spec_kind == "file:callable":
        spec = f"{pkg / 'web.py'}:other"
    elif spec_kind == "module:callable":
        spec = "mypkg.web:other"
    elif spec_kind == "factory":
        spec = "mypkg.web:create()"
    else:
        (tmp_path / "flaskish.py").write_text(HELLO.replace("def application", "def app"))
        spec = str(tmp_path / "flaskish.py")
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with Serve(spec, env=env) as srv:
        assert requests.get(srv.url + "/x").text == "hello from /x"


def test_unix_socket_and_tcp_binds_together(tmp_path):
    app = write_app(tmp_path, HELLO)
    path = str(tmp_path / "app.sock")
    port = free_port()
    with Serve(app, "--bind", f"127.0.0.1:{port}", "--bind", f"unix:{path}") as srv:
        srv.port = port
        srv.wait_listening()
        assert requests.get(srv.url + "/tcp").text == "hello from /tcp"
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"GET /unix HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.endswith(b"hello from /unix")
    assert not os.path.exists(path)  # removed on exit


def test_fd_bind_serves_an_inherited_socket(tmp_path):
    app = write_app(tmp_path, HELLO)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    os.set_inheritable(fd, True)
    with Serve(app, "--bind", f"fd://{fd}", pass_fds=(fd,)) as srv:
        srv.port = port
        sock.close()
        srv.wait_listening()
        assert requests.get(srv.url + "/fd").text == "hello from /fd"


def test_access_log_in_common_log_format_with_request_time(tmp_path):
    app = write_app(tmp_path, HELLO)
    log = tmp_path / "access.log"
    with Serve(app, "--access-log", str(log)) as srv:
        requests.get(srv.url + "/logged?q=1", headers={"X-Forwarded-For": "203.0.113.9"})
        deadline = time.monotonic() + 5
        while "/logged" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
    line = [ln for ln in log.read_text().splitlines() if "/logged" in ln][0]
    assert re.fullmatch(r'203\.0\.113\.9 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /logged\?q=1 HTTP/1\.1" 200 \d+ \d+\.\d{3}', line), line


def test_access_log_is_off_by_default(tmp_path):
    app = write_app(tmp_path, HELLO)
    with Serve(app) as srv:
        requests.get(srv.url + "/quiet")
        out = srv.output()
    assert "/quiet" not in out


def test_uvloop_option(tmp_path):
    pytest.importorskip("uvloop")
    app = write_app(tmp_path, textwrap.dedent("""
        import asyncio
        def application(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [type(asyncio.get_event_loop()).__module__.encode()]
    """))
    with Serve(app, "--loop", "uvloop") as srv:
        assert requests.get(srv.url).text.startswith("uvloop")


def test_tls_with_certfile_and_keyfile(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    app = write_app(tmp_path, HELLO + textwrap.dedent("""
        _hello = application
        def application(environ, start_response):
            body = _hello(environ, start_response)
            return [environ["wsgi.url_scheme"].encode() + b" " + b"".join(body)]
    """))
    port = free_port()
    for loop in ("asyncio", "uvloop"):
        with Serve(app, "--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key),
                   "--loop", loop, wait_ready=False) as srv:
            deadline = time.monotonic() + 10
            while True:
                try:
                    r = requests.get(f"https://127.0.0.1:{port}/tls", verify=str(cert), timeout=5)
                    break
                except requests.exceptions.SSLError:
                    raise
                except requests.ConnectionError:
                    if time.monotonic() > deadline:
                        raise AssertionError(srv.output()) from None
                    time.sleep(0.1)
            assert r.text == "https hello from /tls"
            with requests.Session() as sess:  # keep-alive over TLS
                for _ in range(3):
                    assert sess.get(f"https://127.0.0.1:{port}/k", verify=str(cert)).ok


def test_an_app_that_fails_in_every_worker_is_reported_once(tmp_path):
    app = write_app(tmp_path, "raise RuntimeError('broken settings')\n")
    out = run_cli(str(app), "--bind", f"127.0.0.1:{free_port()}", "--workers", "4", "--log-level", "warning")
    assert out.returncode == 2
    assert out.stderr.count("tgreen-serve: error: cannot load") == 1, out.stderr
    assert out.stderr.count("Traceback") == 1, out.stderr
    assert "tgreen/" not in out.stderr, out.stderr
