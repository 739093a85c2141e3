"""Every option of the WSGI server and of ``tgreen-serve``, defined once.

Each ``Option`` carries its name, default, parser (the one validation used by
the Python API and the command line alike), command-line flag and help text.
``Config`` is the validated set of values; ``tgreen.serve`` builds its
argparse parser from ``OPTIONS`` and ``WSGIServer(**options)`` goes through
the same parsers. ::

    from tgreen.wsgi.config import Config
    cfg = Config(cores=200, keepalive_timeout=2)
    cfg.cores            # 200
    Config(cores=0)      # ValueError: tgreen: cores must be at least 1 (got 0)

Rules of this file: an option is added here and nowhere else; a value that
fails its parser is refused with one line that names the option.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "OPTIONS", "Config", "parse_bind"]

#: A parsed ``--bind``: ("tcp", host, port), ("unix", path) or ("fd", n).
BindSpec = tuple[Any, ...]
#: A parsed ``forwarded_allow_ips`` entry: a network, or "*" for every peer.
AllowedPeer = str | ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A bad option value; the message is one line naming the option."""


# -- value parsers ---------------------------------------------------------------

def _int(minimum: int) -> Callable[[str, Any], int]:
    def parse(name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"tgreen: {name} must be an integer (got {value!r})")
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"tgreen: {name} must be an integer (got {value!r})") from None
        if v < minimum:
            raise ConfigError(f"tgreen: {name} must be at least {minimum} (got {v})")
        return v
    return parse


def _seconds(name: str, value: Any) -> float:
    """A duration in seconds; 0 disables the timeout."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"tgreen: {name} must be a number of seconds (got {value!r})") from None
    if not v >= 0 or v == float("inf"):
        raise ConfigError(f"tgreen: {name} must be a finite number of seconds >= 0 (got {value!r})")
    return v


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        v = str(value).lower()
        if v not in choices:
            raise ConfigError(f"tgreen: {name} must be one of {', '.join(choices)} (got {value!r})")
        return v
    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def _str_or_none(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _str(name: str, value: Any) -> str:
    return "" if value is None else str(value)


def _root_path(name: str, value: Any) -> str:
    v = "" if value is None else str(value)
    if v and (not v.startswith("/") or v.endswith("/")):
        raise ConfigError(f"tgreen: {name} must start with '/' and not end with '/' (got {v!r})")
    return v


def _ip_list(name: str, value: Any) -> tuple[AllowedPeer, ...]:
    """Comma-separated IPs or networks, or '*' for every peer."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[AllowedPeer] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if item == "*":
            return ("*",)
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"tgreen: {name}: {item!r} is not an IP address or network") from None
    return tuple(out)


