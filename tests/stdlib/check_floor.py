#!/usr/bin/env python3
"""Fail if a stdlib compatibility run passes fewer tests than recorded.

Usage: python tests/stdlib/check_floor.py REPORT.json [FLOOR.json]

FLOOR.json (default: tests/stdlib/floor_tgreen.json) maps module -> the
number of tests that passed when the floor was last raised. A lower count
is a regression; a higher one is printed so the floor can be raised.
"""

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    report = json.loads(Path(argv[0]).read_text())["modules"]
    floor_path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("floor_tgreen.json")
    floor = json.loads(floor_path.read_text())
    bad = 0
    for module, res in report.items():
        want = floor.get(module)
        got = res.get("passed", 0)
        if want is None:
            print(f"{module}: {got} passed (no floor recorded)")
        elif got < want:
            print(f"{module}: REGRESSION: {got} passed, floor is {want}; failing: "
                  f"{sorted(res.get('failed_ids', {})) + sorted(res.get('error_ids', {}))}")
            bad += 1
        else:
            note = " (raise the floor)" if got > want else ""
            print(f"{module}: {got} passed, floor {want}{note}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
