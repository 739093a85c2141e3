"""tgreen-serve against peer WSGI servers, interleaved, with wrk.

    .venv/bin/python benchmarks/server/bench.py                 # all scenarios, 3 reps, 5 s each
    .venv/bin/python benchmarks/server/bench.py --quick         # 1 rep, 2 s: smoke run
    .venv/bin/python benchmarks/server/bench.py --scenarios hello_ka,sleep --reps 5
    .venv/bin/python benchmarks/server/bench.py --write         # also update benchmarks/RESULTS.md

Every (scenario, server) cell is a fresh server process per repetition. Within a
repetition the servers of a scenario run round-robin (the starting server rotates
between repetitions) so machine noise hits all of them alike; the table shows the
median over repetitions. Before a cell is measured its response is checked
(status 200, exact body). wrk's socket errors and non-2xx counts are shown.
See benchmarks/README.md ("WSGI server vs peers").
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
UWSGI_VENV = os.environ.get("UWSGI_VENV", "/tmp/uwsgi-venv")
UWSGI = os.path.join(UWSGI_VENV, "bin", "uwsgi")
WRK = os.environ.get("WRK", "wrk")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def idle_seconds() -> float:
    """Machine-wide idle + iowait CPU seconds since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / CLK_TCK

sys.path.insert(0, HERE)
import apps  # noqa: E402

PEERS = ["gevent", "gevent-nodelay", "gunicorn", "tornado", "uwsgi"]
TGREEN = ["tgreen", "tgreen-uvloop"]