def parse_bind(name: str, value: Any) -> BindSpec:
    """One ``--bind`` value: ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT``,
    ``unix:PATH`` or ``fd://N``. Returns ("tcp", host, port),
    ("unix", path) or ("fd", n)."""
    if isinstance(value, tuple):
        return value
    s = str(value).strip()
    if s.startswith("unix:"):
        path = s[5:]
        if not path:
            raise ConfigError(f"tgreen: {name}: unix: needs a path (got {s!r})")
        return ("unix", path)
    if s.startswith("fd://"):
        try:
            fd = int(s[5:])
        except ValueError:
            raise ConfigError(f"tgreen: {name}: fd://N needs a file descriptor number (got {s!r})") from None
        if fd < 0:
            raise ConfigError(f"tgreen: {name}: bad file descriptor in {s!r}")
        return ("fd", fd)
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"tgreen: {name}: expected [IPV6]:PORT (got {s!r})")
        port_s = rest[1:]
    else:
        host, sep, port_s = s.rpartition(":")
        if not sep:
            host, port_s = s, "8000"
        if ":" in host:
            raise ConfigError(f"tgreen: {name}: write IPv6 addresses as [ADDR]:PORT (got {s!r})")
    try:
        port = int(port_s)
    except ValueError:
        raise ConfigError(f"tgreen: {name}: bad port in {s!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"tgreen: {name}: port out of range in {s!r}")
    return ("tcp", host or "0.0.0.0", port)


def _binds(name: str, value: Any) -> tuple[BindSpec, ...]:
    """One bind spec or a list of them."""
    if value is None:
        return ()
    if isinstance(value, str) or (isinstance(value, tuple) and value
                                  and value[0] in ("tcp", "unix", "fd")):
        value = [value]
    return tuple(parse_bind(name, v) for v in value)


def _metrics_bind(name: str, value: Any) -> BindSpec | None:
    """``--metrics-bind``: one bind spec; needs prometheus_client (the
    ``metrics`` extra), checked here so a missing one is a usage error."""
    if value is None or value == "":
        return None
    spec = parse_bind(name, value)
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError("tgreen: --metrics-bind needs the prometheus_client package: "
                          "pip install 'tgreen[metrics]'")
    return spec


def _access_log_format(name: str, value: Any) -> str | None:
    from .accesslog import check_format

    return check_format(name, value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"tgreen: {name} must be true or false (got {value!r})")


def _account(kind: str) -> Callable[[str, Any], int | None]:
    """A user or group given by name or number, resolved to its id now, so a
    typo fails at start-up rather than in every worker."""
    def parse(name: str, value: Any) -> int | None:
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        s = str(value).strip()
        if s.isdigit():
            return int(s)
        import grp
        import pwd

        try:
            return pwd.getpwnam(s).pw_uid if kind == "user" else grp.getgrnam(s).gr_gid
        except KeyError:
            raise ConfigError(f"tgreen: {name}: no such {kind} {s!r}") from None
    return parse


def _reload(name: str, value: Any) -> bool:
    """--reload watches files with watchfiles, an optional dependency."""
    on = _bool(name, value)
    if on:
        # Looked up, not imported: the master patches after reading its
        # settings, and watchfiles runs only in the watcher process.
        import importlib.util

        try:
            found = importlib.util.find_spec("watchfiles") is not None
        except (ImportError, ValueError):   # ValueError: sys.modules holds None
            found = False
        if not found:
            raise ConfigError(f"tgreen: {name} needs the watchfiles package: "
                              "pip install 'tgreen[reload]'")
    return on


def _loop(name: str, value: Any) -> str | None:
    if value is None:
        return None
    return _choice("asyncio", "uvloop")(name, value)


# -- the options -------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    parse: Callable[[str, Any], Any]
    help: str
    flag: str | None = None        # command-line flag; None = Python API only
    metavar: str | None = None
    group: str = "server"
    repeat: bool = False           # the flag may be given several times
    switch: bool = False           # the flag takes no value: giving it sets `not default`

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    # where and how much
    Option("bind", ("tcp", "127.0.0.1", 8000), _binds,
           "Address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. Repeat for several. "
           "Default 127.0.0.1:8000.", metavar="ADDR", repeat=True),
    Option("cores", 100, _int(1),
           "Async cores per worker: requests served at once, each in its own greenlet. When all are "
           "busy the worker stops accepting and reading until one frees. Default 100.", metavar="N"),
    Option("workers", 1, _int(1), "Worker processes forked by the master. Default 1.", metavar="M",
           group="process"),
    Option("backlog", 2048, _int(1), "Listen queue length. Default 2048.", metavar="N"),
    Option("loop", None, _loop,
           "Event loop: asyncio or uvloop. Default: $TGREEN_LOOP, else asyncio.", metavar="LOOP",
           group="process"),
    Option("certfile", None, _str_or_none, "TLS certificate (PEM) to serve HTTPS.", metavar="FILE"),
    Option("keyfile", None, _str_or_none, "TLS private key (PEM) for --certfile.", metavar="FILE"),
    # timeouts
    Option("keepalive_timeout", 5.0, _seconds,
           "Close a keep-alive connection idle this long between requests (0: never). Default 5.",
           flag="--keep-alive", metavar="SECONDS", group="timeouts"),
    Option("header_timeout", 10.0, _seconds,
           "Close a connection that takes longer to send a request's line and headers (0: never). "
           "Default 10.", metavar="SECONDS", group="timeouts"),
    Option("body_timeout", 30.0, _seconds,
           "Fail a request whose body stalls this long between reads, 408 (0: never). Default 30.",
           metavar="SECONDS", group="timeouts"),
    Option("write_timeout", 30.0, _seconds,
           "Abort a response the client does not read for this long, freeing its core (0: never). "
           "Default 30.", metavar="SECONDS", group="timeouts"),
    Option("timeout", 0.0, _seconds,
           "A request running longer gets tgreen.Timeout raised in its greenlet: its stack is logged, "
           "it is answered 504 if its response has not started (else its connection closes) and its "
           "core is freed. A worker whose loop makes no progress this long (a CPU loop, a blocking "
           "call) is killed and replaced by the master. 0: off (default).",
           metavar="SECONDS", group="timeouts"),
    Option("graceful_timeout", 30.0, _seconds,
           "On SIGTERM or stop(), wait this long for in-flight requests before closing them. "
           "Default 30.", metavar="SECONDS", group="timeouts"),
    # limits
    Option("limit_request_line", 4094, _int(0),
           "Longest request line in bytes, else 414 (0: unlimited). Default 4094.", metavar="BYTES",
           group="limits"),
    Option("limit_request_fields", 100, _int(0),
           "Most header fields in a request, else 431 (0: unlimited). Default 100.", metavar="N",
           group="limits"),
    Option("limit_request_field_size", 8190, _int(0),
           "Longest header line in bytes, else 431 (0: unlimited). Default 8190.",
           metavar="BYTES", group="limits"),
    Option("limit_request_body", 0, _int(0),
           "Largest request body in bytes, else 413 (0: unlimited). Default 0.", metavar="BYTES",
           group="limits"),
    Option("reload", False, _reload,
           "Development: restart the workers when a Python file under the app's directory (the "
           "current directory for a module) changes, the way SIGHUP does. Needs watchfiles: "
           "pip install 'tgreen[reload]'.", group="process", switch=True),
    Option("max_requests", 0, _int(0),
           "Restart a worker after it served this many requests (0: never). Default 0.",
           metavar="N", group="process"),
    Option("max_requests_jitter", 0, _int(0),
           "Add a random 0..N to --max-requests per worker so they do not restart together.",
           metavar="N", group="process"),
    # proxies and environ
    Option("forwarded_allow_ips", "127.0.0.1,::1", _ip_list,
           "Peers (comma-separated IPs/networks, or '*') whose X-Forwarded-For/-Proto headers are "
           "trusted for REMOTE_ADDR and wsgi.url_scheme. Unix-socket peers are always trusted. "
           "Default 127.0.0.1,::1.", metavar="IPS", group="proxy"),
    Option("root_path", "", _root_path, "SCRIPT_NAME for every request, e.g. /app when mounted "
           "below a prefix. Default empty.", metavar="PATH", group="proxy"),
    Option("underscore_headers", "drop", _choice("drop", "refuse", "allow"),
           "Request headers with '_' in their name would collide with '-' in the environ: drop them, "
           "refuse the request (400), or allow them. Default drop.", metavar="POLICY", group="proxy"),
    # logging
    Option("access_log", None, _str_or_none,
           "Write an access log (common log format plus the request time in ms) to FILE, or '-' "
           "for stderr. Off by default.", metavar="FILE", group="logging"),
    Option("access_log_format", None, _access_log_format,
           "Access log line: gunicorn's atoms, e.g. '%%(h)s %%(l)s %%(u)s %%(t)s \"%%(r)s\" %%(s)s %%(b)s "
           "\"%%(f)s\" \"%%(a)s\" %%(D)s' (also %%(m)s %%(U)s %%(q)s %%(H)s %%(B)s %%(T)s %%(M)s %%(L)s %%(p)s "
           "%%({header}i)s %%({header}o)s %%({variable}e)s), or 'json' for one JSON object per line. "
           "Default: common log format plus the request time in ms.", metavar="FORMAT",
           group="logging"),
    Option("metrics_bind", None, _metrics_bind,
           "Serve metrics on a separate listener at HOST:PORT (or unix:PATH): Prometheus text at "
           "/metrics, JSON at /stats, a live status page at /. Summed over all workers. Needs "
           "prometheus_client (pip install 'tgreen[metrics]'). Off by default.", metavar="ADDR",
           group="logging"),
    Option("log_level", "info", _choice("debug", "info", "warning", "error", "critical"),
           "Error log level: debug, info, warning, error, critical. Default info.", metavar="LEVEL",
           group="logging"),
    Option("block_warning_ms", 0, _int(0),
           "Blocking detector: log the stack of whatever holds a worker's loop longer than this "
           "many milliseconds (tgreen.monitor). 0: off (default).", metavar="MS", group="logging"),
    # the master's process (tgreen.serve, tgreen/_serve_setup.py)
    Option("patch", True, _bool,
           "Do not apply tgreen.monkey.patch_all() in the master before the app is imported "
           "(for apps that are green by construction). Unpatched, a blocking call holds the whole "
           "worker; one longer than a second is logged once per worker.",
           flag="--no-patch", switch=True, group="process"),
    Option("pid", None, _str_or_none, "Write the master's PID to FILE; removed at exit.",
           metavar="FILE", group="process"),
    Option("chdir", None, _str_or_none,
           "Change to DIR before anything else (the app and other relative paths are found "
           "from there).", metavar="DIR", group="process"),
    Option("user", None, _account("user"),
           "Run the workers as USER (name or uid), and as its primary group unless --group is "
           "given. The master keeps its own user (it binds and supervises, never runs the app).",
           metavar="USER", group="process"),
    Option("group", None, _account("group"), "Run the workers as GROUP (name or gid).",
           metavar="GROUP", group="process"),
    # where settings come from (tgreen/wsgi/_settings_sources.py)
    Option("config", None, _str_or_none,
           "Read settings from a TOML file: each key is a flag's name without '--' "
           "(workers = 2, keep-alive = 5, bind = [\"127.0.0.1:8000\"], no-patch = true) and "
           "app = \"MODULE_OR_FILE[:CALLABLE]\". Flags win over TGREEN_SERVE_<FLAG> environment "
           "variables, which win over the file.", metavar="FILE", group="config"),
)

