"""CPU time per green switch and per ping-pong round trip, for one tgreen tree.

Prints two numbers in ns of process CPU time (``time.process_time``, which a
loaded machine disturbs far less than wall-clock throughput): one ``sleep(0)``
of one of 100 greenlets, and one 1 KiB round trip between two greenlets over
a socketpair. Compare trees by running it on each, interleaved::

    python benchmarks/micro/switch_cpu.py /path/to/tree-a
    python benchmarks/micro/switch_cpu.py /path/to/tree-b [uvloop]
"""
import sys
import time

sys.path.insert(0, sys.argv[1])
import tgreen  # noqa: E402 - from the tree named on the command line

if len(sys.argv) > 2 and sys.argv[2] == "uvloop":
    tgreen.use_uvloop()
from tgreen import socket as gsocket  # noqa: E402

def switch_bench(n_per=500, k=100):
    def w():
        for _ in range(n_per):
            tgreen.sleep(0)
    gs = [tgreen.spawn(w) for _ in range(k)]
    t = time.process_time()
    tgreen.joinall(gs)
    return (time.process_time() - t) / (n_per * k) * 1e9

def pingpong_bench(n=5000):
    a, b = gsocket.socketpair()
    msg = b"x" * 1024
    def echo():
        while True:
            d = b.recv(4096)
            if not d:
                return
            b.sendall(d)
    def client():
        for _ in range(n):
            a.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(a.recv(4096))
        a.close()
    tgreen.spawn(echo)
    c = tgreen.spawn(client)
    t = time.process_time()
    c.join()
    return (time.process_time() - t) / n * 1e9

print(f"{switch_bench():.0f} {pingpong_bench():.0f}")
