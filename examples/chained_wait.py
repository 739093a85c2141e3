"""uWSGI's Tornado-engine "chained 10-second wait", without callbacks.

The uWSGI example scheduled ``ioloop.add_timeout(..., me.switch)`` and then
``me.parent.switch()`` by hand, ten times in a row. Here each step is one
line, and 100 such chains share one loop: the whole run takes the length of
one chain. Run: python examples/chained_wait.py [SECONDS]
"""

import sys
import time

import tgreen


def chain(steps: int, step: float) -> list[str]:
    out = []
    for i in range(steps):
        tgreen.sleep(step)  # the loop runs everybody else meanwhile
        out.append(f"step {i + 1}")
    return out


def main(total: float = 10.0) -> None:
    t0 = time.monotonic()
    chains = [tgreen.spawn(chain, 10, total / 10) for _ in range(100)]
    tgreen.joinall(chains, raise_error=True)
    assert all(c.value[-1] == "step 10" for c in chains)
    print(f"100 chains of 10 x {total / 10:.2f} s waits finished in {time.monotonic() - t0:.2f} s")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
