"""Server metrics: counters in shared memory, ``/metrics``, ``/stats`` and the status page.

::

    tgreen-serve app.py --workers 2 --metrics-bind 127.0.0.1:9100
    curl 127.0.0.1:9100/metrics     # Prometheus text (OpenMetrics if asked)
    curl 127.0.0.1:9100/stats       # the same numbers as JSON, per worker
    open http://127.0.0.1:9100/     # a live status page (status.html)

Theory of operation
-------------------
*Aggregation by the master, in shared memory* (not prometheus_client's
multiprocess mode). Before it forks, the master maps one anonymous shared
``mmap`` (``Block``): a header, a *retired* area and one *slot* per live
worker process. A worker writes only its own slot: plain 64-bit integers
(counts, nanoseconds) bumped through a ``memoryview``, about a
microsecond per request (benchmarks/RESULTS.md) and no lock, because each
word has one writer. When a worker exits, the master (the only writer of the header and
the retired area) adds the dead slot's counters to the retired area and
frees the slot, inside a sequence lock, so a reader never counts a request
twice or loses one: the totals are exactly the sum over every worker that
ever ran, across crashes, ``--max-requests`` recycling and reloads.
prometheus_client's multiprocess mode was not used because it needs
``PROMETHEUS_MULTIPROC_DIR`` in the environment before the app imports
prometheus_client (which would change the app's own metrics), costs a
locked mmap write per sample plus label lookups per request, and leaves
files to clean up; prometheus_client is still what formats the exposition.

*Who answers.* The master binds ``--metrics-bind`` and every worker serves
it with a small second ``WSGIServer`` on its own loop (a few cores of its
own, never counted in ``tgreen_requests_total``): any worker can answer,
since each reads the whole block. A standalone ``WSGIServer`` with
``metrics_bind`` uses a private one-slot block and binds it itself.

*Gauges* (cores busy, open connections, loop lag) are published by each
worker from a timer every ``TICK`` seconds; the same timer measures the
loop lag (how late it fires). A *blocked-loop event* is a report of the
blocking detector (``tgreen.monitor``, ``--block-warning-ms``) or, when it is
off, a tick at least ``BLOCKED_LAG`` seconds late.

Rules of this file:

1. The per-request path (``Recorder.after_request``) only bumps integers
   in its own slot; everything else (gauges, exposition) is off that path.
2. Only the master writes the header and the retired area, and only inside
   the sequence lock; readers retry until they see one even sequence
   number before and after their copy.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

__all__ = [
    "BUCKETS",
    "CLASSES",
    "METHODS",
    "RESTART_REASONS",
    "Block",
    "MasterMetrics",
    "Recorder",
    "attach",
    "metrics_app",
]

log = logging.getLogger("tgreen.wsgi")

#: Upper bounds (seconds) of the latency histogram's buckets (+Inf is implied).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)
#: Method label values; any other method is counted as "other" (bounded cardinality).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other")
#: Status class label values; "other": no response went out (the client left
#: first) or a code outside 100-599.
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")
#: Why a worker was replaced (``MasterMetrics.restarted``).
RESTART_REASONS = ("crash", "exit", "timeout", "reload", "other")

#: Seconds between two gauge publications (and loop-lag samples) of a worker.
TICK = 0.25
#: A tick this late counts as a blocked-loop event when the detector is off.
BLOCKED_LAG = 1.0

_METHOD_INDEX = {m: i for i, m in enumerate(METHODS[:-1])}
_NM, _NC, _NB = len(METHODS), len(CLASSES), len(BUCKETS) + 1

# -- the block's layout (64-bit words) ------------------------------------------------
# Header (master only): sequence lock, restarts by reason.
H_SEQ = 0
H_RESTARTS = 1
HEADER = H_RESTARTS + len(RESTART_REASONS)
# A slot: identity and gauges first, then the counters the master folds on exit.
S_STATE, S_PID, S_WID, S_STARTED = 0, 1, 2, 3          # STATE: 0 free, 1 in use
S_CORES, S_BUSY, S_CONNS, S_LAG_NS, S_TICKED = 4, 5, 6, 7, 8
S_COUNTERS = 9
S_REQ = S_COUNTERS                                      # method x class
S_HIST = S_REQ + _NM * _NC                              # latency buckets (not cumulative)
S_SUM_NS = S_HIST + _NB                                 # latency sum, ns
S_REFUSED = S_SUM_NS + 1                                # refused requests by class
S_BLOCKED = S_REFUSED + _NC                             # blocked-loop events
SLOT = S_BLOCKED + 1


class Block:
    """The counters of every worker: ``slots`` slots after the header and the
    retired area (a slot's layout, which the retired area shares). ``shared``:
    an anonymous shared mapping, inherited by forked workers; else private."""

    def __init__(self, slots: int, shared: bool = True) -> None:
        self.slots = slots
        size = (HEADER + SLOT * (slots + 1)) * 8
        self._buf: Any = mmap.mmap(-1, size) if shared else bytearray(size)
        self.words = memoryview(self._buf).cast("Q")
        self.retired = HEADER                                   # base of the retired area

    def slot_base(self, i: int) -> int:
        return HEADER + SLOT * (i + 1)

    def snapshot(self) -> list[int]:
        """A consistent copy of every word (rule 2)."""
        words = self.words
        for _ in range(10000):
            seq = words[H_SEQ]
            if seq & 1:
                time.sleep(0)
                continue
            data = words.tolist()
            if words[H_SEQ] == seq:
                return data
        return words.tolist()  # a master stuck mid-fold: give what is there


class MasterMetrics:
    """The master's side: the block, the metrics listeners, slots per worker
    process, folding dead workers, counting restarts (``restarted``)."""

    def __init__(self, cfg: Any, slots: int) -> None:
        # Imported once here, so no worker pays for it after the fork.
        import prometheus_client.exposition  # noqa: F401

        from .listen import bind

        self.block = Block(slots)
        self.sockets = [bind(cfg.metrics_bind, cfg.backlog)]
        self._unix_path = cfg.metrics_bind[1] if cfg.metrics_bind[0] == "unix" else None
        self._pid = os.getpid()
        for s in self.sockets:
            s.set_inheritable(False)
        self._by_pid: dict[int, int] = {}
        self.child_slot = -1   # the slot of the worker being forked

    def claim(self, wid: int) -> int:
        """Reserve a free slot for a worker about to be forked (-1: none left;
        that worker then counts in a private block nobody reads)."""
        w = self.block.words
        for i in range(self.block.slots):
            base = self.block.slot_base(i)
            if w[base + S_STATE] == 0:
                w[base:base + SLOT] = memoryview(bytes(SLOT * 8)).cast("Q")
                w[base + S_WID] = wid
                w[base + S_STARTED] = int(time.time())
                w[base + S_STATE] = 1
                self.child_slot = i
                return i
        log.warning("tgreen-serve: no free metrics slot for worker %d; its requests are not counted", wid)
        self.child_slot = -1
        return -1

    def started(self, slot: int, pid: int) -> None:
        if slot >= 0:
            self.block.words[self.block.slot_base(slot) + S_PID] = pid
            self._by_pid[pid] = slot

    def exited(self, pid: int) -> None:
        """A worker process is gone: fold its counters into the retired area
        and free its slot (rule 2)."""
        slot = self._by_pid.pop(pid, None)
        if slot is None:
            return
        w = self.block.words
        base = self.block.slot_base(slot)
        ret = self.block.retired
        w[H_SEQ] += 1
        try:
            for k in range(S_COUNTERS, SLOT):
                w[ret + k] += w[base + k]
            w[base + S_STATE] = 0
        finally:
            w[H_SEQ] += 1

    def restarted(self, reason: str) -> None:
        """Count one worker replaced for ``reason`` (one of RESTART_REASONS)."""
        try:
            i = RESTART_REASONS.index(reason)
        except ValueError:
            i = RESTART_REASONS.index("other")
        w = self.block.words
        w[H_SEQ] += 1
        w[H_RESTARTS + i] += 1
        w[H_SEQ] += 1

    def close(self) -> None:
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        self.sockets = []
        if self._unix_path and os.getpid() == self._pid:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None


class Recorder:
    """A worker's side: writes its slot. ``after_request`` is on the
    per-request path (rule 1); ``tick`` publishes the gauges."""

    def __init__(self, block: Block, slot: int, server: Any) -> None:
        # Set by attach(): what start() serves (sockets or --metrics-bind)
        # and the block it shows (every worker's, not only this slot).
        self.listen: Any = None
        self.shown = block
        if slot < 0:
            block, slot = Block(1, shared=False), 0
        self.block = block
        self.base = base = block.slot_base(slot)
        self.server = server
        w = self.words = block.words
        w[base + S_STATE] = 1
        w[base + S_PID] = os.getpid()
        w[base + S_WID] = _worker_id()
        if not w[base + S_STARTED]:
            w[base + S_STARTED] = int(time.time())
        self._handle: Any = None
        self._due = 0.0
        self._reports_seen = 0

    def make_hook(self, access: Callable | None) -> Callable:
        """The server's ``after_request(conn, req, resp, env)``: count, then
        the access log line if there is one."""
        w = self.words
        req_base = self.base + S_REQ
        hist_base = self.base + S_HIST
        sum_i = self.base + S_SUM_NS
        method_index = _METHOD_INDEX.get
        bounds = BUCKETS
        mono = time.monotonic
        other_m, other_c = _NM - 1, _NC - 1

        def after_request(conn: Any, req: Any, resp: Any, env: Any) -> None:
            d = mono() - req.start
            c = resp.code // 100
            w[req_base + method_index(req.method, other_m) * _NC + (c - 1 if 0 < c < 6 else other_c)] += 1
            w[hist_base + bisect_left(bounds, d)] += 1
            w[sum_i] += int(d * 1e9)
            if access is not None:
                access(conn, req, resp, env, d)
        return after_request

    def refused(self, status: int) -> None:
        c = status // 100
        self.words[self.base + S_REFUSED + (c - 1 if 0 < c < 6 else _NC - 1)] += 1

    # -- gauges and loop lag (a timer on the server's loop) ---------------------------

    def start(self) -> None:
        loop = self.server.loop
        self.words[self.base + S_CORES] = self.server.cfg.cores
        self._due = loop.time() + TICK
        self._handle = loop.call_at(self._due, self.tick)

    def tick(self) -> None:
        server = self.server
        loop = server.loop
        now = loop.time()
        lag = max(0.0, now - self._due)
        w, base = self.words, self.base
        w[base + S_LAG_NS] = int(lag * 1e9)
        cores = server.cores
        w[base + S_BUSY] = cores.busy if cores is not None else 0
        w[base + S_CONNS] = len(server.connections)
        w[base + S_TICKED] = int(time.time())
        from .. import monitor

        m = monitor.monitor_for(server.hub)
        if m is not None:
            if m.reports > self._reports_seen:
                w[base + S_BLOCKED] += m.reports - self._reports_seen
            self._reports_seen = m.reports
        elif lag >= BLOCKED_LAG:
            w[base + S_BLOCKED] += 1
        if server.closed:
            return
        self._due = now + TICK
        self._handle = loop.call_at(self._due, self.tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _worker_id() -> int:
    from .._postfork import worker_id

    try:
        return worker_id() or 0
    except Exception:  # noqa: BLE001 - outside tgreen-serve
        return 0


# -- reading the block -----------------------------------------------------------------

def read_stats(block: Block) -> dict:
    """Every number of the block, summed over workers (live and retired), as
    the JSON of ``/stats``."""
    data = block.snapshot()
    totals = data[block.retired + S_COUNTERS:block.retired + SLOT]
    workers = []
    for i in range(block.slots):
        base = block.slot_base(i)
        if data[base + S_STATE] != 1:
            continue
        own = data[base + S_COUNTERS:base + SLOT]
        totals = [a + b for a, b in zip(totals, own)]
        req = sum(own[S_REQ - S_COUNTERS:S_HIST - S_COUNTERS])
        workers.append({
            "worker": data[base + S_WID], "pid": data[base + S_PID],
            "started": data[base + S_STARTED], "requests": req,
            "cores": data[base + S_CORES], "cores_busy": data[base + S_BUSY],
            "connections": data[base + S_CONNS],
            "loop_lag_seconds": data[base + S_LAG_NS] / 1e9,
            "loop_blocked": own[S_BLOCKED - S_COUNTERS],
        })
    workers.sort(key=lambda x: (x["worker"], x["started"], x["pid"]))

    def part(start: int, n: int) -> list[int]:
        return totals[start - S_COUNTERS:start - S_COUNTERS + n]

    per_class = part(S_REQ, _NM * _NC)
    by_method = {}
    for mi, m in enumerate(METHODS):
        row = {c: per_class[mi * _NC + ci] for ci, c in enumerate(CLASSES) if per_class[mi * _NC + ci]}
        if row:
            by_method[m] = row
    restarts = data[H_RESTARTS:H_RESTARTS + len(RESTART_REASONS)]
    return {
        "time": time.time(),
        "requests_total": sum(per_class),
        "requests": by_method,
        "latency": {"buckets": list(BUCKETS), "counts": part(S_HIST, _NB),
                    "sum": part(S_SUM_NS, 1)[0] / 1e9},
        "refused": {c: n for c, n in zip(CLASSES, part(S_REFUSED, _NC)) if n},
        "loop_blocked_total": part(S_BLOCKED, 1)[0],
        "worker_restarts_total": sum(restarts),
        "worker_restarts": dict(zip(RESTART_REASONS, restarts)),
        "workers": workers,
    }


class _Collector:
    """prometheus_client collector over one ``read_stats()``."""

    def __init__(self, block: Block) -> None:
        self.block = block

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        s = read_stats(self.block)
        c = CounterMetricFamily("tgreen_requests", "Requests the app served, by method and status "
                                "class (other: no response sent)", labels=["method", "status"])
        for m in METHODS:
            for cls in CLASSES:
                c.add_metric([m, cls], s["requests"].get(m, {}).get(cls, 0))
        yield c
        lat = s["latency"]
        cum, buckets = 0, []
        for le, n in zip([*(_fmt(b) for b in BUCKETS), "+Inf"], lat["counts"]):
            cum += n
            buckets.append((le, cum))
        yield HistogramMetricFamily("tgreen_request_duration_seconds",
                                    "Time from the request's first byte to the end of its response",
                                    buckets=buckets, sum_value=lat["sum"])
        c = CounterMetricFamily("tgreen_requests_refused", "Requests refused before the app "
                                "(malformed, too large, too slow), by status class", labels=["status"])
        for cls in CLASSES:
            c.add_metric([cls], s["refused"].get(cls, 0))
        yield c
        yield CounterMetricFamily("tgreen_loop_blocked", "Times a worker's event loop was seen "
                                  "blocked (blocking detector reports, else a loop lag over "
                                  f"{BLOCKED_LAG:g} s)", value=s["loop_blocked_total"])
        c = CounterMetricFamily("tgreen_worker_restarts", "Workers replaced by the master, by reason",
                                labels=["reason"])
        for reason, n in s["worker_restarts"].items():
            c.add_metric([reason], n)
        yield c
        gauges = (("tgreen_cores", "Async cores of the worker", "cores"),
                  ("tgreen_cores_busy", "Cores running a request", "cores_busy"),
                  ("tgreen_connections_open", "Open client connections", "connections"),
                  ("tgreen_loop_lag_seconds", f"How late the worker's {TICK:g} s timer last fired",
                   "loop_lag_seconds"))
        for name, doc, key in gauges:
            g = GaugeMetricFamily(name, doc, labels=["worker", "pid"])
            for wk in s["workers"]:
                g.add_metric([str(wk["worker"]), str(wk["pid"])], wk[key])
            yield g
        yield GaugeMetricFamily("tgreen_workers", "Live worker processes", value=len(s["workers"]))


def _fmt(b: float) -> str:
    return repr(float(b))


_STATUS_PAGE: bytes | None = None


def _status_page() -> bytes:
    global _STATUS_PAGE
    if _STATUS_PAGE is None:
        path = os.path.join(os.path.dirname(__file__), "status.html")
        with open(path, "rb") as f:
            _STATUS_PAGE = f.read()
    return _STATUS_PAGE


def metrics_app(block: Block) -> Callable:
    """The WSGI app of the metrics listener: ``/metrics``, ``/stats``, ``/``."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(block))

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                      ("Content-Type", "text/plain")])
            return [b"405 Method Not Allowed\n"]
        headers = [("Cache-Control", "no-store")]
        if path == "/metrics":
            encoder, ctype = choose_encoder(environ.get("HTTP_ACCEPT", ""))
            body = encoder(registry)
        elif path == "/stats":
            body, ctype = json.dumps(read_stats(block)).encode(), "application/json"
        elif path in ("/", "/status"):
            body, ctype = _status_page(), "text/html; charset=utf-8"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"404 Not Found: try /metrics, /stats or /\n"]
        start_response("200 OK", [("Content-Type", ctype), *headers])
        return [body]
    return app


# -- wiring a server -------------------------------------------------------------------

def attach(server: Any, block: Block | None = None, slot: int = 0, sockets: Any = None) -> None:
    """Give ``server`` a recorder and a metrics listener (before ``start()``).
    From a tgreen-serve worker: the master's block, this worker's slot and the
    master's metrics sockets. Standalone: a private block and
    ``server.cfg.metrics_bind``."""
    if block is None:
        block = Block(1, shared=False)
        slot = 0
    server.metrics = Recorder(block, slot, server)
    # Where start() serves the metrics: passed sockets or --metrics-bind.
    server.metrics.listen = sockets if sockets is not None else server.cfg.metrics_bind


def start(server: Any) -> None:
    """Called by ``server.start()``: the gauge timer and the metrics server."""
    from .server import WSGIServer

    rec = server.metrics
    rec.start()
    cfg = server.cfg.replace(cores=8, access_log=None, metrics_bind=None, max_requests=0)
    ms = WSGIServer(rec.listen, metrics_app(rec.shown), config=cfg)
    ms.start()
    server.metrics_server = ms

    def closed() -> None:
        rec.stop()
        ms.close()
    server.add_stop_callback(closed)