_BY_NAME = {o.name: o for o in OPTIONS}


class Config:
    """Validated option values; attribute access by option name."""

    __slots__ = tuple(_BY_NAME)

    # One declaration per option, in OPTIONS' order, typed as its parser
    # returns: they exist for type checkers and readers (the values are set in
    # __init__). The check below this class keeps the names in step with
    # OPTIONS; tests/test_wsgi_config.py checks the types against the parsers.
    bind: tuple[BindSpec, ...]
    cores: int
    workers: int
    backlog: int
    loop: str | None
    certfile: str | None
    keyfile: str | None
    keepalive_timeout: float
    header_timeout: float
    body_timeout: float
    write_timeout: float
    timeout: float
    graceful_timeout: float
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    limit_request_body: int
    reload: bool
    max_requests: int
    max_requests_jitter: int
    forwarded_allow_ips: tuple[AllowedPeer, ...]
    root_path: str
    underscore_headers: str
    access_log: str | None
    access_log_format: str | None
    metrics_bind: BindSpec | None
    log_level: str
    block_warning_ms: int
    patch: bool
    pid: str | None
    chdir: str | None
    user: int | None
    group: int | None
    config: str | None

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(_BY_NAME)
        if unknown:
            raise TypeError(f"tgreen: unknown server option(s): {', '.join(sorted(unknown))}")
        for opt in OPTIONS:
            if opt.name in values:
                value = opt.parse(opt.name, values[opt.name])
            else:
                value = opt.parse(opt.name, opt.default)
            object.__setattr__(self, opt.name, value)
        if bool(self.certfile) != bool(self.keyfile):
            raise ConfigError("tgreen: certfile and keyfile go together")

    def replace(self, **values: Any) -> Config:
        merged = {o.name: getattr(self, o.name) for o in OPTIONS}
        merged.update(values)
        return Config(**merged)

    def __setattr__(self, name: str, value: Any) -> None:
        opt = _BY_NAME.get(name)
        if opt is None:
            raise AttributeError(name)
        object.__setattr__(self, name, opt.parse(name, value))

    def __repr__(self) -> str:
        fields = ", ".join(f"{o.name}={getattr(self, o.name)!r}" for o in OPTIONS)
        return f"Config({fields})"


# A new option without its declaration above (or a declaration left behind)
# fails at import, not at some later attribute access.
if list(Config.__annotations__) != list(_BY_NAME):
    raise RuntimeError("tgreen: Config's declarations and OPTIONS disagree: "
                       f"{sorted(set(Config.__annotations__) ^ set(_BY_NAME))} (or their order)")
