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
