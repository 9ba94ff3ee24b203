"""Shared test set-up: headless plotting, slow tests opt-in (RESTORE_NB_SLOW=1, i.e. `make test-slow`)."""
import os, sys, subprocess
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('WANDB_MODE', 'disabled')
ROOT = Path(__file__).resolve().parents[1]
SLOW = os.environ.get('RESTORE_NB_SLOW', '') not in ('', '0')
BIN = Path(sys.executable).parent   # the venv running the tests: its console scripts live here


def pytest_collection_modifyitems(config, items):
    if SLOW: return
    skip = pytest.mark.skip(reason='slow: run with `make test-slow` (RESTORE_NB_SLOW=1)')
    for it in items:
        if 'slow' in it.keywords: it.add_marker(skip)


def run(cmd, cwd=ROOT, env=None, timeout=900):
    "Run a command, returning CompletedProcess with text output."
    e = dict(os.environ, **(env or {}))
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
