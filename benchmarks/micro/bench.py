#!/usr/bin/env python
"""Micro benchmarks: tgreen vs gevent vs plain asyncio, in one run.

Every (benchmark, variant) pair runs in a fresh child process
(``bench.py --child BENCH LIB LOOP``) that prints exactly one JSON line.
The parent interleaves the variants round-robin over R repetitions (so
machine noise hits all of them alike), takes the median and prints a
markdown table with ratios.  ``--write`` puts that table into
``benchmarks/RESULTS.md`` under "## Micro benchmarks".

Run with the project's venv:  ``.venv/bin/python benchmarks/micro/bench.py``
"""

import argparse
import datetime
import gc
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(HERE)
# TGREEN_BENCH_ROOT: measure another checkout's tgreen with this script (ab.py)
REPO_ROOT = os.environ.get("TGREEN_BENCH_ROOT") or os.path.dirname(BENCH_DIR)
RESULTS_MD = os.path.join(BENCH_DIR, "RESULTS.md")
SECTION = "## Micro benchmarks"

# --------------------------------------------------------------------------
# Workload constants (fixed work per round; rounds repeat until the
# duration is used up).
# --------------------------------------------------------------------------
SWITCH_GREENLETS = 100        # greenlets/tasks doing sleep(0)
SWITCH_PER_GREENLET = 100     # sleep(0) calls per greenlet per round
SPAWN_BATCH = 1000            # spawn+join per round (joinall / gather)
PINGPONG_MSG = 1024           # bytes per message
PINGPONG_PER_ROUND = 500      # round trips per round
BULK_CHUNK = 64 * 1024        # sendall size and recv_into buffer size
BULK_ROUND_BYTES = 16 * 1024 * 1024  # bytes per round
MEMORY_N = 10000              # sleeping greenlets for the memory benchmarks

