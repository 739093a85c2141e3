"""Fixed-work WSGI server runs for instruction counts and CPU per request.

The server (``tgreen.wsgi.WSGIServer`` with ``patch_all()`` applied, as
``tgreen-serve`` runs it) serves exactly N requests of one app, then exits; a
client in another process (never under valgrind) sends them over C keep-alive
connections, one request in flight per connection. Under callgrind the
difference between two values of N is the server's cost of that many
requests, independent of the machine's load::

    .venv/bin/python benchmarks/server/fixed.py --app hello --conns 1,50 --n 2000,12000
    .venv/bin/python benchmarks/server/fixed.py --loop uvloop --keep /tmp/cg   # keep callgrind.out files
    .venv/bin/python benchmarks/server/fixed.py --cpu --n 60000                # utime+stime, no valgrind

The server side alone: ``fixed.py serve APP N PORTFILE [LOOP]``.
With ``--keep DIR`` the larger run's ``callgrind.out`` is kept for
``callgrind_annotate --inclusive=yes`` (see RESULTS.md, "Where the time goes").
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# benchmarks/server/profile.py would shadow the stdlib "profile" that cProfile imports.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
import cProfile  # noqa: E402

sys.path.insert(0, HERE)


def serve(app_name: str, n: int, portfile: str, loop: str) -> None:
    os.environ["BENCH_GREEN"] = "tgreen"
    import tgreen
    from tgreen import monkey

    monkey.patch_all()
    if loop == "uvloop":
        tgreen.use_uvloop()
    import apps
    from tgreen.wsgi import WSGIServer

    server = WSGIServer(("127.0.0.1", 0), getattr(apps, app_name), cores=100, max_requests=n)
    server.on_max_requests = server.close
    server.start()
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.address[1]))
    os.rename(portfile + ".tmp", portfile)
    prof_out = os.environ.get("FIXED_CPROFILE")
    if prof_out:
        cProfile.runctx("server.serve_forever()", globals(), {"server": server}, prof_out)
    else:
        server.serve_forever()
    t = os.times()
    print(f"server-cpu {t.user + t.system:.6f}", flush=True)


def client(port: int, conns: int, n: int) -> None:
    """``n`` GET requests over ``conns`` keep-alive connections, one in flight each."""
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    sel = selectors.DefaultSelector()
    left = {}
    share, extra = divmod(n, conns)
    for i in range(conns):
        count = share + (1 if i < extra else 0)
        if not count:
            continue
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        left[s] = count
        s.send(req)
    while left:
        for key, _ in sel.select():
            s, buf = key.fileobj, key.data
            data = s.recv(65536)
            if not data:
                raise SystemExit("server closed a connection early")
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                m = re.search(rb"(?i)content-length: *(\d+)", bytes(buf[:end]))
                total = end + 4 + int(m.group(1))
                if len(buf) < total:
                    break
                del buf[:total]
                left[s] -= 1
                if left[s]:
                    s.send(req)
                else:
                    del left[s]
                    sel.unregister(s)
                    s.close()


def run_once(app: str, conns: int, n: int, loop: str, valgrind: bool, keep: str | None) -> dict:
    portfile = f"/tmp/tgreen-fixed-{os.getpid()}.port"
    if os.path.exists(portfile):
        os.unlink(portfile)
    cmd = [sys.executable, os.path.abspath(__file__), "serve", app, str(n), portfile, loop]
    out = "/dev/null"
    if keep:
        os.makedirs(keep, exist_ok=True)
        out = os.path.join(keep, f"callgrind.out.{app}.{loop}.c{conns}.n{n}")
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not os.path.exists(portfile):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(proc.stderr.read())
        time.sleep(0.05)
    with open(portfile) as f:
        port = int(f.read())
    os.unlink(portfile)
    client(port, conns, n)
    stdout, stderr = proc.communicate(timeout=300)
    res = {}
    m = re.search(r"Collected : (\d+)", stderr)
    if m:
        res["ir"] = int(m.group(1))
    m = re.search(r"server-cpu ([\d.]+)", stdout)
    if m:
        res["cpu"] = float(m.group(1))
    return res


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "asyncio")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", default="hello")
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    ap.add_argument("--conns", default="1,50", help="comma-separated connection counts")
    ap.add_argument("--n", default="2000,12000", help="two request counts (the difference is measured)")
    ap.add_argument("--cpu", action="store_true", help="server utime+stime instead of callgrind")
    ap.add_argument("--reps", type=int, default=3, help="--cpu: repetitions (median)")
    ap.add_argument("--keep", help="keep the callgrind.out files in this directory")
    args = ap.parse_args()
    n1, n2 = (int(x) for x in args.n.split(","))
    for conns in (int(c) for c in args.conns.split(",")):
        if args.cpu:
            vals = []
            for _ in range(args.reps):
                a = run_once(args.app, conns, n1, args.loop, False, None)["cpu"]
                b = run_once(args.app, conns, n2, args.loop, False, None)["cpu"]
                vals.append((b - a) / (n2 - n1) * 1e6)
            vals.sort()
            print(f"{args.app} {args.loop} c{conns}: {vals[len(vals) // 2]:.2f} us CPU/request "
                  f"(runs {', '.join(f'{v:.2f}' for v in vals)})", flush=True)
        else:
            a = run_once(args.app, conns, n1, args.loop, True, None)["ir"]
            b = run_once(args.app, conns, n2, args.loop, True, args.keep)["ir"]
            print(f"{args.app} {args.loop} c{conns}: {(b - a) / (n2 - n1):,.0f} instructions/request",
                  flush=True)


if __name__ == "__main__":
    main()
