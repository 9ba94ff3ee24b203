"""A simulated Colab: run a `colab/` notebook in a fresh Jupyter kernel with a stand-in `google.colab` package.

The stand-in has what the notebooks use and nothing more: `drive.mount(mountpoint)` links `mountpoint` to a
folder that plays Google Drive (it outlives the kernel, as Drive outlives a runtime), and `userdata.get(name)`
reads the secret from the environment (`COLAB_SIM_SECRET_<name>`) or raises `SecretNotFoundError`; like
Colab's, the module has no `list`. The kernel imports `google.colab` before the first cell, as Colab's does.

`run_notebook(..., kill_when=f)` sends SIGKILL to the kernel process (no exception, no clean-up: a lost
runtime) as soon as `f()` is true while a cell runs.
"""
import json, os, queue, signal, sys, textwrap, time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

STANDIN = {
    'google/colab/__init__.py': 'from . import drive, userdata\n',
    'google/colab/drive.py': textwrap.dedent('''
        import os
        from pathlib import Path
        def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
            "Link `mountpoint` to the simulated Drive (COLAB_SIM_DRIVE)."
            drive, mp = Path(os.environ['COLAB_SIM_DRIVE']), Path(mountpoint)
            (drive/'MyDrive').mkdir(parents=True, exist_ok=True)
            mp.parent.mkdir(parents=True, exist_ok=True)
            if not mp.exists(): mp.symlink_to(drive, target_is_directory=True)
            print(f'Mounted at {mountpoint}')
        '''),
    'google/colab/userdata.py': textwrap.dedent('''
        import os
        class SecretNotFoundError(Exception): pass
        def get(key):
            "A secret from COLAB_SIM_SECRET_<key> (Colab: the key panel)."
            value = os.environ.get('COLAB_SIM_SECRET_' + key)
            if value is None: raise SecretNotFoundError(f'Secret {key} does not exist.')
            return value
        '''),
}


class KernelKilled(Exception): pass


class CellError(Exception): pass


def colab_env(tmp: Path, drive: Path, secrets: dict | None = None) -> dict:
    "The environment of a simulated Colab runtime whose Drive is the folder `drive`."
    pkg = tmp / 'colab_standin'
    for rel, src in STANDIN.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('RESTORE_NB_HOME', 'KAGGLE_', 'COLAB_SIM_'))}
    env.update(PYTHONPATH=os.pathsep.join([str(pkg), env.get('PYTHONPATH', '')]).rstrip(os.pathsep),
               COLAB_SIM_DRIVE=str(drive), RESTORE_NB_DRIVE_MOUNT=str(tmp / 'content' / 'drive'),
               KAGGLE_CONFIG_DIR=str(tmp / 'no_kaggle'), RESTORE_NB_QUICK='1', MPLBACKEND='Agg',
               WANDB_MODE='disabled', XDG_CACHE_HOME=str(tmp / 'cache'))
    env.update({f'COLAB_SIM_SECRET_{k}': v for k, v in (secrets or {}).items()})
    return env


def _execute(kc, code: str, timeout: float, kill_when, kill):
    "Run one cell; returns its text output; raises CellError on an exception, KernelKilled once `kill` ran."
    msg_id = kc.execute(code, store_history=False)
    out, deadline = [], time.monotonic() + timeout
    while True:
        if kill_when is not None and kill_when():
            kill()
            raise KernelKilled(code[:80])
        if time.monotonic() > deadline: raise TimeoutError(f'cell did not finish in {timeout} s:\n{code[:300]}')
        try: msg = kc.get_iopub_msg(timeout=0.05)
        except queue.Empty: continue
        if msg['parent_header'].get('msg_id') != msg_id: continue
        t, c = msg['msg_type'], msg['content']
        if t == 'stream': out.append(c['text'])
        elif t in ('execute_result', 'display_data'): out.append(c['data'].get('text/plain', ''))
        elif t == 'error':
            raise CellError(f"{c['ename']}: {c['evalue']}\nin cell:\n{code}\noutput:\n{''.join(out)[-3000:]}")
        elif t == 'status' and c['execution_state'] == 'idle': return ''.join(out)


def run_notebook(nb: Path, env: dict, cwd: Path, kill_when=None, timeout: float = 600) -> list[str]:
    "Execute every code cell of `nb` in a new kernel (after `import google.colab`); the outputs, one per cell."
    km, kc = start_new_kernel(kernel_name='python3', env=env, cwd=str(cwd))
    killed = False
    def kill():
        nonlocal killed
        os.kill(km.provisioner.process.pid, signal.SIGKILL)
        killed = True
    try:
        _execute(kc, 'import google.colab', 60, None, None)
        outs = []
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] != 'code': continue
            src = ''.join(cell['source'])
            outs.append(_execute(kc, src, timeout, kill_when, kill))
        return outs
    finally:
        kc.stop_channels()
        if killed:
            try: km.provisioner.process.wait(timeout=10)
            except Exception: pass
            km.cleanup_resources()
        else: km.shutdown_kernel(now=True)


def first_checkpoint(runs: Path):
    "A kill condition: some run under `runs` has written its first checkpoint and is not finished."
    def cond():
        for last in runs.glob('*/checkpoints/last.json'):
            try:
                rec = json.loads((last.parent.parent / 'run.json').read_text())
            except (OSError, ValueError): continue
            if rec.get('status') == 'running': return True
        return False
    return cond


if __name__ == '__main__':       # python tests/colab_sim.py colab/01_train_deblur.ipynb DRIVE_DIR
    import tempfile
    tmp = Path(tempfile.mkdtemp())
    for o in run_notebook(Path(sys.argv[1]), colab_env(tmp, Path(sys.argv[2])), tmp): print(o)
