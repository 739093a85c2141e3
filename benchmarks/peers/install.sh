#!/usr/bin/env bash
# Installs the peer WSGI servers that benchmarks/server/bench.py measures into
# one benchmark venv of their own ($PEERS_VENV, default /tmp/tgreen-peers-venv),
# from the package registries only: Debian (libev-dev for bjoern, a C
# toolchain and Python headers for the builds) and PyPI.
#
#     bash benchmarks/peers/install.sh              # as root (apt-get), idempotent
#     PEERS_PYTHON=python3.11 PEERS_VENV=/tmp/pv bash benchmarks/peers/install.sh
#
# What goes in, and why it is built the way it is:
#   bjoern        C on libev: needs libev-dev to build.
#   granian       Rust, prebuilt wheel.
#   meinheld      1.0.2 (2020, the last release) does not build against greenlet 3:
#                 its source carries a copy of greenlet 0.4's greenlet.h. We build it
#                 from its sdist with greenlet 3's greenlet.h copied over that one, and
#                 without EPOLLEXCLUSIVE in picoev_epoll.c (it adds every fd with the
#                 flag, and epoll_ctl(2) refuses EPOLL_CTL_MOD on such an fd with
#                 EINVAL, which picoev's re-arm then asserts on), and
#                 install it with --no-deps (its metadata pins greenlet<0.5).
#   uwsgi         built from source with the tornado and greenlet plugins embedded, so
#                 the same binary runs the seed (--tornado N --greenlet) and the plain
#                 threaded server (--http11-socket --threads N).
#   gunicorn + gunicorn_h1c + gevent
#                 gunicorn with its C (picohttpparser) request parser, gevent worker.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_VENV="${PEERS_VENV:-/tmp/tgreen-peers-venv}"
PY="${PEERS_PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v pyenv >/dev/null && [ -x "$(pyenv root)/versions/3.11.7/bin/python" ]; then
        PY="$(pyenv root)/versions/3.11.7/bin/python"
    else
        PY=python3
    fi
fi

need_deb=()
for pkg in libev-dev build-essential; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_deb+=("$pkg")
done
if [ "${#need_deb[@]}" -gt 0 ]; then
    echo "apt-get install ${need_deb[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_deb[@]}"
fi

[ -x "$PEERS_VENV/bin/python" ] || "$PY" -m venv "$PEERS_VENV"
VPY="$PEERS_VENV/bin/python"
PIP=("$VPY" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel
"${PIP[@]}" "greenlet>=3" tornado bjoern granian gevent "gunicorn>=25" gunicorn_h1c

PYVER="$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
# greenlet installs greenlet.h under the venv's include/site/pythonX.Y/greenlet/
GREENLET_H="$(find "$PEERS_VENV/include" -name greenlet.h | head -1)"
[ -n "$GREENLET_H" ] || { echo "install.sh: greenlet.h not found under $PEERS_VENV/include" >&2; exit 1; }

if ! "$VPY" -c 'import meinheld.server' 2>/dev/null; then
    work="$(mktemp -d)"
    "$VPY" -m pip download -q --no-deps --no-binary :all: -d "$work" meinheld==1.0.2
    tar -xzf "$work"/meinheld-1.0.2.tar.gz -C "$work"
    src="$work/meinheld-1.0.2"
    cp "$GREENLET_H" "$src/meinheld/server/greenlet.h"
    sed -i '/ev\.events |= EPOLLEXCLUSIVE;/d' "$src/meinheld/server/picoev_epoll.c"
    if grep -q 'events |= EPOLLEXCLUSIVE' "$src/meinheld/server/picoev_epoll.c"; then
        echo "install.sh: could not drop EPOLLEXCLUSIVE from picoev_epoll.c" >&2; exit 1
    fi
    "${PIP[@]}" --no-deps --no-build-isolation "$src"
    rm -rf "$work"
fi

if ! "$PEERS_VENV/bin/uwsgi" --version >/dev/null 2>&1; then
    CFLAGS="-I$(dirname "$(dirname "$GREENLET_H")")" UWSGI_EMBED_PLUGINS=tornado,greenlet \
        "${PIP[@]}" --no-binary uwsgi --no-cache-dir --no-build-isolation uwsgi
fi

# Smoke: every peer imports (uwsgi: runs).
"$VPY" - <<'PY'
import bjoern, granian, meinheld.server, gunicorn, gunicorn_h1c, gevent, greenlet, tornado  # noqa
import importlib.metadata as m
print("peers venv ok:", ", ".join(f"{p} {m.version(p)}" for p in
      ("bjoern", "granian", "meinheld", "gunicorn", "gunicorn_h1c", "gevent", "greenlet", "tornado", "uWSGI")))
PY
"$PEERS_VENV/bin/uwsgi" --version >/dev/null
