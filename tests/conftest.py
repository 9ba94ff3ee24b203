"""Shared test set-up: headless plotting, threads shared between xdist workers, slow tests opt-in (`make test-slow`)."""
import os, sys, subprocess
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('WANDB_MODE', 'disabled')
ROOT = Path(__file__).resolve().parents[1]
SLOW = os.environ.get('RESTORE_NB_SLOW', '') not in ('', '0')
BIN = Path(sys.executable).parent   # the venv running the tests: its console scripts live here
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))   # `make test` runs pytest-xdist, one worker per core
if WORKERS > 1:   # share the cores: each worker, and the notebooks and commands it starts, gets its slice of threads
    threads = str(max(1, (os.cpu_count() or 1) // WORKERS))
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ.setdefault(var, threads)


def pytest_collection_modifyitems(config, items):
    if SLOW: return
    skip = pytest.mark.skip(reason='slow: run with `make test-slow` (RESTORE_NB_SLOW=1)')
    for it in items:
        if 'slow' in it.keywords: it.add_marker(skip)


def run(cmd, cwd=ROOT, env=None, timeout=900):
    "Run a command, returning CompletedProcess with text output."
    e = dict(os.environ, **(env or {}))
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