# name -> (app, wrk args, N (cores/pool/worker-connections), servers, what)
SCENARIOS = {
    "hello_ka": ("hello", ["-t2", "-c100"], 100, TGREEN + PEERS + ["raw", "raw-uvloop"],
                 "hello world, keep-alive, 100 connections"),
    "hello_close": ("hello", ["-t2", "-c100", "-H", "Connection: close"], 100,
                    TGREEN + PEERS + ["raw", "raw-uvloop"],
                    "hello world, `Connection: close`, 100 connections"),
    "sleep": ("sleep", ["-t2", "-c1000", "--timeout", "5s"], 1000, TGREEN + PEERS,
              "10 ms green sleep, 1000 connections, cores/pool 1000"),
    "stream": ("stream", ["-t2", "-c100"], 100, TGREEN + PEERS,
               "generator of 64 x 1 KiB, 100 connections"),
    "big": ("big", ["-t2", "-c100"], 100, TGREEN + PEERS, "1 MiB body, 100 connections"),
    "workers": ("hello", ["-t2", "-c100"], 100, ["tgreen-w1", "tgreen-w2", "gunicorn-w1", "gunicorn-w2"],
                "hello world keep-alive c100, 1 vs 2 worker processes"),
    "memory": ("hello", None, 2100, TGREEN + PEERS + ["raw"],
               "RSS per idle keep-alive connection (2000 connections, one request each)"),
}
ORDER = list(SCENARIOS)
MEM_CONNS = 2000


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
    if server == "gunicorn":
        env["BENCH_GREEN"] = "gevent"
        cmd = [os.path.join(VENV_BIN, "gunicorn"), "-k", "gevent", "--worker-connections", str(n),
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
    if server in ("raw", "raw-uvloop"):
        return [PY, f"{HERE}/runners.py", "raw", "-", str(port),
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
        self.log = open(os.path.join(logdir, f"{server}.log"), "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

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
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)   # uWSGI reloads on TERM; INT stops all
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()


# --------------------------------------------------------------------------- checks

def check(port: int, app: str) -> str:
    """GET / twice on one connection: status 200 and the exact body, else raise.
    Returns 'keep-alive' or 'close' (what the server did with the connection)."""
    expected = b"Hello, World!" if app == "raw" else apps.EXPECTED[app]
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
    if not r["rps"]:
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


def versions() -> dict:
    def pipver(pkg, py=PY):
        try:
            out = subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version('{pkg}'))"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            return out or "?"
        except Exception:
            return "?"

    v = {"python": platform.python_version()}
    for pkg in ("tgreen", "gevent", "gunicorn", "tornado", "uvloop", "httptools", "greenlet"):
        v[pkg] = pipver(pkg)
    try:
        v["uwsgi"] = subprocess.run([UWSGI, "--version"], capture_output=True, text=True).stdout.strip()
        v["uwsgi venv tornado"] = pipver("tornado", os.path.join(UWSGI_VENV, "bin", "python"))
    except OSError:
        v["uwsgi"] = "not built"
    v["wrk"] = (subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
                .split(" [")[0])
    return v


def run_cell(scen: str, server: str, args, logdir) -> dict:
    app, wrk_args, n, _, _ = SCENARIOS[scen]
    if server.startswith("raw"):
        app_check = "raw"
    else:
        app_check = app
    srv = Server(server, app, n, logdir, long_keepalive=(scen == "memory"))
    try:
        srv.wait_ready()
        conn_mode = check(srv.port, app_check)
        if scen == "memory":
            res = measure_memory(srv)
        else:
            if args.warmup > 0:
                run_wrk(srv.port, wrk_args, args.warmup)
            cpu0, idle0, t0 = srv.cpu_seconds(), idle_seconds(), time.monotonic()
            res = run_wrk(srv.port, wrk_args, args.duration)
            cpu1, idle1, t1 = srv.cpu_seconds(), idle_seconds(), time.monotonic()
            # Cores the server kept busy, and cores nobody used, over the
            # measured run: what says whether the machine was the limit.
            res["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
            res["idle_cores"] = (idle1 - idle0) / (t1 - t0)
        res["conn"] = conn_mode
        if srv.proc.poll() is not None:
            res["errors"] = (res.get("errors", "") + f" server exited {srv.proc.returncode}").strip()
        return res
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the run
        return {"failed": f"{type(e).__name__}: {e}"}
    finally:
        srv.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(ORDER), help=f"comma list of {', '.join(ORDER)}")
    ap.add_argument("--servers", default="", help="only these servers (comma list)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--quick", action="store_true", help="1 rep, 2 s, 1 s warm-up")
    ap.add_argument("--json", help="write raw per-run results here")
    ap.add_argument("--write", action="store_true", help="update the section in benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    # a killed run must not leave servers behind: SIGTERM unwinds through Server.stop()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 2, 1
    scens = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    only = {s for s in args.servers.split(",") if s}
    if not os.path.exists(UWSGI):
        print(f"note: {UWSGI} missing, uwsgi cells will fail (see README for the build)", file=sys.stderr)

    logdir = os.path.join("/tmp", f"tgreen-server-bench-{os.getpid()}")
    os.makedirs(logdir, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {"command": " ".join([os.path.relpath(PY, ROOT), os.path.relpath(__file__, ROOT),
                                 *(argv if argv is not None else sys.argv[1:])]),
            "date": started.strftime("%Y-%m-%d %H:%M UTC"), "load_start": loadavg(),
            "versions": versions(), "cpus": os.cpu_count(), "logdir": logdir,
            "duration": args.duration, "reps": args.reps}
    runs: dict[str, dict[str, list]] = {}
    loads = []
    for rep in range(args.reps):
        for scen in scens:
            # tgreen-nopatch (--no-patch) runs only when asked for by --servers.
            pool = SCENARIOS[scen][3] + (["tgreen-nopatch"] if scen != "workers" else [])
            servers = [s for s in pool if (s in only if only else s != "tgreen-nopatch")]
            k = rep % len(servers)
            order = servers[k:] + servers[:k]
            for server in order:
                res = run_cell(scen, server, args, logdir)
                runs.setdefault(scen, {}).setdefault(server, []).append(res)
                print(f"rep {rep + 1} {scen:12s} {server:15s} {short(scen, res)}   load {loadavg()}",
                      flush=True)
            loads.append(loadavg())
    meta["load_end"] = loadavg()
    meta["loads"] = loads
    meta["elapsed_s"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds())
    report = render(meta, runs, scens)
    print()
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "runs": runs}, f, indent=1, default=str)
    if args.write:
        write_results(report)


def short(scen, res):
    if "failed" in res:
        return "FAILED " + res["failed"]
    if scen == "memory":
        return f"{res['bytes_per_conn']:8.0f} B/conn  alive {res['alive']}"
    err = f"  errors: {res['errors']}" if res.get("errors") else ""
    n2 = f"  non-2xx {res['non2xx']}" if res.get("non2xx") else ""
    return f"{res['rps']:9.0f} req/s  p99 {res['p99_ms']:7.1f} ms  [{res.get('conn')}]{err}{n2}"


# --------------------------------------------------------------------------- report

def med(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def summarize(cells: list) -> dict:
    ok = [c for c in cells if "failed" not in c]
    out = {"n": len(ok), "failed": [c["failed"] for c in cells if "failed" in c]}
    if not ok:
        return out
    for key in ("rps", "p99_ms", "bytes_per_conn", "alive", "server_cores", "idle_cores"):
        if key in ok[0]:
            out[key] = med([c[key] for c in ok])
    if "rps" in ok[0]:
        out["all_rps"] = [c["rps"] for c in ok]
        out["errors"] = "; ".join(sorted({c["errors"] for c in ok if c.get("errors")}))
        out["non2xx"] = sum(c.get("non2xx", 0) for c in ok)
    out["conn"] = ok[0].get("conn", "")
    return out


TARGETS = {
    "hello_ka": ("≥ 2x best peer", 2.0, "peers"),
    "hello_close": ("≥ 1.5x best peer", 1.5, "peers"),
    "sleep": ("≥ 1.5x best peer, lower p99", 1.5, "peers"),
    "stream": ("≥ gevent", 1.0, "gevent"),
    "big": ("≥ best peer", 1.0, "peers"),
    "memory": ("≤ gevent", None, "gevent"),
    "workers": ("w2 ≥ 1.7x w1", 1.7, None),
}


def fmt_rps(x):
    return "—" if x != x else f"{x:,.0f}"


def render(meta, runs, scens) -> str:
    L = []
    v = meta["versions"]
    L.append("## WSGI server vs peers")
    L.append("")
    L.append(f"Command: `{meta['command']}` — {meta['date']}, {meta['cpus']} cores, loopback, "
             f"{meta['reps']} interleaved repetitions x {meta['duration']:g} s per cell (median shown), "
             f"{meta['elapsed_s']} s in all. Load average at start {meta['load_start']}, at end "
             f"{meta['load_end']}.")
    L.append("")
    L.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".")
    L.append("")
    verdicts = []
    for scen in scens:
        if scen not in runs:
            continue
        app, wrk_args, n, servers, what = SCENARIOS[scen]
        summ = {s: summarize(c) for s, c in runs[scen].items()}
        L.append(f"### {scen}: {what}")
        L.append("")
        if wrk_args:
            L.append(f"wrk `{' '.join(a if ' ' not in a else repr(a) for a in wrk_args)} --latency "
                     f"-d{meta['duration']:g}s`, app `apps.{app}`, N = {n}.")
        else:
            L.append(f"app `apps.{app}`, N = {n}; RSS of the server's process tree before and after "
                     f"opening {MEM_CONNS} keep-alive connections that each made one request.")
        L.append("")
        if scen == "memory":
            L.append("| server | RSS before (MiB) | RSS after (MiB) | bytes / idle connection | still open |")
            L.append("| --- | ---: | ---: | ---: | ---: |")
            for s in servers:
                if s not in summ:
                    continue
                d = summ[s]
                if "bytes_per_conn" not in d:
                    L.append(f"| {s} | failed: {'; '.join(d['failed'])[:150]} | | | |")
                    continue
                cells = [c for c in runs[scen][s] if "failed" not in c]
                L.append(f"| {s} | {med([c['base_kib'] for c in cells]) / 1024:.1f} | "
                         f"{med([c['after_kib'] for c in cells]) / 1024:.1f} | "
                         f"{d['bytes_per_conn']:,.0f} | {d['alive']:.0f} / {MEM_CONNS} |")
        else:
            L.append("| server | req/s (median) | runs | p99 ms | server CPU (cores) | "
                     "µs CPU / req | idle CPU (cores) | conn | wrk errors / non-2xx |")
            L.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |")
            for s in servers:
                if s not in summ:
                    continue
                d = summ[s]
                if "rps" not in d:
                    L.append(f"| {s} | failed | | | | | | | {'; '.join(d['failed'])[:150]} |")
                    continue
                errs = d["errors"] or ""
                if d["non2xx"]:
                    errs = (errs + f"; non-2xx {d['non2xx']}").strip("; ")
                if d["failed"]:
                    errs = (errs + f"; {len(d['failed'])} failed: {d['failed'][0][:80]}").strip("; ")
                sc, ic = d.get("server_cores", float("nan")), d.get("idle_cores", float("nan"))
                L.append(f"| {s} | {fmt_rps(d['rps'])} | {' / '.join(fmt_rps(x) for x in d['all_rps'])} | "
                         f"{d['p99_ms']:.1f} | {sc:.2f} | {1e6 * sc / d['rps']:.0f} | {ic:.2f} | "
                         f"{d['conn']} | {errs or '—'} |")
        L.append("")
        verdicts.extend(verdict(scen, summ))
    if verdicts:
        L.append("### Targets (issue 3), against the best peer in the same run")
        L.append("")
        L.append("| scenario | target | reference | tgreen (asyncio) | tgreen (uvloop) |")
        L.append("| --- | --- | --- | --- | --- |")
        L.extend(verdicts)
        L.append("")
    return "\n".join(L)


def verdict(scen, summ) -> list[str]:
    label, want, ref = TARGETS[scen]

    def get(s, key):
        return summ.get(s, {}).get(key, float("nan"))

    if scen == "workers":
        cells = []
        for base in ("tgreen", "gunicorn"):
            r = get(f"{base}-w2", "rps") / get(f"{base}-w1", "rps")
            cells.append(f"{base}: {r:.2f}x")
        r = get("tgreen-w2", "rps") / get("tgreen-w1", "rps")
        # Whether the machine, not the server, was the limit: idle CPU left
        # with two workers, and CPU per request with one vs two.
        per = [get(f"tgreen-{w}", "server_cores") / get(f"tgreen-{w}", "rps") for w in ("w1", "w2")]
        extra = (f" (w2 left {get('tgreen-w2', 'idle_cores'):.2f} cores idle; CPU per request "
                 f"w2/w1 {per[1] / per[0]:.2f})")
        return [f"| {scen} | {label} | {cells[1]} (reference) | {r:.2f}x {mark(r >= want)}{extra} | — |"]
    if scen == "memory":
        refs = [s for s in ("gevent", "gevent-nodelay") if s in summ and "bytes_per_conn" in summ[s]]
        if not refs:
            return [f"| {scen} | {label} | gevent missing | | |"]
        best = min(refs, key=lambda s: summ[s]["bytes_per_conn"])
        b = summ[best]["bytes_per_conn"]
        cells = []
        for t in TGREEN:
            x = get(t, "bytes_per_conn")
            cells.append(f"{x:,.0f} B ({x / b:.2f}x) {mark(x <= b)}" if x == x else "—")
        return [f"| {scen} | {label} | {best}: {b:,.0f} B | {cells[0]} | {cells[1]} |"]
    pool = ["gevent", "gevent-nodelay"] if ref == "gevent" else PEERS
    pool = [s for s in pool if get(s, "rps") == get(s, "rps") and get(s, "rps") > 0]
    if not pool:
        return [f"| {scen} | {label} | no peer measured | | |"]
    best = max(pool, key=lambda s: get(s, "rps"))
    b = get(best, "rps")
    cells = []
    for t in TGREEN:
        r = get(t, "rps") / b
        ok = r >= want
        extra = ""
        if scen == "sleep":
            p, bp = get(t, "p99_ms"), get(best, "p99_ms")
            ok = ok and p < bp
            extra = f", p99 {p:.0f} vs {bp:.0f} ms"
        cells.append(f"{r:.2f}x{extra} {mark(ok)}" if r == r else "—")
    return [f"| {scen} | {label} | {best}: {fmt_rps(b)} req/s | {cells[0]} | {cells[1]} |"]


def mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def write_results(report: str):
    path = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    with open(path) as f:
        text = f.read()
    head = "## WSGI server vs peers"
    start = text.find(head)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + report.rstrip("\n") + "\n"
    else:
        nxt = text.find("\n## ", start + len(head))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + report.rstrip("\n") + "\n" + ("\n" + text[end:] if nxt >= 0 else "")
    with open(path, "w") as f:
        f.write(text)
    print(f"updated {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
