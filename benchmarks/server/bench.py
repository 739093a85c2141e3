"""tgreen-serve against peer WSGI servers, interleaved, with wrk.

    bash benchmarks/peers/install.sh                            # once: the peers' venv
    .venv/bin/python benchmarks/server/bench.py --write         # the full matrix, 2 rounds x 3 s;
                                                                #   rewrites RESULTS.md's block + the PNG
    .venv/bin/python benchmarks/server/bench.py --quick         # 1 round, 2 s: smoke run
    .venv/bin/python benchmarks/server/bench.py --scenarios hello_ka,sleep --servers tgreen,bjoern --reps 5
    .venv/bin/python benchmarks/server/bench.py --from-json RUN.json --write   # re-render a saved run

Every (scenario, server) cell is a fresh server process per round. Within a
round the servers of a scenario run one after the other (the starting server
rotates between rounds) so machine noise hits all of them alike; the tables show
the median over rounds. Before a cell is measured its response is checked
(status 200, exact body). A server that does not start, answers wrongly or dies
fails its cell with the reason (and the last line of its log); the run goes on.
Per cell: req/s, p99, and the server's CPU per request (utime + stime of its
process tree over the measured run / requests). See benchmarks/README.md
("WSGI server vs peers").
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
VENV_BIN = os.path.dirname(PY)
# The peers that are not the project's own dependencies live in a venv of
# their own, made by benchmarks/peers/install.sh (uWSGI too, for the seed).
PEERS_VENV = os.environ.get("PEERS_VENV", "/tmp/tgreen-peers-venv")
PEERS_PY = os.path.join(PEERS_VENV, "bin", "python")
UWSGI_VENV = os.environ.get("UWSGI_VENV", PEERS_VENV)
UWSGI = os.path.join(UWSGI_VENV, "bin", "uwsgi")
WRK = os.environ.get("WRK", "wrk")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHART = os.path.join(ROOT, "benchmarks", "server_vs_peers.png")


def idle_seconds() -> float:
    """Machine-wide idle + iowait CPU seconds since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / CLK_TCK

sys.path.insert(0, HERE)
import apps  # noqa: E402

TGREEN = ["tgreen"]
# Servers people pick for raw speed (issue 11), then the green ones and the seed (issue 3).
FAST_PEERS = ["bjoern", "granian", "meinheld", "uwsgi-threads", "gunicorn-h1c"]
GREEN_PEERS = ["gevent", "gevent-nodelay", "gunicorn", "tornado", "uwsgi"]
PEERS = FAST_PEERS + GREEN_PEERS
REFS = ["raw", "raw-uvloop"]               # no WSGI: a ceiling, not a peer
OPTIONAL = ["tgreen-uvloop", "tgreen-nopatch"]   # run only when named in --servers
MAIN_SCENARIOS = ["hello_ka", "hello_close", "sleep", "stream", "big"]

# How each server runs the app: what the tables' readers need to read a cell.
MODELS = {
    "tgreen": "tgreen-serve, `patch_all()` applied (its default), 1 worker: an asyncio loop in a hub "
              "greenlet, httptools, N core greenlets; the sleep app's `tgreen.sleep` is green",
    "tgreen-uvloop": "the same on uvloop (`--loop uvloop`)",
    "tgreen-nopatch": "the same with `--no-patch`",
    "bjoern": "one C loop (libev), one thread: the app runs on the loop, so `time.sleep` blocks "
              "the whole server (the sleep cell is one request at a time)",
    "granian": "Rust (hyper/tokio) I/O, WSGI app in `--blocking-threads N` Python threads "
               "(N = connections); `time.sleep` blocks one thread",
    "meinheld": "one C loop (picoev) with a greenlet per request, keep-alive on "
                "(`set_keepalive(10)`); the app's `time.sleep` blocks the loop (its own green "
                "`meinheld.server.sleep` takes whole seconds only; built from 1.0.2 patched for greenlet 3)",
    "uwsgi-threads": "uWSGI `--http11-socket` (keep-alive), 1 process, `--threads min(N, 100)` "
                     "(a thread holds one connection; 1000 threads collapsed on the GIL); "
                     "`time.sleep` blocks one thread",
    "gunicorn-h1c": "gunicorn `-k gevent --http-parser fast` (the gunicorn_h1c C parser), "
                    "`gevent.sleep`",
    "gevent": "gevent.pywsgi.WSGIServer, Pool(N), `gevent.sleep`",
    "gevent-nodelay": "the same with TCP_NODELAY on each accepted socket",
    "gunicorn": "gunicorn `-k gevent --http-parser python` (its Python parser), `gevent.sleep`",
    "tornado": "tornado.wsgi.WSGIContainer; the sleep app in a ThreadPoolExecutor(N)",
    "uwsgi": "the seed: uWSGI's Tornado loop engine with greenlets (`--http-socket`, closes "
             "every connection), sleep by IOLoop.call_later + greenlet switch",
    "raw": "bare asyncio Protocol + httptools writing a fixed response, no WSGI "
           "(sleep: the response after `loop.call_later(0.01)`)",
    "raw-uvloop": "the same on uvloop",
}

