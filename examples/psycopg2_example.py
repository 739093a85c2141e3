"""psycopg2 queries from many greenlets at once, with one call to set up.

psycopg2 talks to PostgreSQL through libpq, in C, so patching the socket
module cannot reach its socket. ``patch_all()`` also installs a wait callback
(``tgreen.psycopg.make_psycopg2_green()``) when psycopg2 is imported: libpq
then runs non-blocking and every wait goes through the hub.
This script runs 50 queries that each take 0.2 s in the server over a pool
of 25 connections (0.4 s in all, instead of 10 s one after the other), then
shows that a ``tgreen.Timeout`` stops a long query in the server too. ::

    python examples/psycopg2_example.py "host=127.0.0.1 port=5432 dbname=postgres user=me"
    PG_DSN="host=127.0.0.1 dbname=app" python examples/psycopg2_example.py --tasks 100

Give the host as an address (``127.0.0.1``): libpq resolves names itself,
in C, and that lookup blocks the thread.

One connection serves one greenlet at a time, as with threads: the pool
below hands connections out through a green queue, so a greenlet waiting for
one lets the others run.
"""

import tgreen.monkey

tgreen.monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import psycopg2  # noqa: E402

import tgreen  # noqa: E402


class ConnectionPool:
    """At most ``size`` connections, opened on demand, shared by greenlets."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.idle: tgreen.Queue = tgreen.Queue()
        self.slots = tgreen.Semaphore(size)

    @contextlib.contextmanager
    def connection(self):
        with self.slots:
            conn = self.idle.get_nowait() if self.idle.qsize() else psycopg2.connect(self.dsn)
            try:
                yield conn
                conn.commit()
            except BaseException:
                # A killed/timed-out query: the wait callback cancelled it in
                # the server, and psycopg2 closed the connection.
                if not conn.closed:
                    conn.rollback()
                raise
            finally:
                if not conn.closed:
                    self.idle.put(conn)

    def close(self) -> None:
        while self.idle.qsize():
            self.idle.get_nowait().close()


def query(pool: ConnectionPool, i: int) -> int:
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.2), %s * %s", (i, i))
        return cur.fetchone()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="concurrent psycopg2 queries with tgreen")
    parser.add_argument("dsn", nargs="?", default=os.environ.get("PG_DSN", "host=127.0.0.1 dbname=postgres"))
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--pool", type=int, default=25)
    args = parser.parse_args()

    pool = ConnectionPool(args.dsn, args.pool)
    started = time.monotonic()
    greenlets = [tgreen.spawn(query, pool, i) for i in range(args.tasks)]
    tgreen.joinall(greenlets, raise_error=True)
    elapsed = time.monotonic() - started
    assert [g.value for g in greenlets] == [i * i for i in range(args.tasks)]
    print(f"{args.tasks} queries of 0.2 s on {args.pool} connections in {elapsed:.2f} s "
          f"(one after the other: {args.tasks * 0.2:.0f} s)")

    # A timeout interrupts the query in the server, not only in the client.
    started = time.monotonic()
    try:
        with tgreen.Timeout(0.5), pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(30) /* tgreen example */")
    except tgreen.Timeout:
        print(f"pg_sleep(30) timed out after {time.monotonic() - started:.2f} s")
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity "
                    "WHERE state = 'active' AND query LIKE '%%tgreen example */'")
        print(f"queries still running in the server: {cur.fetchone()[0]}")
    pool.close()


if __name__ == "__main__":
    main()
