"""Finding the WSGI callable named on the command line.

Spec forms: ``path/app.py``, ``path/app.py:callable``, ``package.module``,
``package.module:callable``; the callable may be a dotted attribute path or
a factory called without arguments (``create_app()``). Without a callable
name, ``application`` then ``app`` is used. ::

    app = load_app("examples/wsgi_hello.py")
    app = load_app("myproject.wsgi:application")

``check_spec`` validates the form (and that a file exists) without
importing anything: the master process uses it so a typo fails at once with
one line, while the import itself happens in each worker after fork.
``load_error_report`` turns a failed load into what the user needs: one line,
then the traceback of *their* code only (tgreen's and importlib's frames
are noise to someone whose module raised).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["AppLoadError", "check_spec", "is_file_spec", "load_app", "load_error_report", "split_spec"]

DEFAULT_NAMES = ("application", "app")


class AppLoadError(Exception):
    """The app spec cannot be resolved; the message is one line."""


def split_spec(spec: str) -> tuple[str, str | None]:
    target, sep, name = spec.rpartition(":")
    if not sep or not name or "/" in name or name.endswith(".py"):
        return spec, None
    return target, name


def is_file_spec(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target


def check_spec(spec: str) -> None:
    """Refuse a malformed spec or a missing file, without importing."""
    if not spec or not spec.strip():
        raise AppLoadError("no app given: tgreen-serve MODULE_OR_FILE[:CALLABLE]")
    target, name = split_spec(spec)
    if name is not None:
        attr = name[:-2] if name.endswith("()") else name
        if not all(part.isidentifier() for part in attr.split(".")):
            raise AppLoadError(f"not a callable name: {name!r}")
    if is_file_spec(target):
        if not os.path.isfile(target):
            raise AppLoadError(f"no such file: {target}")
    elif not all(part.isidentifier() for part in target.split(".")):
        raise AppLoadError(f"not a module name or a .py file: {target!r}")


def _import(target: str) -> Any:
    if is_file_spec(target):
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise AppLoadError(f"no such file: {target}")
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        modname = os.path.splitext(os.path.basename(path))[0]
        if not modname.isidentifier():
            modname = "tgreen_app"
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise AppLoadError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and target.startswith(e.name):
            raise AppLoadError(f"cannot import {target!r}: {e}") from e
        raise


def load_app(spec: str) -> Callable:
    """Import the module and return the WSGI callable (see the module doc)."""
    check_spec(spec)
    target, name = split_spec(spec)
    module = _import(target)
    if name is None:
        for candidate in DEFAULT_NAMES:
            obj = getattr(module, candidate, None)
            if obj is not None:
                break
        else:
            raise AppLoadError(f"{target} defines neither 'application' nor 'app'; "
                               f"name the callable: {target}:NAME")
    else:
        call = name.endswith("()")
        obj = module
        for part in (name[:-2] if call else name).split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise AppLoadError(f"{target} has no attribute {name!r}") from None
        if call:
            obj = obj()
    if not callable(obj):
        raise AppLoadError(f"{spec} is not callable (got {type(obj).__name__})")
    return obj


_TGREEN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_users_frame(filename: str) -> bool:
    if filename.startswith("<frozen importlib"):
        return False
    path = os.path.abspath(filename)
    return not (path == _TGREEN_DIR or path.startswith(_TGREEN_DIR + os.sep))


def load_error_report(spec: str, exc: BaseException, prog: str = "tgreen-serve") -> str:
    """``PROG: error: cannot load SPEC: ExcType: message`` and, if the user's
    own code is in the traceback, those frames (most recent call last)."""
    import traceback

    if isinstance(exc, AppLoadError):
        return f"{prog}: error: {exc}\n"
    only = traceback.format_exception_only(type(exc), exc)
    first = only[-1].strip()
    line = f"{prog}: error: cannot load {spec}: {first}\n"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_users_frame(f.filename)]
    if not frames and not isinstance(exc, SyntaxError):
        return line
    out = [line]
    if frames:
        out.append("Traceback (most recent call last):\n")
        out.extend(traceback.format_list(frames))
    out.extend(only)
    return "".join(out)
