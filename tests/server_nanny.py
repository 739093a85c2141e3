"""Run one server detached from the test process, and stop it when told or
when the test process dies.

Why: a server started with ``subprocess.Popen`` is a child of pytest for
the whole session, and tests that wait for *any* child (``os.waitpid(-1)``,
``os.wait()``) would wait for it. So ``servers.py`` runs this script, which
forks and exits at once (pytest reaps it immediately); the forked *nanny*,
now nobody's child in the test process, starts the server as its own child
and stays beside it:

* SIGTERM to the nanny: terminate the server (SIGKILL after 15 s), exit;
* the test process (``watch_pid``) disappears: the same, and remove the
  server's temp dir, so a killed or timed-out pytest run leaves nothing
  behind;
* the server exits on its own: the nanny exits too.

Usage (from servers.py)::

    python server_nanny.py WATCH_PID SPEC_JSON

``SPEC_JSON``: ``{"argv": [...], "log": PATH, "pidfile": PATH, "tmpdir": PATH,
"uid": N|null, "gid": N|null}``; the server inherits the nanny's environment
(never put it on a command line: ``ps`` shows command lines to everyone).
The nanny writes ``"NANNY_PID SERVER_PID"`` to ``pidfile`` once the server
has started (``"NANNY_PID -1 ERROR"`` if it could not).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def main() -> int:
    watch_pid = int(sys.argv[1])
    spec = json.loads(sys.argv[2])
    if os.fork():
        os._exit(0)  # the launcher: pytest reaps it right away
    os.setsid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in pytest's terminal: pytest decides
    extra = {}
    if spec.get("uid") is not None:
        extra = {"user": spec["uid"], "group": spec["gid"], "extra_groups": []}
    tmp = spec["pidfile"] + ".tmp"
    try:
        with open(spec["log"], "ab") as log:
            proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, **extra)
    except OSError as e:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()} -1 {e}")
        os.replace(tmp, spec["pidfile"])
        return 1
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {proc.pid}")
    os.replace(tmp, spec["pidfile"])
    orphaned = False
    while proc.poll() is None:
        orphaned = not alive(watch_pid)
        if stop or orphaned:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            break
        time.sleep(0.1)
    if orphaned or not alive(watch_pid):
        shutil.rmtree(spec["tmpdir"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
