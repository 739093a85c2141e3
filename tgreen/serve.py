"""``tgreen-serve``: the command line of the WSGI server (also ``python -m tgreen.serve``).

::

    tgreen-serve app.py                      # app.py's `application` (or `app`)
    tgreen-serve mypkg.wsgi:app --bind 0.0.0.0:8080 --bind unix:/run/app.sock \\
                 --cores 200 --workers 4 --access-log -

This module is only the command line: options come from
``tgreen.wsgi.config.OPTIONS`` (defined once, validated there), merged with
the environment and the ``--config`` file by ``tgreen.wsgi._settings_sources``;
the process setup (patching, pid file, user) from ``tgreen._serve_setup``, the
processes from ``tgreen.workers``, the server from ``tgreen.wsgi``.
A bad setting or app spec exits with status 2 and one line naming the setting
as the user typed it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import _serve_setup
from .wsgi.loader import AppLoadError, check_spec
from .wsgi._settings_sources import Sources, systemd_listen_fds
from .wsgi.config import OPTIONS, Config, ConfigError

__all__ = ["main", "build_parser", "config_from_args"]

_GROUPS = {
    "server": "server",
    "process": "processes",
    "timeouts": "timeouts (seconds)",
    "limits": "request limits",
    "proxy": "behind a proxy",
    "logging": "logging",
    "config": "configuration",
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
               "before its loop starts; tgreen.worker_id() is 1..M. Started by systemd socket "
               "activation (LISTEN_FDS), it serves the sockets systemd passes instead of --bind.",
    )
    parser.add_argument("app", metavar="MODULE_OR_FILE[:CALLABLE]", nargs="?", default=None,
                        help="the WSGI app: path/app.py, path/app.py:callable, package.module or "
                             "package.module:callable (default callable: application, then app); "
                             "or app = ... in the --config file, or TGREEN_SERVE_APP")
    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    for opt in OPTIONS:
        kwargs: dict[str, Any] = {"dest": opt.name, "metavar": opt.metavar, "help": opt.help,
                                  "default": None}
        if opt.repeat:
            kwargs["action"] = "append"
        if opt.switch:
            del kwargs["metavar"]
            kwargs.update(action="store_const", const=not opt.default)
        groups[opt.group].add_argument(opt.cli_flag, **kwargs)
    parser.add_argument("--version", action="version", version=f"tgreen-serve {_version()}")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def config_from_args(ns: argparse.Namespace) -> Config:
    """The Config of the command line alone (no environment, no file)."""
    values = {o.name: getattr(ns, o.name) for o in OPTIONS if getattr(ns, o.name, None) is not None}
    return Config(**values)


def _usage_error(e: Exception) -> int:
    msg = str(e)
    if msg.startswith("tgreen: "):
        msg = msg[len("tgreen: "):]
    sys.stderr.write(f"tgreen-serve: error: {msg}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        sources = Sources(ns, os.environ)
        app_spec, cfg = sources.resolve()
        label = sources.label
        _serve_setup.chdir(cfg, label)
        if app_spec is None:
            raise AppLoadError("no app given: tgreen-serve MODULE_OR_FILE[:CALLABLE] "
                               "(or app = ... in the --config file, or TGREEN_SERVE_APP)")
        check_spec(app_spec)
        _serve_setup.check_accounts(cfg, label)
        _serve_setup.check_tls(cfg, label)
    except (ConfigError, AppLoadError) as e:
        return _usage_error(e)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    fds = systemd_listen_fds(os.environ)
    if fds:
        if "bind" in sources.chosen():
            logging.getLogger("tgreen.serve").info(
                "tgreen-serve: socket activation: serving the %d socket(s) systemd passed; "
                "%s is ignored", len(fds), label("bind"))
        cfg = cfg.replace(bind=[("fd", fd) for fd in fds])
    # Before any worker imports the app (_serve_setup, rule 1).
    _serve_setup.patch(cfg)
    from .workers import Master

    try:
        with _serve_setup.pid_file(cfg, label):
            _serve_setup.drop_privileges_in_workers(cfg)
            _serve_setup.share_boot_reports()
            return Master(app_spec, cfg).run()
    except ConfigError as e:
        return _usage_error(e)


if __name__ == "__main__":
    sys.exit(main())