# name -> (app, wrk args, N (cores/pool/threads/worker-connections), servers, what)
SCENARIOS = {
    "hello_ka": ("hello", ["-t2", "-c100"], 100, TGREEN + PEERS + REFS,
                 "hello world, keep-alive, 100 connections"),
    "hello_close": ("hello", ["-t2", "-c100", "-H", "Connection: close"], 100, TGREEN + PEERS + REFS,
                    "hello world, `Connection: close`, 100 connections"),
    "sleep": ("sleep", ["-t2", "-c1000", "--timeout", "5s"], 1000, TGREEN + PEERS + REFS,
              "10 ms sleep, 1000 connections, cores/pool/threads 1000 (ideal 100k req/s)"),
    "stream": ("stream", ["-t2", "-c100"], 100, TGREEN + PEERS,
               "generator of 64 x 1 KiB, 100 connections"),
    "big": ("big", ["-t2", "-c100"], 100, TGREEN + PEERS, "1 MiB body, 100 connections"),
    "workers": ("hello", ["-t2", "-c100"], 100, ["tgreen-w1", "tgreen-w2", "gunicorn-w1", "gunicorn-w2"],
                "hello world keep-alive c100, 1 vs 2 worker processes, on this box (wrk shares the cores)"),
    "workers_quota": ("hello", ["-t2", "-c100"], 100, ["tgreen-q1", "tgreen-q2"],
                      "hello world keep-alive c100, 1 vs 2 workers, each worker held to a CPU quota of "
                      "its own (`workers_quota.py`: cgroup v1, 0.5 core each), so wrk does not take the "
                      "second worker's core"),
    "memory": ("hello", None, 2100, TGREEN + PEERS + ["raw"],
               "RSS per idle keep-alive connection (2000 connections, one request each)"),
}
ORDER = list(SCENARIOS)
DEFAULT_SCENARIOS = MAIN_SCENARIOS + ["workers", "workers_quota"]
MEM_CONNS = 2000
QUOTA = 0.5
UWSGI_MAX_THREADS = 100


# --------------------------------------------------------------------------- servers

