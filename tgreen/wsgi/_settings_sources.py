"""Where ``tgreen-serve``'s settings come from, and which one wins. ::

    given = Sources(ns, os.environ)          # command line, environment, --config file
    app_spec, cfg = given.resolve()          # validated; ConfigError names what the user typed
    fds = systemd_listen_fds(os.environ)     # sockets passed by systemd, if any

Three sources, strongest first: command-line flags, ``TGREEN_SERVE_<FLAG>``
environment variables, the TOML file named by ``--config`` (or
``TGREEN_SERVE_CONFIG``); then the defaults of ``config.OPTIONS``. Each
source replaces a value, it never adds to it (``--bind`` on the command
line replaces every ``bind`` of the file).

Rules of this file:

1. The options are ``config.OPTIONS``; a source only maps its own spelling
   onto them: the file key is the flag without ``--`` (``keep-alive``,
   ``no-patch``; ``_`` and the option's Python name are accepted too), the
   environment variable is ``TGREEN_SERVE_`` + the flag in upper case with
   ``_`` for ``-`` (``TGREEN_SERVE_KEEP_ALIVE``). A flag without a value
   (``--no-patch``) is a boolean there: ``no-patch = true``,
   ``TGREEN_SERVE_NO_PATCH=1``.
2. Every value is validated by its option's own parser, called with the
   name the user typed (``--keep-alive``, ``TGREEN_SERVE_KEEP_ALIVE``,
   ``serve.toml: keep-alive``), so each error names it. A setting the file or
   the environment does not know is an error (with the closest name), not
   silently ignored.

Why TOML and not a Python file like gunicorn's: settings are data. A Python
config file runs arbitrary code in the master before ``patch_all()`` and
before any check, can import blocking libraries unpatched, and its errors are
tracebacks instead of one line naming the key. Hooks, the one thing code in
a config is for, belong to the app (``@tgreen.postfork``).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import OPTIONS, Config, ConfigError, Option

__all__ = ["ENV_PREFIX", "Sources", "env_name", "file_key", "systemd_listen_fds"]

ENV_PREFIX = "TGREEN_SERVE_"

#: ``app`` is the positional argument on the command line.
APP = "app"


def file_key(opt: Option) -> str:
    return opt.cli_flag[2:]


def env_name(opt: Option) -> str:
    return ENV_PREFIX + file_key(opt).upper().replace("-", "_")


@dataclass(frozen=True)
class Given:
    """One value as the user gave it, and how they named it."""
    label: str
    value: Any


def _switch_value(opt: Option, label: str, raw: Any, strict_bool: bool) -> Any:
    """A flag without a value: "given" (true) means the opposite of the default."""
    if strict_bool and not isinstance(raw, bool):
        raise ConfigError(f"tgreen: {label} must be true or false (got {raw!r})")
    given = opt.parse(label, raw)
    return (not opt.default) if given else opt.default


class Sources:
    """The settings given by the command line (an argparse namespace whose
    dests are option names, plus ``app``), the environment and the file."""

    def __init__(self, ns: Any, environ: Mapping[str, str]) -> None:
        self.flags = self._from_flags(ns)
        self.env = self._from_env(environ)
        path = self.flags.get("config") or self.env.get("config")
        self.file = self._from_file(path) if path is not None else {}

    # -- each source ---------------------------------------------------------------

    @staticmethod
    def _from_flags(ns: Any) -> dict[str, Given]:
        out: dict[str, Given] = {}
        app = getattr(ns, APP, None)
        if app is not None:
            out[APP] = Given("the app argument", app)
        for opt in OPTIONS:
            value = getattr(ns, opt.name, None)
            if value is not None:
                out[opt.name] = Given(opt.cli_flag, value)
        return out

    @staticmethod
    def _from_env(environ: Mapping[str, str]) -> dict[str, Given]:
        by_env = {env_name(o): o for o in OPTIONS}
        out: dict[str, Given] = {}
        for var, raw in environ.items():
            if not var.startswith(ENV_PREFIX):
                continue
            if var == ENV_PREFIX + "APP":
                out[APP] = Given(var, raw)
                continue
            opt = by_env.get(var)
            if opt is None:
                raise ConfigError(f"tgreen: {var} is not a tgreen-serve setting"
                                  f"{_did_you_mean(var, by_env)}")
            if opt.switch:
                out[opt.name] = Given(var, _switch_value(opt, var, raw, strict_bool=False))
            elif opt.repeat:
                out[opt.name] = Given(var, raw.replace(",", " ").split())
            else:
                out[opt.name] = Given(var, raw)
        return out

    @staticmethod
    def _from_file(given: Given) -> dict[str, Given]:
        path = str(given.value)
        data = _read_toml(given.label, path)
        shown = os.path.basename(path)
        keys: dict[str, Option] = {}
        for o in OPTIONS:
            for k in (file_key(o), o.name):
                keys[k.replace("_", "-")] = o
        out: dict[str, Given] = {}
        for key, raw in data.items():
            label = f"{shown}: {key}"
            if key == APP:
                if not isinstance(raw, str):
                    raise ConfigError(f"tgreen: {label} must be a string (got {raw!r})")
                out[APP] = Given(label, raw)
                continue
            opt = keys.get(key.replace("_", "-"))
            if opt is None:
                raise ConfigError(f"tgreen: {label}: not a tgreen-serve setting"
                                  f"{_did_you_mean(key, [file_key(o) for o in OPTIONS] + [APP])}")
            if opt.name == "config":
                raise ConfigError(f"tgreen: {label}: a config file cannot name another one")
            if opt.name in out:
                raise ConfigError(f"tgreen: {label}: given twice ({out[opt.name].label})")
            if opt.switch:
                out[opt.name] = Given(label, _switch_value(opt, label, raw, strict_bool=True))
            else:
                if isinstance(raw, dict):
                    raise ConfigError(f"tgreen: {label} must be a value, not a table")
                out[opt.name] = Given(label, raw)
        return out

    # -- resolving ---------------------------------------------------------------

    def chosen(self) -> dict[str, Given]:
        """The winning source for each setting given anywhere."""
        merged = dict(self.file)
        merged.update(self.env)
        merged.update(self.flags)
        return merged

    def label(self, name: str) -> str:
        """How the user named option ``name`` (its flag if they did not)."""
        given = self.chosen().get(name)
        if given is not None:
            return given.label
        return next(o.cli_flag for o in OPTIONS if o.name == name)

    def resolve(self) -> tuple[str | None, Config]:
        """The app spec (None if no source names it) and the validated Config."""
        chosen = self.chosen()
        values: dict[str, Any] = {}
        for opt in OPTIONS:
            given = chosen.get(opt.name)
            if given is not None:
                values[opt.name] = opt.parse(given.label, given.value)
        try:
            cfg = Config(**values)
        except ConfigError as e:
            raise ConfigError(self._relabel(str(e), chosen)) from None
        app = chosen.get(APP)
        return (None if app is None else str(app.value)), cfg

    @staticmethod
    def _relabel(message: str, chosen: dict[str, Given]) -> str:
        """A check across options (``Config``) names them by their Python
        names; say them as the user wrote them."""
        import re

        def label(m: re.Match) -> str:
            name = m.group(0)
            given = chosen.get(name)
            opt = next(o for o in OPTIONS if o.name == name)
            return given.label if given is not None else opt.cli_flag

        names = "|".join(sorted((re.escape(o.name) for o in OPTIONS), key=len, reverse=True))
        return re.sub(rf"(?<![\w-])(?:{names})(?![\w-])", label, message)


def _did_you_mean(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_toml(label: str, path: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"tgreen: {label} {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"tgreen: {label} {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"tgreen: {label} {path}: not valid TOML: {e}") from None


def systemd_listen_fds(environ: dict[str, str] | Any, pid: int | None = None) -> list[int]:
    """The listening sockets systemd passed to this process (socket
    activation: ``LISTEN_PID`` is us, ``LISTEN_FDS`` of them from fd 3),
    or []. The variables are removed, as ``sd_listen_fds(1)`` does, so the
    app's own child processes do not take the sockets for theirs."""
    pid = os.getpid() if pid is None else pid
    try:
        listen_pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if listen_pid != pid or count <= 0:
        return []
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(var, None)
    return list(range(3, 3 + count))
