"""The examples run as they are documented (with shorter waits)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, args, expect", [
    ("fetch_urls.py", ["100"], "fetched 100 URLs"),
    ("tornado_fetch.py", [], "20 fetches"),
    ("chained_wait.py", ["0.5"], "100 chains"),
])
def test_example_runs(script, args, expect):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout
    if script == "fetch_urls.py":
        elapsed = float(out.stdout.split(" in ")[1].split()[0])
        assert elapsed < 5  # 100 x 0.1 s sequentially would be 10 s
