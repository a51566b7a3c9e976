"""Every script in benchmarks/ starts as the README runs it (``python benchmarks/<script>.py``, from any folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_runs_its_help_from_another_folder(script, tmp_path):
    """``bench_peer.py`` imported ``benchmarks.bench_train``, which exists only when the repository root is on the
    path, so the command its docstring and the README give failed with ModuleNotFoundError."""
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_bench_peer_summary_takes_medians_and_the_ceiling_from_our_matrix_products():
    sys.path.insert(0, str(SCRIPTS[0].parent))
    try:
        from bench_peer import summarise
    finally:
        sys.path.pop(0)
    ours = {"implementation": "ours", "batch": 128, "gemm_gflops": 100.0}
    rows = [
        {"implementation": "peer", "images_per_s": 4000.0},
        {**ours, "images_per_s": 8000.0, "floor_ms_per_update": 10.0},
        {"implementation": "peer", "images_per_s": 2000.0},
        {**ours, "images_per_s": 6000.0, "floor_ms_per_update": 8.0},
        {"implementation": "peer", "images_per_s": 5000.0},
        {**ours, "images_per_s": 9000.0, "floor_ms_per_update": 12.8},
    ]
    summary = summarise(rows, threads=1, peak=110.0)
    assert summary["peer_images_per_s"] == 4000.0 and summary["ours_images_per_s"] == 8000.0
    assert summary["ratio_ours_over_peer"] == 2.0
    assert summary["ratio_per_repeat"] == [2.0, 3.0, 1.8]  # pairs in order: ours / the peer just before
    assert summary["floor_images_per_s"] == 12800.0  # 128 images per 10 ms, the median of 12.8k, 16k and 10k
    assert summary["ratio_ceiling"] == 3.2
