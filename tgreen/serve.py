"""``tgreen-serve``: the command line of the WSGI server (also ``python -m tgreen.serve``).

::

    tgreen-serve app.py                      # app.py's `application` (or `app`)
    tgreen-serve mypkg.wsgi:app --bind 0.0.0.0:8080 --bind unix:/run/app.sock \\
                 --cores 200 --workers 4 --access-log -

This module is only the command line: options come from
``tgreen.wsgi.config.OPTIONS`` (defined once, validated there), the
processes from ``tgreen.workers``, the server from ``tgreen.wsgi``.
A bad option value exits with status 2 and one line saying why.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .wsgi._loader import AppLoadError, check_spec
from .wsgi.config import OPTIONS, Config, ConfigError

__all__ = ["main", "build_parser", "config_from_args"]

_GROUPS = {
    "server": "server",
    "process": "processes",
    "timeouts": "timeouts (seconds)",
    "limits": "request limits",
    "proxy": "behind a proxy",
    "logging": "logging",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"tgreen-serve: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tgreen-serve",
        description="Serve a WSGI application with tgreen: N green cores per worker process "
                    "on an asyncio/uvloop loop, pre-forked workers, graceful restarts.",
        epilog="Signals to the master: TERM graceful stop, INT/QUIT fast stop, HUP reload the "
               "app in fresh workers. Inside the app: @tgreen.postfork hooks run in each worker "
               "before its loop starts; tgreen.worker_id() is 1..M.",
    )
    parser.add_argument("app", metavar="MODULE_OR_FILE[:CALLABLE]",
                        help="the WSGI app: path/app.py, path/app.py:callable, package.module or "
                             "package.module:callable (default callable: application, then app)")
    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    for opt in OPTIONS:
        kwargs: dict[str, Any] = {"dest": opt.name, "metavar": opt.metavar, "help": opt.help,
                                  "default": None}
        if opt.repeat:
            kwargs["action"] = "append"
        groups[opt.group].add_argument(opt.cli_flag, **kwargs)
    parser.add_argument("--version", action="version", version=f"tgreen-serve {_version()}")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def config_from_args(ns: argparse.Namespace) -> Config:
    values = {o.name: getattr(ns, o.name) for o in OPTIONS if getattr(ns, o.name) is not None}
    return Config(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        cfg = config_from_args(ns)
        check_spec(ns.app)
    except (ConfigError, AppLoadError) as e:
        msg = str(e)
        if msg.startswith("tgreen: "):
            msg = msg[len("tgreen: "):]
        sys.stderr.write(f"tgreen-serve: error: {msg}\n")
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    from .workers import Master

    return Master(ns.app, cfg).run()


if __name__ == "__main__":
    sys.exit(main())