def server_cmd(server: str, app: str, port: int, n: int, long_keepalive: bool) -> tuple[list, dict]:
    """argv and extra environment to start ``server`` serving ``apps.<app>`` on ``port``."""
    env = {}
    bind = f"127.0.0.1:{port}"
    workers = 1
    if server.endswith(("-w1", "-w2")):
        workers = int(server[-1])
        server = server[:-3]
    if server.startswith("tgreen"):
        env["BENCH_GREEN"] = "tgreen"
        cmd = [PY, "-m", "tgreen.serve", f"{HERE}/apps.py:{app}", "--bind", bind, "--cores", str(n),
               "--workers", str(workers), "--log-level", "warning"]
        if server == "tgreen-uvloop":
            cmd += ["--loop", "uvloop"]
        if server == "tgreen-nopatch":   # patch_all() in the master is the default
            cmd += ["--no-patch"]
        if long_keepalive:
            cmd += ["--keep-alive", "0"]
        return cmd, env
    if server in ("gunicorn", "gunicorn-h1c"):
        env["BENCH_GREEN"] = "gevent"
        if server == "gunicorn":
            exe, parser = os.path.join(VENV_BIN, "gunicorn"), "python"
        else:
            exe, parser = os.path.join(PEERS_VENV, "bin", "gunicorn"), "fast"
        cmd = [exe, "-k", "gevent", "--worker-connections", str(n), "--http-parser", parser,
               "-w", str(workers), "-b", bind, "--chdir", HERE, "--log-level", "warning",
               "--backlog", "2048", f"apps:{app}"]
        if long_keepalive:
            cmd += ["--keep-alive", "3600"]
        return cmd, env
    if server in ("gevent", "gevent-nodelay"):
        env["BENCH_GREEN"] = "gevent"
        return [PY, f"{HERE}/runners.py", server, app, str(port), str(n)], env
    if server == "tornado":
        # No green sleep in tornado's WSGIContainer: the sleep app runs in a
        # ThreadPoolExecutor(n) with time.sleep; everything else on the loop.
        threads = n if app == "sleep" else 0
        env["BENCH_GREEN"] = "thread"
        return [PY, f"{HERE}/runners.py", "tornado", app, str(port), str(threads)], env
    if server == "uwsgi":
        env["BENCH_GREEN"] = "uwsgi"
        return [UWSGI, "--http-socket", bind, "--tornado", str(n), "--greenlet",
                "--wsgi-file", f"{HERE}/apps.py", "--callable", app, "--disable-logging",
                "--virtualenv", UWSGI_VENV, "--listen", "2048"], env
    if server == "uwsgi-threads":
        env["BENCH_GREEN"] = "thread"
        # --http11-socket keeps connections alive (responses carry Content-Length);
        # a thread serves one connection at a time. Threads = connections up to
        # 100: with 1000 threads the sleep app collapsed on the GIL (843 req/s
        # against 4,533 with 100 threads, wrk -c1000, same box, load ~10).
        threads = min(n, UWSGI_MAX_THREADS)
        cmd = [UWSGI, "--http11-socket", bind, "--processes", "1", "--threads", str(threads),
               "--wsgi-file", f"{HERE}/apps.py", "--callable", app, "--disable-logging",
               "--virtualenv", UWSGI_VENV, "--listen", "2048"]
        return cmd + (["--socket-timeout", "3600"] if long_keepalive else []), env
    if server == "bjoern":
        env["BENCH_GREEN"] = "thread"
        return [PEERS_PY, f"{HERE}/runners.py", "bjoern", app, str(port), "-"], env
    if server == "meinheld":
        env["BENCH_GREEN"] = "thread"
        return [PEERS_PY, f"{HERE}/runners.py", "meinheld", app, str(port),
                "3600" if long_keepalive else "10"], env
    if server == "granian":
        env["BENCH_GREEN"] = "thread"
        return [os.path.join(PEERS_VENV, "bin", "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--blocking-threads", str(n), "--http", "1",
                "--no-ws", "--backlog", "2048", "--log-level", "warning", "--no-access-log",
                "--working-dir", HERE, f"apps:{app}"], env
    if server in ("raw", "raw-uvloop"):
        return [PY, f"{HERE}/runners.py", "raw", app, str(port),
                "uvloop" if server == "raw-uvloop" else "asyncio"], env
    raise ValueError(server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, server, app, n, logdir, long_keepalive=False):
        self.name, self.app = server, app
        self.port = free_port()
        cmd, env = server_cmd(server, app, self.port, n, long_keepalive)
        self.cmd = cmd
        self.proc = None
        if not os.path.exists(cmd[0]):
            raise RuntimeError(f"{cmd[0]} missing (bash benchmarks/peers/install.sh)")
        self.logpath = os.path.join(logdir, f"{server}.log")
        self.log = open(self.logpath, "ab")
        self.log_start = self.log.tell()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, limit=160) -> str:
        """The last line this cell's server wrote (why it failed, usually)."""
        try:
            with open(self.logpath, "rb") as f:
                f.seek(self.log_start)
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][-limit:] if lines else ""

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before listening")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not listening after {timeout}s")

    def pids(self) -> list[int]:
        """The server's process tree (master and workers)."""
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's process tree so far (live processes)."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])   # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total / CLK_TCK

    def rss_kib(self) -> int:
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                # uWSGI reloads on TERM; INT stops all. The measurement is
                # over, so a graceful drain is not waited for long.
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever is left of the group (a blocked loop, a worker that
        # outlived its master) must not load the next cell.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- checks

def check(port: int, app: str) -> str:
    """GET / twice on one connection: status 200 and the exact body, else raise.
    Returns 'keep-alive' or 'close' (what the server did with the connection)."""
    expected = apps.EXPECTED[app]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(2):
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError):
                if i == 0:
                    raise
                return "close"
            body = resp.read()
            if resp.status != 200 or body != expected:
                raise RuntimeError(f"bad response: {resp.status} {len(body)} bytes {body[:40]!r}")
            if resp.will_close:
                return "close"
        return "keep-alive"
    finally:
        conn.close()


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def run_wrk(port: int, args: list, duration: float) -> dict:
    duration = max(1, round(duration))   # wrk takes whole seconds
    cmd = [WRK, *args, "--latency", f"-d{duration}s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    r = {"rps": 0.0, "p99_ms": float("nan"), "p50_ms": float("nan"), "errors": "", "non2xx": 0,
         "requests": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        r["rps"] = float(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        r["p99_ms"] = _ms(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        r["p50_ms"] = _ms(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        parts = [f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if v != "0"]
        r["errors"] = ", ".join(parts)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        r["non2xx"] = int(m.group(1))
    if not r["requests"]:
        r["p99_ms"] = r["p50_ms"] = float("nan")
    if "Requests/sec" not in out:
        r["errors"] = (r["errors"] + " wrk: " + out[-300:]).strip()
    return r


# --------------------------------------------------------------------------- memory

def open_idle(port: int, count: int) -> list[socket.socket]:
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        buf = b""
        while b"Hello, World!" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        socks.append(s)
    return socks


def alive(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server still holds open (no EOF/RST pending)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                n += 1          # unexpected bytes, but the connection is open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def measure_memory(srv: Server) -> dict:
    # warm up: a few requests on one connection, then settle
    for s in open_idle(srv.port, 20):
        s.close()
    time.sleep(0.5)
    base = srv.rss_kib()
    socks = open_idle(srv.port, MEM_CONNS)
    time.sleep(1.0)
    after = srv.rss_kib()
    live = alive(socks)
    for s in socks:
        s.close()
    per = (after - base) * 1024 / MEM_CONNS
    return {"base_kib": base, "after_kib": after, "bytes_per_conn": per, "alive": live}


# --------------------------------------------------------------------------- driver

def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "load average: " + loadavg()


def versions() -> dict:
    def pipver(pkg, py=PY):
        try:
            out = subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            return out or "missing"
        except Exception:
            return "missing"

    v = {"python": platform.python_version()}
    for pkg in ("tgreen", "tornado", "greenlet", "httptools", "uvloop", "gevent", "gunicorn"):
        v[pkg] = pipver(pkg)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tgreen"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        v["tgreen"] += f" ({head}{' + uncommitted changes' if dirty else ''})"
    except OSError:
        pass
    for pkg in ("bjoern", "granian", "meinheld", "gunicorn", "gunicorn_h1c", "gevent", "greenlet",
                "tornado"):
        v[f"peers venv {pkg}"] = pipver(pkg, PEERS_PY)
    try:
        v["uwsgi"] = subprocess.run([UWSGI, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        v["uwsgi"] = "missing"
    v["wrk"] = (subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
                .split(" [")[0])
    return v


def run_quota_cell(server: str, args) -> dict:
    """One ``workers_quota.py`` run: tgreen-serve with w workers, each in a
    cgroup v1 CPU quota of its own."""
    import workers_quota

    if not os.access(workers_quota.CG, os.W_OK):
        return {"failed": f"needs a writable {workers_quota.CG} (root, cgroup v1)"}
    try:
        rps = workers_quota.run(int(server[-1]), QUOTA, free_port(), max(1, round(args.duration)))
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the run
        return {"failed": f"{type(e).__name__}: {e}"}
    if rps != rps:
        return {"failed": "wrk printed no result"}
    return {"rps": rps, "p99_ms": float("nan"), "errors": "", "non2xx": 0, "conn": "keep-alive"}


def run_cell(scen: str, server: str, args, logdir) -> dict:
    app, wrk_args, n, _, _ = SCENARIOS[scen]
    if scen == "workers_quota":
        return run_quota_cell(server, args)
    srv = None
    try:
        srv = Server(server, app, n, logdir, long_keepalive=(scen == "memory"))
        srv.wait_ready()
        conn_mode = check(srv.port, app)
        if scen == "memory":
            res = measure_memory(srv)
        else:
            # No warm-up for a server that serves the sleep app one request
            # at a time: the warm-up's 1000 queued requests would take it
            # 10 s to drain, and the measured run would see none of its own.
            if args.warmup > 0 and not blocks(scen, server):
                run_wrk(srv.port, wrk_args, args.warmup)
            cpu0, idle0, t0 = srv.cpu_seconds(), idle_seconds(), time.monotonic()
            res = run_wrk(srv.port, wrk_args, args.duration)
            cpu1, idle1, t1 = srv.cpu_seconds(), idle_seconds(), time.monotonic()
            # Cores the server kept busy, and cores nobody used, over the
            # measured run: what says whether the machine was the limit.
            res["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
            res["idle_cores"] = (idle1 - idle0) / (t1 - t0)
            # server CPU (utime + stime of its process tree) per request
            res["cpu_us"] = 1e6 * (cpu1 - cpu0) / res["requests"] if res["requests"] else float("nan")
        res["conn"] = conn_mode
        if srv.proc.poll() is not None:
            res["errors"] = (res.get("errors", "") + f" server exited {srv.proc.returncode}").strip()
        return res
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the run
        why = f"{type(e).__name__}: {e}"
        tail = srv.log_tail() if srv is not None else ""
        return {"failed": why + (f" [log: {tail}]" if tail else "")}
    finally:
        if srv is not None:
            srv.stop()


def pick_servers(scen: str, only: set, skip: set) -> list[str]:
    pool = SCENARIOS[scen][3] + (OPTIONAL if scen in MAIN_SCENARIOS + ["memory"] else [])
    if only:
        return [s for s in pool if s in only and s not in skip]
    return [s for s in pool if s not in OPTIONAL and s not in skip]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help=f"comma list of {', '.join(ORDER)} (default: all but memory)")
    ap.add_argument("--servers", default="", help="only these servers (comma list); "
                    f"{', '.join(OPTIONAL)} run only when named here")
    ap.add_argument("--skip", default="", help="leave these servers out (comma list)")
    ap.add_argument("--reps", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--duration", type=float, default=3, help="seconds measured per cell (default 3)")
    ap.add_argument("--warmup", type=float, default=1, help="seconds of wrk before each measured run")
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s, 1 s warm-up")
    ap.add_argument("--json", help="write raw per-run results here")
    ap.add_argument("--from-json", help="render (and with --write, write) a saved --json run; runs nothing")
    ap.add_argument("--write", action="store_true",
                    help="replace the generated part of benchmarks/RESULTS.md and draw "
                    f"{os.path.relpath(CHART, ROOT)}")
    ap.add_argument("--chart", default=None, help="draw the chart here (default with --write: "
                    f"{os.path.relpath(CHART, ROOT)})")
    args = ap.parse_args(argv)
    for flag in ("reps", "duration"):
        if getattr(args, flag) <= 0:
            ap.error(f"--{flag} must be positive")
    scens = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for scen in scens:
        if scen not in SCENARIOS:
            ap.error(f"--scenarios: unknown scenario {scen!r} (known: {', '.join(ORDER)})")
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        meta, runs = saved["meta"], saved["runs"]
        scens = [s for s in ORDER if s in runs]
        finish(meta, runs, scens, args)
        return
    # a killed run must not leave servers behind: SIGTERM unwinds through Server.stop()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 2, 1
    only = {s for s in args.servers.split(",") if s}
    skip = {s for s in args.skip.split(",") if s}
    if not os.path.exists(PEERS_PY):
        print(f"note: {PEERS_VENV} missing: bash benchmarks/peers/install.sh (those peers' cells "
              "will say why they failed)", file=sys.stderr)

    logdir = os.path.join("/tmp", f"tgreen-server-bench-{os.getpid()}")
    os.makedirs(logdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {"command": " ".join([os.path.relpath(PY, ROOT), os.path.relpath(__file__, ROOT),
                                 *(argv if argv is not None else sys.argv[1:])]),
            "date": started.strftime("%Y-%m-%d %H:%M UTC"), "load_start": loadavg(),
            "uptime_start": uptime(), "versions": versions(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "logdir": logdir, "duration": args.duration,
            "warmup": args.warmup, "reps": args.reps}
    runs: dict[str, dict[str, list]] = {}
    loads = []
    try:
        for rep in range(args.reps):
            for scen in scens:
                servers = pick_servers(scen, only, skip)
                if not servers:
                    continue
                k = rep % len(servers)      # the first server rotates between rounds
                order = servers[k:] + servers[:k]
                for server in order:
                    t0 = time.monotonic()
                    res = run_cell(scen, server, args, logdir)
                    runs.setdefault(scen, {}).setdefault(server, []).append(res)
                    print(f"rep {rep + 1} {scen:13s} {server:15s} {short(scen, res)}   load {loadavg()}"
                          f"   cell {time.monotonic() - t0:.1f} s", flush=True)
                loads.append(loadavg())
    except KeyboardInterrupt:
        print("interrupted: reporting the cells measured so far", file=sys.stderr)
        meta["interrupted"] = True
    meta["load_end"] = loadavg()
    meta["uptime_end"] = uptime()
    meta["loads"] = loads
    meta["elapsed_s"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "runs": runs}, f, indent=1, default=str)
    finish(meta, runs, scens, args)


def finish(meta, runs, scens, args):
    chart = args.chart or (CHART if args.write else None)
    report = render(meta, runs, scens, chart)
    print()
    print(report)
    if chart:
        draw_chart(meta, runs, chart)
    if args.write:
        write_results(report)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def short(scen, res):
    if "failed" in res:
        return "FAILED " + res["failed"]
    if scen == "memory":
        return f"{res['bytes_per_conn']:8.0f} B/conn  alive {res['alive']}"
    err = f"  errors: {res['errors']}" if res.get("errors") else ""
    n2 = f"  non-2xx {res['non2xx']}" if res.get("non2xx") else ""
    cpu = f"  {res['cpu_us']:6.1f} µs CPU/req" if "cpu_us" in res else ""
    return f"{res['rps']:9.0f} req/s  p99 {res['p99_ms']:7.1f} ms{cpu}  [{res.get('conn')}]{err}{n2}"


# --------------------------------------------------------------------------- report

def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarize(cells: list) -> dict:
    ok = [c for c in cells if "failed" not in c]
    out = {"n": len(ok), "failed": [c["failed"] for c in cells if "failed" in c]}
    if not ok:
        return out
    for key in ("rps", "p99_ms", "cpu_us", "bytes_per_conn", "alive", "server_cores", "idle_cores"):
        if key in ok[0]:
            out[key] = med([c.get(key, float("nan")) for c in ok])
    if "rps" in ok[0]:
        out["all_rps"] = [c["rps"] for c in ok]
        out["errors"] = "; ".join(sorted({c["errors"] for c in ok if c.get("errors")}))
        out["non2xx"] = sum(c.get("non2xx", 0) for c in ok)
    out["conn"] = ok[0].get("conn", "")
    return out


def fmt_rps(x):
    if x != x:
        return "—"
    return f"{x / 1000:.1f}k" if x >= 10_000 else f"{x:,.0f}"


def fmt(x, spec=".0f"):
    return "—" if x != x else format(x, spec)


def get(summ, s, key):
    return summ.get(s, {}).get(key, float("nan"))


def blocks(scen, server) -> bool:
    return scen == "sleep" and server in ("bjoern", "meinheld")


def overview_cell(scen, s, d, what):
    if "rps" not in d:
        return "failed" if d.get("failed") else ""
    if what == "rps":
        text = fmt_rps(d["rps"])
        if blocks(scen, s):
            text += " (blocks)"
        return text
    if what == "cpu":
        return fmt(d.get("cpu_us", float("nan")), ".1f")
    return fmt(d.get("p99_ms", float("nan")), ".1f" if d.get("p99_ms", 0) < 100 else ".0f")


def render(meta, runs, scens, chart=None) -> str:
    L = []
    v = meta["versions"]
    L.append("<!-- server-bench:begin (generated by benchmarks/server/bench.py --write: edit the code, "
             "not this part) -->")
    L.append("")
    load1 = float(meta["load_start"].split()[0])
    if load1 > 1.5 or float(meta["load_end"].split()[0]) > 1.5:
        L.append(f"**Provisional: the machine was shared with other jobs while this ran (load average "
                 f"{meta['load_start']} at the start, {meta['load_end']} at the end, on {meta['cpus']} "
                 f"cores), so absolute numbers are low and noisy; compare servers within this run only.**")
        L.append("")
    if meta.get("interrupted"):
        L.append("**Interrupted: not every cell ran.**")
        L.append("")
    L.append(f"Run `{meta['command']}`: {meta['date']}, {meta['cpus']} cores ({meta.get('cpu_model', '?')}), "
             f"loopback, wrk on the same box. {meta['reps']} interleaved rounds (each round runs every "
             f"server of a scenario in turn, the first one rotating) x {meta['duration']:g} s per cell "
             f"after a {meta.get('warmup', 1):g} s warm-up, a fresh server process per cell, median "
             f"shown; {meta['elapsed_s']} s in all.")
    L.append("")
    L.append(f"- uptime at start: `{meta.get('uptime_start', meta['load_start'])}`")
    L.append(f"- uptime at end: `{meta.get('uptime_end', meta['load_end'])}`")
    L.append("- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    L.append("")
    main = [s for s in MAIN_SCENARIOS if s in scens and s in runs]
    if main:
        servers = [s for s in TGREEN + OPTIONAL + PEERS + REFS if any(s in runs[sc] for sc in main)]
        summ = {sc: {s: summarize(c) for s, c in runs[sc].items()} for sc in main}
        if chart:
            rel = os.path.relpath(chart, os.path.join(ROOT, "benchmarks"))
            L.append(f"![tgreen against every peer per scenario]({rel})")
            L.append("")
        for title, what in (("Requests per second (median)", "rps"),
                            ("Server CPU per request, µs (utime + stime of the server's process tree "
                             "over the run / requests; lower is better)", "cpu"),
                            ("p99 latency, ms (wrk --latency; lower is better)", "p99")):
            L.append(f"**{title}**")
            L.append("")
            L.append("| scenario | " + " | ".join(servers) + " |")
            L.append("|---|" + "---:|" * len(servers))
            for sc in main:
                cells = [overview_cell(sc, s, summ[sc].get(s, {}), what) for s in servers]
                L.append(f"| {sc} | " + " | ".join(cells) + " |")
            L.append("")
    ran = [s for s in MODELS if any(s in runs[sc] for sc in runs)]
    if ran:
        L.append("**How each server runs the apps** (one worker process each; N is the scenario's "
                 "concurrency: cores, pool, threads or worker connections)")
        L.append("")
        L.append("| server | concurrency model |")
        L.append("| --- | --- |")
        L.extend(f"| {s} | {MODELS[s]} |" for s in ran)
        L.append("")
    for scen in scens:
        if scen not in runs:
            continue
        app, wrk_args, n, servers, what = SCENARIOS[scen]
        summ = {s: summarize(c) for s, c in runs[scen].items()}
        L.append(f"### {scen}: {what}")
        L.append("")
        if scen == "workers_quota":
            L.append(f"`workers_quota.py`'s run, {meta['duration']:g} s per cell: wrk `-t2 -c100`, "
                     f"`tgreen-serve --workers W --cores 100`, each worker in a cgroup of its own "
                     f"with a {QUOTA:g}-core quota (10 ms period).")
        elif wrk_args:
            L.append(f"wrk `{' '.join(a if ' ' not in a else repr(a) for a in wrk_args)} --latency "
                     f"-d{meta['duration']:g}s`, app `apps.{app}`, N = {n}.")
        else:
            L.append(f"app `apps.{app}`, N = {n}; RSS of the server's process tree before and after "
                     f"opening {MEM_CONNS} keep-alive connections that each made one request.")
        L.append("")
        order = [s for s in servers + OPTIONAL if s in summ]
        if scen == "memory":
            L.append("| server | RSS before (MiB) | RSS after (MiB) | bytes / idle connection | still open |")
            L.append("| --- | ---: | ---: | ---: | ---: |")
            for s in order:
                d = summ[s]
                if "bytes_per_conn" not in d:
                    L.append(f"| {s} | failed: {'; '.join(d['failed'])[:200]} | | | |")
                    continue
                cells = [c for c in runs[scen][s] if "failed" not in c]
                L.append(f"| {s} | {med([c['base_kib'] for c in cells]) / 1024:.1f} | "
                         f"{med([c['after_kib'] for c in cells]) / 1024:.1f} | "
                         f"{d['bytes_per_conn']:,.0f} | {d['alive']:.0f} / {MEM_CONNS} |")
        else:
            L.append("| server | req/s (median) | runs | p99 ms | µs CPU / req | server CPU (cores) | "
                     "idle CPU (cores) | conn | wrk errors / non-2xx / failures |")
            L.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |")
            for s in order:
                d = summ[s]
                if "rps" not in d:
                    L.append(f"| {s} | failed | | | | | | | {'; '.join(sorted(set(d['failed'])))[:240]} |")
                    continue
                errs = d["errors"] or ""
                if d["non2xx"]:
                    errs = (errs + f"; non-2xx {d['non2xx']}").strip("; ")
                if d["failed"]:
                    errs = (errs + f"; {len(d['failed'])} failed: {d['failed'][0][:120]}").strip("; ")
                L.append(f"| {s} | {d['rps']:,.0f} | {' / '.join(f'{x:,.0f}' for x in d['all_rps'])} | "
                         f"{fmt(d['p99_ms'], '.1f')} | {fmt(d.get('cpu_us', float('nan')), '.1f')} | "
                         f"{fmt(d.get('server_cores', float('nan')), '.2f')} | "
                         f"{fmt(d.get('idle_cores', float('nan')), '.2f')} | {d['conn']} | "
                         f"{errs.replace('|', '/') or '—'} |")
        L.append("")
    verdicts = targets(runs)
    if verdicts:
        L.append("### Targets (issue 11), against every peer in the same run")
        L.append("")
        L.append("| scenario | target | tgreen | reference | verdict |")
        L.append("| --- | --- | --- | --- | --- |")
        L.extend(verdicts)
        L.append("")
    L.append("<!-- server-bench:end -->")
    return "\n".join(L)


def targets(runs) -> list[str]:
    out = []
    summ = {sc: {s: summarize(c) for s, c in runs[sc].items()} for sc in runs}

    def peers_of(sc, key="rps"):
        return {s: get(summ[sc], s, key) for s in PEERS if get(summ[sc], s, key) == get(summ[sc], s, key)
                and get(summ[sc], s, "rps") > 0}

    def row(sc, label, t, ref, ok):
        out.append(f"| {sc} | {label} | {t} | {ref} | {mark(ok)} |")

    sc = "hello_ka"
    if sc in summ and "tgreen" in summ[sc]:
        t, peers = get(summ[sc], "tgreen", "rps"), peers_of(sc)
        bj = peers.pop("bjoern", float("nan"))
        best = max(peers, key=peers.get) if peers else None
        r_bj = t / bj
        r_best = t / peers[best] if best else float("nan")
        row(sc, "≥ 0.9x bjoern, ≥ 2x every other peer", f"{fmt_rps(t)} req/s, "
            f"{fmt(get(summ[sc], 'tgreen', 'cpu_us'), '.1f')} µs CPU/req",
            f"bjoern {fmt_rps(bj)} ({fmt(r_bj, '.2f')}x, "
            f"{fmt(get(summ[sc], 'bjoern', 'cpu_us'), '.1f')} µs); "
            f"next best {best} {fmt_rps(peers[best]) if best else '—'} ({fmt(r_best, '.2f')}x)",
            r_bj >= 0.9 and r_best >= 2.0)
    sc = "hello_close"
    if sc in summ and "tgreen" in summ[sc]:
        t, peers = get(summ[sc], "tgreen", "rps"), peers_of(sc)
        best = max(peers, key=peers.get) if peers else None
        r = t / peers[best] if best else float("nan")
        row(sc, "≥ every peer", f"{fmt_rps(t)} req/s", f"best {best} {fmt_rps(peers[best]) if best else '—'} "
            f"({fmt(r, '.2f')}x)", r >= 1.0)
    sc = "sleep"
    if sc in summ and "tgreen" in summ[sc]:
        t, peers = get(summ[sc], "tgreen", "rps"), peers_of(sc)
        tp, p99s = get(summ[sc], "tgreen", "p99_ms"), peers_of(sc, "p99_ms")
        best = max(peers, key=peers.get) if peers else None
        r = t / peers[best] if best else float("nan")
        low = min(p99s, key=p99s.get) if p99s else None
        ok = t >= 45_000 and r >= 3.0 and (low is None or tp < p99s[low])
        row(sc, "≥ 45% of 100k, ≥ 3x every peer, p99 below every peer's",
            f"{fmt_rps(t)} req/s ({t / 1000:.0f}% of ideal), p99 {fmt(tp, '.0f')} ms",
            f"best {best} {fmt_rps(peers[best]) if best else '—'} ({fmt(r, '.2f')}x); lowest peer p99 "
            f"{low} {fmt(p99s[low], '.0f') if low else '—'} ms", ok)
    for sc in ("stream", "big"):
        if sc in summ and "tgreen" in summ[sc]:
            t, peers = get(summ[sc], "tgreen", "rps"), peers_of(sc)
            best = max(peers, key=peers.get) if peers else None
            r = t / peers[best] if best else float("nan")
            row(sc, "≥ every peer", f"{fmt_rps(t)} req/s",
                f"best {best} {fmt_rps(peers[best]) if best else '—'} ({fmt(r, '.2f')}x)", r >= 1.0)
    if "workers_quota" in summ or "workers" in summ:
        q = summ.get("workers_quota", {})
        w = summ.get("workers", {})
        rq = get(q, "tgreen-q2", "rps") / get(q, "tgreen-q1", "rps")
        rw = get(w, "tgreen-w2", "rps") / get(w, "tgreen-w1", "rps")
        rg = get(w, "gunicorn-w2", "rps") / get(w, "gunicorn-w1", "rps")
        row("workers", "`--workers 2` ≥ 1.8x one worker, load generator off the workers' cores",
            f"quota: {fmt(rq, '.2f')}x ({fmt_rps(get(q, 'tgreen-q1', 'rps'))} → "
            f"{fmt_rps(get(q, 'tgreen-q2', 'rps'))})",
            f"on this box, wrk sharing the 2 cores: tgreen {fmt(rw, '.2f')}x (w2 left "
            f"{fmt(get(w, 'tgreen-w2', 'idle_cores'), '.2f')} cores idle), gunicorn {fmt(rg, '.2f')}x",
            rq >= 1.8)
    if "memory" in summ and "tgreen" in summ["memory"]:
        b = get(summ["memory"], "tgreen", "bytes_per_conn")
        row("memory", "≤ 4.4 KB per idle keep-alive connection", f"{fmt(b, ',.0f')} B",
            "4,426 B (2026-11-25)", b <= 4500)
    return out


def mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


# --------------------------------------------------------------------------- chart

def draw_chart(meta, runs, path):
    """One panel per scenario: req/s of every server, tgreen first and in its
    own colour, the no-WSGI reference hatched, failed cells named."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib missing (pip install matplotlib): no chart drawn", file=sys.stderr)
        return
    main = [s for s in MAIN_SCENARIOS if s in runs]
    if not main:
        return
    fig, axes = plt.subplots(len(main), 1, figsize=(10, 2.2 + 2.35 * len(main)), squeeze=False)
    for ax, sc in zip(axes[:, 0], main, strict=True):
        summ = {s: summarize(c) for s, c in runs[sc].items()}
        servers = [s for s in TGREEN + OPTIONAL + PEERS + REFS if s in summ]
        vals = [get(summ, s, "rps") for s in servers]
        top = max([x for x in vals if x == x] or [1])
        colors = ["#d62728" if s.startswith("tgreen") else "#bbbbbb" if s in REFS else
                  "#1f77b4" if s in FAST_PEERS else "#7f9fbf" for s in servers]
        y = list(range(len(servers)))[::-1]
        bars = ax.barh(y, [x if x == x else 0 for x in vals], color=colors, height=0.7)
        for bar, s in zip(bars, servers, strict=True):
            if s in REFS:
                bar.set_hatch("//")
        for yi, s, x in zip(y, servers, vals, strict=True):
            if x != x:
                label = "failed: " + (summ[s].get("failed") or ["?"])[0][:60]
            elif x == 0:
                label = "0: no response completed within the run"
            else:
                label = f"{x:,.0f}  ({fmt(get(summ, s, 'cpu_us'), '.0f')} µs CPU/req, p99 " \
                        f"{fmt(get(summ, s, 'p99_ms'), '.0f')} ms)"
                if blocks(sc, s):
                    label += "  blocks on sleep"
            ax.text((x if x == x else 0) + top * 0.01, yi, label, va="center", fontsize=7)
        ax.set_yticks(y)
        ax.set_yticklabels(servers, fontsize=8)
        ax.set_xlim(0, top * 1.55)
        ax.set_title(f"{sc}: {SCENARIOS[sc][4]}", fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("requests / s (median)", fontsize=7)
        ax.grid(axis="x", alpha=0.3)
    shared = max(float(meta["load_start"].split()[0]), float(meta["load_end"].split()[0])) > 1.5
    sub = (("PROVISIONAL (machine shared with other jobs): " if shared else "") +
           f"{meta['date']}, {meta['cpus']} cores, wrk on the same box, 1 worker process each, "
           f"{meta['reps']} rounds x {meta['duration']:g} s; load average {meta['load_start']} → "
           f"{meta['load_end']}")
    fig.suptitle("tgreen-serve against WSGI servers, req/s per scenario (red: tgreen; dark blue: C/Rust "
                 "servers; light blue: green servers; hatched: bare asyncio, no WSGI)\n" + sub, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart: {path}", file=sys.stderr)


# --------------------------------------------------------------------------- RESULTS.md

BEGIN, END = "<!-- server-bench:begin", "<!-- server-bench:end -->"


def write_results(report: str):
    """Replace the generated block in RESULTS.md (between the markers), keeping
    the hand-written text around it; append a section if there is none."""
    path = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    with open(path) as f:
        text = f.read()
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        text = text[:start] + report.rstrip("\n") + text[end + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## WSGI server vs peers\n\n" + report.rstrip("\n") + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"updated {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