# name -> (unit, higher_is_better, description)
BENCHMARKS = {
    "switch": ("switches/s", True,
               "sleep(0) across %d greenlets/tasks" % SWITCH_GREENLETS),
    "spawn": ("spawn+join/s", True,
              "spawn trivial fn + joinall in batches of %d" % SPAWN_BATCH),
    "pingpong": ("round trips/s", True,
                 "socketpair echo, %d B messages" % PINGPONG_MSG),
    "pingpong_main": ("round trips/s", True,
                      "pingpong with the client side in the main greenlet "
                      "(asyncio: same as pingpong)"),
    "bulk": ("MB/s", True,
             "socketpair, %d KiB sendall -> recv_into (MB = 10^6 B)"
             % (BULK_CHUNK // 1024)),
    "memory": ("MiB / 10k", False,
               "RSS increase for %d greenlets blocked in Event.wait()"
               % MEMORY_N),
    "memory_sleep": ("MiB / 10k", False,
                     "RSS increase for %d greenlets blocked in sleep(60)"
                     % MEMORY_N),
}

# Benchmarks that have no asyncio counterpart of their own: the asyncio
# cells (and the tgreen/asyncio ratios) use this other row's numbers.
ASYNCIO_SAME_AS = {"pingpong_main": "pingpong"}

# (label, lib, loop)
VARIANTS = [
    ("gevent", "gevent", "default"),
    ("tgreen", "tgreen", "asyncio"),
    ("tgreen+uvloop", "tgreen", "uvloop"),
    ("asyncio", "asyncio", "asyncio"),
    ("asyncio+uvloop", "asyncio", "uvloop"),
]

# Which asyncio API the asyncio socket benchmarks use: "streams"
# (asyncio.open_unix_connection -> StreamReader/StreamWriter) or "sock"
# (loop.sock_sendall / loop.sock_recv[_into] on non-blocking sockets).
# "auto" (default) picks the one measured fastest for each benchmark on
# both loops: streams for pingpong (readexactly; ~2x sock_* on uvloop,
# ~same on the default loop), sock_* for bulk (sock_recv_into avoids the
# StreamReader buffer copy; ~3x streams).  Override with --asyncio-api.
DEFAULT_ASYNCIO_API = "auto"
AUTO_ASYNCIO_API = {"pingpong": "streams", "bulk": "sock"}


def asyncio_api_for(bench, api):
    if api == "auto":
        return AUTO_ASYNCIO_API.get(bench, "-")
    return api


# ==========================================================================
# Child side
# ==========================================================================

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


class Timer:
    """Run round() repeatedly until `duration` seconds are used up."""

    def __init__(self, duration):
        self.duration = duration
        self.warmup = min(0.2, duration / 5.0)

    def run(self, round_fn, work_per_round):
        t_end = time.perf_counter() + self.warmup
        while True:                       # warm-up (at least one round)
            round_fn()
            if time.perf_counter() >= t_end:
                break
        rounds = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        while True:
            round_fn()
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= self.duration:
                break
        cpu = max(time.process_time() - c0, 1e-9)
        # per CPU second too: steadier than wall time on a loaded machine
        return {"value": rounds * work_per_round / elapsed,
                "cpu_value": rounds * work_per_round / cpu,
                "rounds": rounds, "elapsed": elapsed}

    async def arun(self, round_coro_fn, work_per_round):
        t_end = time.perf_counter() + self.warmup
        while True:
            await round_coro_fn()
            if time.perf_counter() >= t_end:
                break
        rounds = 0
        t0 = time.perf_counter()
        c0 = time.process_time()
        while True:
            await round_coro_fn()
            rounds += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= self.duration:
                break
        cpu = max(time.process_time() - c0, 1e-9)
        # per CPU second too: steadier than wall time on a loaded machine
        return {"value": rounds * work_per_round / elapsed,
                "cpu_value": rounds * work_per_round / cpu,
                "rounds": rounds, "elapsed": elapsed}


# ---------------------------------------------------------------- green ---
# gevent and tgreen share one implementation; `G` is a namespace with
# spawn, joinall, sleep, Event, socketpair.

class GreenNS:
    def __init__(self, spawn, joinall, sleep, Event, socketpair):
        self.spawn = spawn
        self.joinall = joinall
        self.sleep = sleep
        self.Event = Event
        self.socketpair = socketpair


def green_switch(G, timer):
    sleep = G.sleep
    n = SWITCH_PER_GREENLET

    def worker():
        for _ in range(n):
            sleep(0)

    def one_round():
        G.joinall([G.spawn(worker) for _ in range(SWITCH_GREENLETS)])

    return timer.run(one_round, SWITCH_GREENLETS * SWITCH_PER_GREENLET)


def green_spawn(G, timer):
    def noop():
        pass

    spawn = G.spawn

    def one_round():
        G.joinall([spawn(noop) for _ in range(SPAWN_BATCH)])

    return timer.run(one_round, SPAWN_BATCH)


def green_pingpong(G, timer):
    a, b = G.socketpair()
    msg = b"x" * PINGPONG_MSG

    def echo():
        while True:
            data = b.recv(65536)
            if not data:
                break
            b.sendall(data)

    server = G.spawn(echo)

    def one_round():
        for _ in range(PINGPONG_PER_ROUND):
            a.sendall(msg)
            got = len(a.recv(PINGPONG_MSG))
            while got < PINGPONG_MSG:
                chunk = a.recv(PINGPONG_MSG - got)
                if not chunk:
                    raise RuntimeError("echo side closed early")
                got += len(chunk)

    res = timer.run(one_round, PINGPONG_PER_ROUND)
    a.close()
    server.join()
    b.close()
    return res


def green_bulk(G, timer):
    a, b = G.socketpair()
    chunk = b"\0" * BULK_CHUNK
    n_chunks = BULK_ROUND_BYTES // BULK_CHUNK
    buf = bytearray(BULK_CHUNK)

    def sender():
        for _ in range(n_chunks):
            a.sendall(chunk)

    def one_round():
        g = G.spawn(sender)
        got = 0
        recv_into = b.recv_into
        while got < BULK_ROUND_BYTES:
            n = recv_into(buf)
            if not n:
                raise RuntimeError("sender side closed early")
            got += n
        g.join()

    res = timer.run(one_round, BULK_ROUND_BYTES / 1e6)
    a.close()
    b.close()
    return res


def green_memory(G, mode):
    # Warm up: make sure hub/loop, Event and timer machinery exist.
    ev0 = G.Event()
    w = [G.spawn(ev0.wait), G.spawn(G.sleep, 0.001)]
    G.sleep(0)
    ev0.set()
    G.joinall(w)
    G.sleep(0)
    gc.collect()
    base = rss_kib()

    ev = G.Event()
    started = [0]

    if mode == "event":
        def worker():
            started[0] += 1
            ev.wait()
    else:
        def worker():
            started[0] += 1
            G.sleep(60)

    glets = [G.spawn(worker) for _ in range(MEMORY_N)]
    deadline = time.monotonic() + 30
    while started[0] < MEMORY_N:
        G.sleep(0.001)
        if time.monotonic() > deadline:
            raise RuntimeError("only %d/%d greenlets started"
                               % (started[0], MEMORY_N))
    G.sleep(0.01)
    gc.collect()
    after = rss_kib()
    del glets
    return memory_result(base, after)


def memory_result(base, after):
    delta = after - base
    return {"value": delta / 1024.0 * (10000.0 / MEMORY_N),
            "base_rss_kib": base, "after_rss_kib": after,
            "bytes_per_greenlet": delta * 1024.0 / MEMORY_N}


def make_gevent():
    import gevent
    import gevent.event
    import gevent.socket
    ns = GreenNS(gevent.spawn, gevent.joinall, gevent.sleep,
                 gevent.event.Event, gevent.socket.socketpair)
    info = {"loop_type": type(gevent.get_hub().loop).__module__ + "."
            + type(gevent.get_hub().loop).__name__,
            "version": gevent.__version__}
    return ns, info


def make_tgreen(loop):
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import tgreen
    if loop == "uvloop":
        tgreen.use_uvloop()
    import tgreen.event
    import tgreen.socket
    ns = GreenNS(tgreen.spawn, tgreen.joinall, tgreen.sleep,
                 tgreen.event.Event, tgreen.socket.socketpair)
    info = {"module": getattr(tgreen, "__file__", None)}

    # Best effort: find out which asyncio loop actually runs under the hub.
    def probe():
        import asyncio
        try:
            lp = asyncio.get_running_loop()
        except RuntimeError:
            lp = asyncio.get_event_loop()
        return type(lp).__module__ + "." + type(lp).__name__

    box = []
    g = tgreen.spawn(lambda: box.append(probe()))
    g.join()
    info["loop_type"] = box[0] if box else None
    return ns, info


def run_green(bench, lib, loop, duration):
    where = "greenlet"
    if bench.endswith("_main"):
        bench, where = bench[:-len("_main")], "main"
    if lib == "gevent":
        G, info = make_gevent()
    else:
        G, info = make_tgreen(loop)
    timer = Timer(duration)

    def body():
        if bench == "switch":
            return green_switch(G, timer)
        if bench == "spawn":
            return green_spawn(G, timer)
        if bench == "pingpong":
            return green_pingpong(G, timer)
        if bench == "bulk":
            return green_bulk(G, timer)
        if bench == "memory":
            return green_memory(G, "event")
        if bench == "memory_sleep":
            return green_memory(G, "sleep")
        raise ValueError("unknown benchmark %r" % bench)

    if where == "main":
        # The main greenlet drives the benchmark itself (e.g. the client
        # side of pingpong runs in the main greenlet).
        res = body()
    else:
        # Run the driver in a spawned greenlet; the main greenlet only
        # joins it (errors are carried back, not left to the library).
        box = []

        def wrapper():
            try:
                box.append((True, body()))
            except BaseException as e:
                box.append((False, e))

        G.spawn(wrapper).join()
        if not box:
            raise RuntimeError("driver greenlet did not finish")
        ok, val = box[0]
        if not ok:
            raise val
        res = val
    res.update(info)
    res["where"] = where
    return res


# -------------------------------------------------------------- asyncio ---

async def aio_switch(timer):
    import asyncio
    sleep = asyncio.sleep
    n = SWITCH_PER_GREENLET

    async def worker():
        for _ in range(n):
            await sleep(0)

    async def one_round():
        await asyncio.gather(*[asyncio.create_task(worker())
                               for _ in range(SWITCH_GREENLETS)])

    return await timer.arun(one_round,
                            SWITCH_GREENLETS * SWITCH_PER_GREENLET)


async def aio_spawn(timer):
    import asyncio

    async def noop():
        pass

    create_task = asyncio.create_task

    async def one_round():
        await asyncio.gather(*[create_task(noop())
                               for _ in range(SPAWN_BATCH)])

    return await timer.arun(one_round, SPAWN_BATCH)


async def aio_pingpong(timer, api):
    import asyncio
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    msg = b"x" * PINGPONG_MSG

    if api == "sock":
        async def echo():
            while True:
                data = await loop.sock_recv(b, 65536)
                if not data:
                    break
                await loop.sock_sendall(b, data)

        async def one_round():
            for _ in range(PINGPONG_PER_ROUND):
                await loop.sock_sendall(a, msg)
                got = len(await loop.sock_recv(a, PINGPONG_MSG))
                while got < PINGPONG_MSG:
                    chunk = await loop.sock_recv(a, PINGPONG_MSG - got)
                    if not chunk:
                        raise RuntimeError("echo side closed early")
                    got += len(chunk)

        server = asyncio.create_task(echo())
        res = await timer.arun(one_round, PINGPONG_PER_ROUND)
        a.close()
        await server
        b.close()
        return res

    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)

    async def echo():
        while True:
            data = await rb.read(65536)
            if not data:
                break
            wb.write(data)
            await wb.drain()

    async def one_round():
        for _ in range(PINGPONG_PER_ROUND):
            wa.write(msg)
            await wa.drain()
            await ra.readexactly(PINGPONG_MSG)

    server = asyncio.create_task(echo())
    res = await timer.arun(one_round, PINGPONG_PER_ROUND)
    wa.close()
    await server
    wb.close()
    return res


async def aio_bulk(timer, api):
    import asyncio
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    chunk = b"\0" * BULK_CHUNK
    n_chunks = BULK_ROUND_BYTES // BULK_CHUNK

    if api == "sock":
        buf = bytearray(BULK_CHUNK)

        async def sender():
            for _ in range(n_chunks):
                await loop.sock_sendall(a, chunk)

        async def one_round():
            t = asyncio.create_task(sender())
            got = 0
            while got < BULK_ROUND_BYTES:
                n = await loop.sock_recv_into(b, buf)
                if not n:
                    raise RuntimeError("sender side closed early")
                got += n
            await t

        res = await timer.arun(one_round, BULK_ROUND_BYTES / 1e6)
        a.close()
        b.close()
        return res

    ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)

    async def sender():
        for _ in range(n_chunks):
            wa.write(chunk)
            await wa.drain()

    async def one_round():
        t = asyncio.create_task(sender())
        got = 0
        while got < BULK_ROUND_BYTES:
            data = await rb.read(BULK_CHUNK)
            if not data:
                raise RuntimeError("sender side closed early")
            got += len(data)
        await t

    res = await timer.arun(one_round, BULK_ROUND_BYTES / 1e6)
    wa.close()
    wb.close()
    return res


