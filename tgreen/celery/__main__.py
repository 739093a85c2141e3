"""``python -m tgreen.celery [celery arguments]``: Celery's own command line,
patched first, with ``worker`` running ``tgreen.celery.TaskPool``. ::

    python -m tgreen.celery -A proj worker -c 200 --loglevel INFO

Importing ``tgreen.celery`` (which runs before this module) has patched the
standard library; Celery is imported only here, after the pool is chosen
through Celery's own settings: ``CELERY_CUSTOM_WORKER_POOL`` (read when
``celery.concurrency`` is imported) names this pool as ``custom``, and
``CELERY_WORKER_POOL`` (the ``worker`` command's ``--pool`` through click's
environment prefix) selects it. ``-P``/``--pool`` on the command line would
override that, so it is refused: this command exists to run this pool.
"""

from __future__ import annotations

import os
import sys

POOL = "tgreen.celery:TaskPool"
_PROG = "python -m tgreen.celery"


def _names_pool(arg: str) -> bool:
    return arg == "-P" or (arg.startswith("-P") and not arg.startswith("--")) or \
        arg == "--pool" or arg.startswith("--pool=")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for arg in argv:
        if arg == "--":
            break
        if _names_pool(arg):
            flag = "--pool" if arg.startswith("--") else "-P"
            print(f"{_PROG}: error: {flag}: this command always runs tgreen's pool; drop {flag} "
                  f"(another pool: plain `celery worker`)", file=sys.stderr)
            return 2
    os.environ["CELERY_CUSTOM_WORKER_POOL"] = POOL
    os.environ["CELERY_WORKER_POOL"] = "custom"
    sys.argv = ["celery", *argv]
    from celery.bin.celery import main as celery_main

    return celery_main()


if __name__ == "__main__":
    sys.exit(main())
