"""Real database servers for the library tests, started by the tests themselves.

What this file owns: starting Redis, PostgreSQL and MariaDB on free loopback
ports in temporary directories, waiting until they accept connections, and
removing every trace at the end of the session. Rules:

1. Loopback only (``127.0.0.1``), a random free port, a fresh temp dir: the
   tests never touch a system-wide server or its data.
2. A server whose binary is not installed makes its tests *skip*, naming the
   Debian package that brings it; a server that is installed but fails to
   start is an error, with its log in the message.
3. Servers that refuse to run as root (postgres, mariadbd) are run as an
   unprivileged system user (``postgres``/``mysql``, else ``nobody``); the
   temp dir is handed to that user.
4. A server is never a child of the test process (tests that wait for any
   child, ``os.waitpid(-1)``, would wait for it): ``server_nanny.py`` runs
   it detached, and stops it when told or when the test process dies.

Use the fixtures from a test module::

    from servers import redis_server  # noqa: F401 - pytest fixture

    def test_x(redis_server):
        host, port = redis_server.host, redis_server.port
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import pytest
from server_nanny import alive as _alive

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
NANNY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_nanny.py")


@dataclass
class Server:
    """A running server: where it listens, and how to stop it."""

    name: str
    host: str
    port: int
    pid: int        # the server's
    nanny_pid: int  # its parent's (server_nanny.py)
    tmpdir: str
    logfile: str
    info: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return _alive(self.pid)

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Ask the nanny to stop the server; wait until both are gone."""
        try:
            os.kill(self.nanny_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while (_alive(self.pid) or _alive(self.nanny_pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in (self.pid, self.nanny_pid):
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def free_port() -> int:
    """A port that was free on loopback a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def find_binary(name: str, *patterns: str) -> str | None:
    """``name`` on PATH (plus /usr/sbin), else the first match of ``patterns``."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    found = shutil.which(name, path=path)
    if found:
        return found
    for pattern in patterns:
        hits = sorted(glob.glob(pattern), reverse=True)  # newest version first
        if hits:
            return hits[0]
    return None


def _run_as(preferred: str) -> pwd.struct_passwd | None:
    """The unprivileged user to run a server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (preferred, "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip(f"running as root and neither {preferred!r} nor 'nobody' exists to run the server")


def _make_tmpdir(prefix: str, user: pwd.struct_passwd | None) -> str:
    parent = None
    if user is not None and not os.stat(tempfile.gettempdir()).st_mode & 0o001:
        parent = "/tmp"  # $TMPDIR is private to root: the server's user could not enter it
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    if user is not None:
        os.chown(d, user.pw_uid, user.pw_gid)
    return d


def _server_env(logfile: str) -> dict:
    home = os.path.dirname(logfile)  # the server's own temp dir
    return dict(os.environ, HOME=home, TMPDIR=home, LC_ALL="C")


def _popen(argv: list[str], user: pwd.struct_passwd | None, logfile: str) -> subprocess.Popen:
    """A short-lived child (an init step), waited for by the caller."""
    extra = {}
    if user is not None:
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    with open(logfile, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=_server_env(logfile), start_new_session=True, **extra)


def _spawn(name: str, argv: list[str], user: pwd.struct_passwd | None, tmp: str, logfile: str,
           port: int, info: dict | None = None) -> Server:
    """Start a long-running server through server_nanny.py (rule 4)."""
    pidfile = os.path.join(tmp, "nanny.pid")
    spec = {"argv": argv, "log": logfile, "pidfile": pidfile, "tmpdir": tmp,
            "uid": user.pw_uid if user else None, "gid": user.pw_gid if user else None}
    subprocess.run([sys.executable, NANNY, str(os.getpid()), json.dumps(spec)], check=True,
                   env=_server_env(logfile), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
    deadline = time.monotonic() + 10
    while not os.path.exists(pidfile):
        if time.monotonic() > deadline:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"{name}: server_nanny.py did not start it")
        time.sleep(0.01)
    with open(pidfile) as f:
        nanny_pid, pid, *error = f.read().split(maxsplit=2)
    if int(pid) < 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"{name}: could not start {argv[0]}: {' '.join(error)}")
    return Server(name, HOST, port, int(pid), int(nanny_pid), tmp, logfile, info or {})


def _run(argv: list[str], user: pwd.struct_passwd | None, logfile: str, what: str) -> None:
    """Run an init step (initdb, mariadb-install-db); on failure remove the
    temp dir and raise with the step's log."""
    proc = _popen(argv, user, logfile)
    try:
        rc = proc.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timeout"
    if rc != 0:
        with open(logfile, errors="replace") as f:
            tail = f.read()[-4000:]
        shutil.rmtree(os.path.dirname(logfile), ignore_errors=True)
        raise RuntimeError(f"{what} failed ({rc}):\n{tail}")


def _wait_until(server: Server, ready) -> None:
    """Poll ``ready()`` until it is true; fail with the server's log if it dies."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            log = server.log()
            server.stop()
            raise RuntimeError(f"{server.name} exited:\n{log}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    log = server.log()
    server.stop()
    raise RuntimeError(f"{server.name} did not start within {START_TIMEOUT} s:\n{log}")


def _tcp_answers(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1):
        return True


# -- Redis ------------------------------------------------------------------------


def start_redis() -> Server:
    binary = find_binary("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package: redis-server)")
    tmp = _make_tmpdir("tgreen-redis-", None)
    port = free_port()
    logfile = os.path.join(tmp, "redis.log")
    server = _spawn("redis-server", [binary, "--bind", HOST, "--port", str(port), "--dir", tmp,
                                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                                     "--protected-mode", "no", "--maxclients", "1000"],
                    None, tmp, logfile, port)

    def ready() -> bool:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    _wait_until(server, ready)
    return server


# -- PostgreSQL -------------------------------------------------------------------


def start_postgres() -> Server:
    postgres = find_binary("postgres", "/usr/lib/postgresql/*/bin/postgres")
    initdb = find_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    if postgres is None or initdb is None:
        pytest.skip("PostgreSQL is not installed (Debian package: postgresql)")
    user = _run_as("postgres")
    tmp = _make_tmpdir("tgreen-pg-", user)
    data = os.path.join(tmp, "data")
    logfile = os.path.join(tmp, "postgres.log")
    dbuser = "tgreen"
    _run([initdb, "-D", data, "-U", dbuser, "--auth=trust", "-E", "UTF8", "--no-sync",
          "--no-instructions"], user, logfile, "initdb")
    port = free_port()
    server = _spawn("postgres", [postgres, "-D", data, "-p", str(port), "-k", tmp,
                                 "-c", f"listen_addresses={HOST}", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                 "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                    user, tmp, logfile, port, {"user": dbuser, "dbname": "postgres", "password": ""})

    def ready() -> bool:
        # The startup packet gets an answer only once the server accepts
        # logins; before that the postmaster says "the database system is
        # starting up" and closes. An SSLRequest is the smallest probe.
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            if s.recv(1) not in (b"N", b"S"):
                return False
        return "ready to accept connections" in server.log()

    _wait_until(server, ready)
    return server


# -- MariaDB ----------------------------------------------------------------------


def start_mariadb() -> Server:
    mariadbd = find_binary("mariadbd") or find_binary("mysqld")
    install_db = find_binary("mariadb-install-db") or find_binary("mysql_install_db")
    if mariadbd is None or install_db is None:
        pytest.skip("MariaDB is not installed (Debian package: mariadb-server)")
    user = _run_as("mysql")
    tmp = _make_tmpdir("tgreen-mariadb-", user)
    data = os.path.join(tmp, "data")
    logfile = os.path.join(tmp, "mariadb.log")
    common = ["--no-defaults", f"--datadir={data}"]
    _run([install_db, *common, "--auth-root-authentication-method=normal", "--skip-test-db",
          "--skip-name-resolve"], user, logfile, "mariadb-install-db")
    port = free_port()
    server = _spawn("mariadbd", [mariadbd, *common, f"--port={port}", f"--bind-address={HOST}",
                                 f"--socket={tmp}/mysqld.sock", f"--pid-file={tmp}/mysqld.pid",
                                 "--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
                                 "--max-connections=300", "--innodb-buffer-pool-size=16M",
                                 "--innodb-flush-log-at-trx-commit=0", "--performance-schema=OFF"],
                    user, tmp, logfile, port, {"user": "root", "password": "", "database": "mysql"})
    _wait_until(server, lambda: "ready for connections" in server.log() and _tcp_answers(port))
    return server


# -- fixtures -----------------------------------------------------------------------


def _fixture(start):
    name = start.__name__.replace("start_", "") + "_server"

    @pytest.fixture(scope="session", name=name)
    def fixture():
        server = start()
        try:
            yield server
        finally:
            server.stop()

    return fixture


redis_server = _fixture(start_redis)
postgres_server = _fixture(start_postgres)
mariadb_server = _fixture(start_mariadb)