async def aio_memory(mode):
    import asyncio
    ev0 = asyncio.Event()
    w = [asyncio.create_task(ev0.wait()),
         asyncio.create_task(asyncio.sleep(0.001))]
    await asyncio.sleep(0)
    ev0.set()
    await asyncio.gather(*w)
    await asyncio.sleep(0)
    gc.collect()
    base = rss_kib()

    ev = asyncio.Event()
    started = [0]

    if mode == "event":
        async def worker():
            started[0] += 1
            await ev.wait()
    else:
        async def worker():
            started[0] += 1
            await asyncio.sleep(60)

    tasks = [asyncio.create_task(worker()) for _ in range(MEMORY_N)]
    deadline = time.monotonic() + 30
    while started[0] < MEMORY_N:
        await asyncio.sleep(0.001)
        if time.monotonic() > deadline:
            raise RuntimeError("only %d/%d tasks started"
                               % (started[0], MEMORY_N))
    await asyncio.sleep(0.01)
    gc.collect()
    after = rss_kib()
    del tasks
    return memory_result(base, after)


def run_asyncio(bench, loop, duration, api):
    import asyncio
    if loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = None
    timer = Timer(duration)
    bench = ASYNCIO_SAME_AS.get(bench, bench)
    api = asyncio_api_for(bench, api)

    async def main():
        if bench == "switch":
            res = await aio_switch(timer)
        elif bench == "spawn":
            res = await aio_spawn(timer)
        elif bench == "pingpong":
            res = await aio_pingpong(timer, api)
            res["asyncio_api"] = api
        elif bench == "bulk":
            res = await aio_bulk(timer, api)
            res["asyncio_api"] = api
        elif bench == "memory":
            res = await aio_memory("event")
        elif bench == "memory_sleep":
            res = await aio_memory("sleep")
        else:
            raise ValueError("unknown benchmark %r" % bench)
        lp = asyncio.get_running_loop()
        res["loop_type"] = type(lp).__module__ + "." + type(lp).__name__
        return res

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def child_main(bench, lib, loop, duration, api):
    if lib == "tgreen" and loop == "uvloop":
        os.environ["TGREEN_LOOP"] = "uvloop"
    try:
        if lib == "asyncio":
            res = run_asyncio(bench, loop, duration, api)
        else:
            res = run_green(bench, lib, loop, duration)
        res["ok"] = True
    except BaseException as e:  # report anything, incl. SystemExit
        res = {"ok": False,
               "error": "%s: %s" % (type(e).__name__, e),
               "traceback": traceback.format_exc()}
    res.update({"bench": bench, "lib": lib, "loop": loop})
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Don't let half-finished greenlets / loops hang or crash teardown
    # (the memory benchmarks leave 10k sleepers behind on purpose).
    os._exit(0)


