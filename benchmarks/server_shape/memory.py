"""Memory per idle keep-alive connection, per server shape.

    python benchmarks/server_shape/memory.py greenlet protocol tgreen [--n 2000]

Starts each shape of ``shapes.py``, opens N keep-alive connections that each
send one request and then stay idle, and prints the server's RSS increase
(/proc/PID/status VmRSS) divided by N.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))


def measure(shape: str, n: int, port: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, "..", ".."))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "shapes.py"), shape, str(port), "asyncio"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=raise_nofile)
    socks = []
    try:
        time.sleep(1.5)

        def one() -> None:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
            socks.append(s)

        one()
        time.sleep(0.3)
        before = rss_kib(proc.pid)
        for _ in range(n):
            one()
        time.sleep(0.5)
        return (rss_kib(proc.pid) - before) * 1024 / n
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="+")
    ap.add_argument("--n", type=int, default=2000)
    ns = ap.parse_args()
    raise_nofile()
    for i, shape in enumerate(ns.shapes):
        per = measure(shape, ns.n, 18600 + i)
        print(f"{shape}: {per:.0f} bytes per idle keep-alive connection")


if __name__ == "__main__":
    main()
