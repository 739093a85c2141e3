#!/usr/bin/env python3
"""The yardstick table: tgreen's passed tests beside plain CPython's.

Usage: python tests/stdlib/yardstick.py --none NONE.json [NONE.json...] --lib LIB.json [LIB.json...]

Each JSON is a ``run_stdlib.py --json`` report; several of one kind are merged
(a later file wins for a module it also has). Prints a Markdown table per
module (passed by each, run, failed/errors/hung, excluded, what tgreen lost
against plain CPython) and the total with the ratio the target is stated in:
tgreen's passed tests as a share of what passes unpatched. A test counts as
lost when it passes unpatched and does not pass under the lib (failed,
errored, hung, skipped, excluded or not run). Exit status 1 when a module of
the lib report was aborted, hung or lost tests it never ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _merge(paths: list[str]) -> tuple[dict, dict]:
    modules: dict = {}
    meta: dict = {}
    for p in paths:
        rep = json.loads(Path(p).read_text())
        meta = rep.get("meta", meta)
        for name, res in rep["modules"].items():
            if "run" in res:
                modules[name] = res
    return modules, meta


def _not_passed(res: dict) -> set[str]:
    ids: set[str] = set()
    for key in ("failed_ids", "error_ids", "skipped_ids", "not_run_ids", "excluded_ids"):
        ids.update(res.get(key, {}))
    return ids


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--none", nargs="+", required=True, metavar="JSON")
    ap.add_argument("--lib", nargs="+", required=True, metavar="JSON")
    args = ap.parse_args(argv)
    none, _ = _merge(args.none)
    lib, meta = _merge(args.lib)
    rows = ["| module | tgreen passed | none passed | run | failed / errors / hung | excluded | lost |",
            "|---|---:|---:|---:|---|---:|---|"]
    tot_lib = tot_none = tot_lost = 0
    bad = 0
    sys.path.insert(0, str(Path(__file__).parent))
    from run_stdlib import ALL_MODULES
    order = {m: i for i, m in enumerate(ALL_MODULES)}
    for name, res in sorted(lib.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        base = none.get(name)
        if res.get("status") == "module skipped":
            rows.append(f"| {name} | - | - | - | not in Python {meta.get('python')} | - | - |")
            continue
        if base is None:
            rows.append(f"| {name} | {res['passed']} | (no run) | {res['run']} | "
                        f"{res['failed']} / {res['errors']} / {res['hung']} | {res['excluded']} | ? |")
            continue
        # Passed unpatched = collected there and not in any not-passed list.
        base_ids = set(base.get("failed_ids", {})) | _not_passed(base)
        lib_bad = _not_passed(res)
        lost = sorted(i for i in lib_bad if i not in base_ids)
        tot_lib += res["passed"]
        tot_none += base["passed"]
        tot_lost += len(lost)
        if res.get("status") != "ok" or res.get("not_run") or res.get("hung"):
            bad += 1
        short = ", ".join(i.split(".", 2)[2] for i in lost[:6]) + (" ..." if len(lost) > 6 else "")
        rows.append(f"| {name} | {res['passed']} | {base['passed']} | {res['run']} | "
                    f"{res['failed']} / {res['errors']} / {res['hung']} | {res['excluded']} | "
                    f"{len(lost)}{': ' + short if lost else ''} |")
    share = 100.0 * (tot_none - tot_lost) / tot_none if tot_none else 0.0
    rows.append(f"| **total** | **{tot_lib}** | **{tot_none}** | | | | **{tot_lost}** |")
    print("\n".join(rows))
    print(f"\nPython {meta.get('python')}: tgreen passes {tot_none - tot_lost} of the {tot_none} "
          f"tests that pass unpatched ({share:.2f}%); {tot_lost} lost.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
