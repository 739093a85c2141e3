"""Fixed-work ping-pong for instruction counts: N round trips of 1 KiB over a
green socketpair, nothing else. Under callgrind the difference between two
values of N is the cost of N round trips, independent of machine load::

    for n in 200 1200; do
      PYTHONPATH=CHECKOUT valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/micro/pingpong_fixed.py $n 2>&1 | grep Collected
    done
"""

import sys

import tgreen
from tgreen import socket


def main(n: int) -> None:
    a, b = socket.socketpair()
    msg = b"x" * 1024

    def echo() -> None:
        for _ in range(n):
            b.sendall(b.recv(1024))

    def client() -> None:
        for _ in range(n):
            a.sendall(msg)
            a.recv(1024)

    server = tgreen.spawn(echo)
    tgreen.spawn(client).join()
    server.join()
    a.close()
    b.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
