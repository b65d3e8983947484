"""The folder-load benchmark run as a user runs it, on 200 images, so that it cannot rot.
No test asserts a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracking.host import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(cwd: Path, folder: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.folder_load", "--images", "200", "--dir", str(folder)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    return result.stdout


def test_folder_load_benchmark_decodes_once_then_reads_the_cache(tmp_path):
    cwd, folder = tmp_path / "cwd", tmp_path / "bench"
    cwd.mkdir()
    out = run(cwd, folder)
    assert out.startswith(f"host: {cpu_model()}, ") and "(written in " in out
    assert "decoding 200 images" in out and out.count("decoded images of") == 1
    for which in ("first", "second"):
        (line,) = [row for row in out.splitlines() if row.startswith(f"  {which} load: ")]
        assert float(line.split()[2]) > 0 and "for 200 images" in line, line
    assert "target for 60,000 images <= 2 s: " in out
    (cache,) = (folder / "data" / "folders").glob("images-200-*.pt")
    again = run(cwd, folder)  # the images reused, the cache rebuilt
    assert "(reused)" in again and "decoding 200 images" in again
