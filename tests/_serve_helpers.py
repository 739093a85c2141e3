"""Helpers for the tgreen-serve tests: run the CLI as a subprocess, find its
workers, wait for it to answer.

    with Serve(app_file, "--workers", "2") as srv:
        requests.get(srv.url)

``Gunicorn`` is the same for ``gunicorn -k tgreen.gunicorn.Worker``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tgreen.serve", *args]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(serve_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=_env())


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


class Serve:
    """``tgreen-serve APP ARGS`` in a subprocess (new session), on a free port
    unless ``--bind`` is given."""

    def __init__(self, app: str | Path, *args: str, env: dict | None = None,
                 wait_ready: bool = True, pass_fds: tuple = ()) -> None:
        self.args = list(args)
        self.port = None
        if "--bind" not in self.args:
            self.port = free_port()
            self.args += ["--bind", f"127.0.0.1:{self.port}"]
        self.app = str(app)
        self.env = env
        self.wait_ready = wait_ready
        self.pass_fds = pass_fds
        self.proc: subprocess.Popen | None = None
        self.log_path = None

    def __enter__(self) -> Serve:
        import tempfile

        fd, self.log_path = tempfile.mkstemp(prefix="tgreen-serve-", suffix=".log")
        self._log = os.fdopen(fd, "w+")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=_env(self.env),
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, pass_fds=self.pass_fds)
        if self.wait_ready and self.port is not None:
            self.wait_listening()
        return self

    def command(self) -> list[str]:
        return serve_cmd(self.app, *self.args)

    def wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command()[2]} exited {self.proc.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /__ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    s.settimeout(5)
                    if s.recv(12).startswith(b"HTTP/1.1"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.command()[2]} did not answer in {timeout}s:\n{self.output()}")

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers of this session only
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.returncode

    def output(self) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """PIDs of the master's live children."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def wait_workers(self, n: int, timeout: float = 10, exclude: tuple = ()) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for p in self.workers() if p not in exclude]
            if len(pids) >= n:
                return pids
            time.sleep(0.05)
        raise RuntimeError(f"expected {n} workers, have {self.workers()}:\n{self.output()}")


class Gunicorn(Serve):
    """``gunicorn -k tgreen.gunicorn.Worker ARGS APP``: the same interface as
    ``Serve`` (gunicorn takes ``--bind`` and ``--chdir`` too). Its error log
    goes to the output unless ``--error-logfile`` says otherwise."""

    def command(self) -> list[str]:
        args = self.args if "--error-logfile" in self.args else ["--error-logfile", "-", *self.args]
        return [sys.executable, "-m", "gunicorn", "-k", "tgreen.gunicorn.Worker", *args, self.app]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> int | None:
        """Like ``Serve.stop``; gunicorn 27's arbiter lingers for seconds after
        its workers have stopped ("Shutting down: Master"), so from that line
        on the session is killed (its returncode is then -9)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if "Shutting down: Master" in self.output():
                    break
                time.sleep(0.05)
        return super().stop(signal.SIGKILL, timeout)


def write_app(tmp_path: Path, source: str, name: str = "app.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path