# ==========================================================================
# Parent side
# ==========================================================================

def run_child(bench, lib, loop, duration, api, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", bench, lib,
           loop, "--duration", repr(duration), "--asyncio-api", api]
    env = dict(os.environ)
    env.pop("TGREEN_LOOP", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=env, cwd=REPO_ROOT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode("utf-8", "replace")
        return {"ok": False, "error": "timeout after %.0fs" % timeout,
                "traceback": err[-4000:]}
    wall = time.monotonic() - t0
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    res = None
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                res = json.loads(line)
                break
            except ValueError:
                pass
    if res is None:
        return {"ok": False,
                "error": "child exited %s without a result" % p.returncode,
                "traceback": (err or out)[-4000:]}
    if err.strip():
        res["stderr"] = err[-4000:]
    res["wall"] = wall
    return res


def fmt_num(v, bench=None):
    if v is None:
        return "-"
    if bench == "bulk":
        return "%.0f" % v
    if bench in ("memory", "memory_sleep"):
        return "%.1f" % v
    a = abs(v)
    if a >= 1e6:
        return "%.2fM" % (v / 1e6)
    if a >= 1e5:
        return "%.0fk" % (v / 1e3)
    if a >= 1e4:
        return "%.1fk" % (v / 1e3)
    if a >= 1e3:
        return "%.2fk" % (v / 1e3)
    return "%.0f" % v


def short_error(res):
    err = res.get("error", "error")
    err = err.replace("|", "/").replace("\n", " ")
    if len(err) > 70:
        err = err[:67] + "..."
    return "ERR: " + err


def summarize(results, benches, variants):
    """results[(bench, label)] -> list of child dicts."""
    table = {}
    for bench in benches:
        for label, lib, loop in variants:
            runs = results.get((bench, label), [])
            if lib == "asyncio" and not runs and bench in ASYNCIO_SAME_AS:
                runs = results.get((ASYNCIO_SAME_AS[bench], label), [])
            good = [r["value"] for r in runs if r.get("ok")]
            bad = [r for r in runs if not r.get("ok")]
            cell = {"n": len(good), "runs": runs}
            if good:
                cell["median"] = statistics.median(good)
                cell["min"] = min(good)
                cell["max"] = max(good)
            if bad:
                cell["error"] = bad[0]
            # warn if the loop we got is not the loop we asked for
            lt = [r.get("loop_type") for r in runs if r.get("ok")]
            if loop == "uvloop" and any(t and "uvloop" not in t for t in lt):
                cell["warn"] = "loop=%s" % lt[0]
            if loop == "asyncio" and any(t and "uvloop" in t for t in lt):
                cell["warn"] = "loop=%s" % lt[0]
            table[(bench, label)] = cell
    return table


def worst_spread(table):
    """Largest (max - min) / median over all cells with >1 good run."""
    worst = None
    for (bench, label), cell in table.items():
        if cell.get("n", 0) > 1 and cell.get("median"):
            sp = (cell["max"] - cell["min"]) / cell["median"]
            if worst is None or sp > worst[0]:
                worst = (sp, bench, label)
    if worst is None:
        return ""
    return ("largest run-to-run spread (max-min)/median: %.0f%% (%s/%s)"
            % (worst[0] * 100, worst[1], worst[2]))


def ratio(table, bench, num, den):
    a = table.get((bench, num), {}).get("median")
    b = table.get((bench, den), {}).get("median")
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


RATIOS = [
    ("tgreen / gevent", "tgreen", "gevent"),
    ("tgreen+uvloop / gevent", "tgreen+uvloop", "gevent"),
    ("tgreen / asyncio", "tgreen", "asyncio"),
    ("tgreen+uvloop / asyncio+uvloop", "tgreen+uvloop", "asyncio+uvloop"),
]


def render_table(table, benches, variants):
    labels = [v[0] for v in variants]
    ratios = [r for r in RATIOS if r[1] in labels and r[2] in labels]
    head = ["benchmark", "unit"] + labels + [r[0] for r in ratios]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for bench in benches:
        unit, hib, _ = BENCHMARKS[bench]
        row = [bench, unit + ("" if hib else " (lower is better)")]
        for label in labels:
            cell = table[(bench, label)]
            if "median" in cell:
                s = fmt_num(cell["median"], bench)
                if cell.get("error"):
                    s += " (%d failed)" % (len(cell["runs"]) - cell["n"])
                if cell.get("warn"):
                    s += " (!%s)" % cell["warn"]
            elif cell.get("error"):
                s = short_error(cell["error"])
            else:
                s = "-"
            row.append(s)
        row += [ratio(table, bench, r[1], r[2]) for r in ratios]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_errors(table, benches, variants):
    """Failures grouped by error message (tracebacks shown once)."""
    groups = {}
    for bench in benches:
        for label, _, _ in variants:
            cell = table[(bench, label)]
            if cell.get("error"):
                e = cell["error"]
                key = e.get("error")
                if key not in groups:
                    groups[key] = {"where": [], "tb": e.get("traceback") or ""}
                groups[key]["where"].append("%s/%s" % (bench, label))
    out = []
    for msg, g in groups.items():
        out.append("- %s  [%s]" % (msg, ", ".join(g["where"])))
        for l in g["tb"].strip().splitlines()[-8:]:
            out.append("    " + l)
    return "\n".join(out)


def versions():
    def mod_version(name, attr="__version__"):
        try:
            out = subprocess.run(
                [sys.executable, "-c",
                 "import %s as m; print(getattr(m, %r, '?'))" % (name, attr)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                timeout=30, cwd=REPO_ROOT)
            return out.stdout.decode().strip() or "not importable"
        except Exception:
            return "?"
    v = {"python": platform.python_version(),
         "gevent": mod_version("gevent"),
         "tornado": mod_version("tornado", "version"),
         "greenlet": mod_version("greenlet"),
         "uvloop": mod_version("uvloop")}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                             cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10)
        v["tgreen (git HEAD)"] = rev.stdout.decode().strip() or "no commit"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tgreen"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=10)
        if dirty.stdout.strip():
            v["tgreen (git HEAD)"] += " + uncommitted changes"
    except Exception:
        pass
    return v


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def write_results(text):
    if os.path.exists(RESULTS_MD):
        with open(RESULTS_MD) as f:
            doc = f.read()
    else:
        doc = "# Benchmark results\n"
    pat = re.compile(r"^%s[^\n]*\n.*?(?=^## |\Z)" % re.escape(SECTION),
                     re.S | re.M)
    block = text.rstrip() + "\n\n"
    if pat.search(doc):
        doc = pat.sub(lambda m: block, doc, count=1)
    else:
        doc = doc.rstrip() + "\n\n" + block
    with open(RESULTS_MD, "w") as f:
        f.write(doc.rstrip() + "\n")


def parent_main(args):
    benches = args.benchmarks.split(",") if args.benchmarks else list(BENCHMARKS)
    for b in benches:
        if b not in BENCHMARKS:
            sys.exit("unknown benchmark %r (choose from %s)"
                     % (b, ", ".join(BENCHMARKS)))
    variants = VARIANTS
    if args.variants:
        want = args.variants.split(",")
        variants = [v for v in VARIANTS if v[0] in want]
        unknown = set(want) - {v[0] for v in variants}
        if unknown:
            sys.exit("unknown variant(s) %s (choose from %s)"
                     % (", ".join(sorted(unknown)),
                        ", ".join(v[0] for v in VARIANTS)))
    reps = args.reps if args.reps else (1 if args.quick else 3)
    duration = args.duration if args.duration else (0.15 if args.quick
                                                     else 1.5)
    timeout = args.timeout if args.timeout else (10 if args.quick else 120)

    results = {}
    load_before = loadavg()
    t_start = time.monotonic()
    for rep in range(reps):
        for bench in benches:
            # rotate the starting variant each repetition
            order = variants[rep % len(variants):] + \
                variants[:rep % len(variants)]
            for label, lib, loop in order:
                if lib == "asyncio" and \
                        ASYNCIO_SAME_AS.get(bench) in benches:
                    continue  # aliased to another row in summarize()
                res = run_child(bench, lib, loop, duration, args.asyncio_api,
                                timeout)
                results.setdefault((bench, label), []).append(res)
                if res.get("ok"):
                    msg = fmt_num(res["value"], bench)
                    if res.get("stderr"):
                        msg += "  [stderr: %s]" % res["stderr"].strip() \
                            .splitlines()[-1][:100]
                else:
                    msg = "FAILED: " + res.get("error", "?")
                print("[rep %d/%d] %-12s %-15s %s"
                      % (rep + 1, reps, bench, label, msg),
                      file=sys.stderr, flush=True)
    total = time.monotonic() - t_start
    load_after = loadavg()

    table = summarize(results, benches, variants)
    md = render_table(table, benches, variants)
    errors = render_errors(table, benches, variants)
    print()
    print(md)
    if errors:
        print("\nFailures:\n" + errors)
    spread = worst_spread(table)
    print("\n(%d repetitions, %.2fs per child, median; total %.0fs%s)"
          % (reps, duration, total, "; " + spread if spread else ""))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"%s|%s" % k: v for k, v in results.items()}, f,
                      indent=1)

    if args.write:
        argv = list(sys.argv[1:])
        if "--json" in argv:  # a local output path is noise in RESULTS.md
            i = argv.index("--json")
            del argv[i:i + 2]
        cmd = " ".join(["python", "benchmarks/micro/bench.py"] + argv)
        v = versions()
        parts = [SECTION, ""]
        parts.append("Measured %s on %s (%d CPUs), Linux %s. Command: `%s` "
                     "(%d repetitions of ~%.2fs per child process, "
                     "variants interleaved round-robin, median shown). "
                     "Load average (1/5/15 min) before: %s, after: %s."
                     % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                        cpu_model(), os.cpu_count() or 0, platform.release(),
                        cmd, reps, duration, load_before, load_after))
        parts.append("")
        api_desc = {"streams": "StreamReader/StreamWriter "
                                   "(asyncio.open_unix_connection)",
                    "sock": "loop.sock_sendall / loop.sock_recv[_into]"}
        parts.append("Versions: " + ", ".join("%s %s" % kv for kv in v.items())
                     + ". asyncio socket API: " + "; ".join(
                         "%s: %s" % (b, api_desc[asyncio_api_for(b, args.asyncio_api)])
                         for b in ("pingpong", "bulk") if b in benches) + ".")
        parts.append("")
        parts.append(md)
        parts.append("")
        parts.append("Higher is better except for the memory rows (RSS "
                     "increase in MiB per 10,000 blocked greenlets/tasks, "
                     "read from /proc/self/status VmRSS). Ratios are of "
                     "medians." + (" The " + spread + "." if spread else ""))
        parts.append("")
        parts.append("Workloads: " + "; ".join(
            "`%s`: %s" % (b, BENCHMARKS[b][2]) for b in benches) + ".")
        if errors:
            parts.append("")
            parts.append("Failures:")
            parts.append("")
            parts.append("```")
            parts.append(errors)
            parts.append("```")
        write_results("\n".join(parts))
        print("wrote %s" % os.path.relpath(RESULTS_MD, os.getcwd()),
              file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, metavar=("BENCH", "LIB", "LOOP"),
                    help="internal: run one benchmark and print JSON")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: short durations, 1 repetition")
    ap.add_argument("--reps", type=int, default=0,
                    help="repetitions per variant (default 3, quick 1)")
    ap.add_argument("--duration", type=float, default=0,
                    help="timed seconds per child (default 1.5, quick 0.15)")
    ap.add_argument("--timeout", type=float, default=0,
                    help="per-child timeout in s (default 120, quick 10)")
    ap.add_argument("--benchmarks", default="",
                    help="comma list, from: " + ", ".join(BENCHMARKS))
    ap.add_argument("--variants", default="",
                    help="comma list, from: " + ", ".join(v[0] for v in VARIANTS))
    ap.add_argument("--asyncio-api", choices=("auto", "streams", "sock"),
                    default=DEFAULT_ASYNCIO_API,
                    help="asyncio API for pingpong/bulk (default %(default)s)")
    ap.add_argument("--json", default="", help="also dump raw results here")
    ap.add_argument("--write", action="store_true",
                    help="update the Micro benchmarks section of "
                         "benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.child:
        bench, lib, loop = args.child
        child_main(bench, lib, loop, args.duration or 1.5, args.asyncio_api)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
