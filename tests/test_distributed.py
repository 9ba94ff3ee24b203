"""Data-parallel training with two CPU processes on the gloo backend (torchrun), as on a multi-GPU machine."""
import re, sys
import pytest
from conftest import run

SCRIPT = r"""
import os, sys
import torch
from restore_nb.core import set_seed
from restore_nb.tasks.deblur import deblur_dataloaders, deblur_learner
from restore_nb.train import fit_run, to_distributed, teardown_distributed
set_seed(0)
dls = deblur_dataloaders(size=32, bs=4, n_train=32, n_valid=8, kernel_size=9, device='cpu')
learn = to_distributed(deblur_learner(dls, 'unrolled', layers=2, prior_width=4))
n = {'batches': 0}
from fastai.callback.core import Callback
class Count(Callback):
    def after_batch(self):
        if self.training: n['batches'] += 1
learn.add_cb(Count())
with learn.no_bar(), learn.no_logging(): rec = fit_run(learn, sys.argv[1], epochs=2)
s = sum(float(p.detach().double().sum()) for p in learn.model.parameters())
print(f"RANK {os.environ['RANK']} WORLD {os.environ['WORLD_SIZE']} BATCHES {n['batches']} SUM {s!r}", flush=True)
teardown_distributed()
"""


@pytest.mark.slow   # 30 s; two torchrun processes
def test_two_process_gloo_training_keeps_replicas_identical(tmp_path):
    script = tmp_path / 'ddp.py'
    script.write_text(SCRIPT)
    r = run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533', script,
             tmp_path / 'run'],
            env={'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = re.findall(r'RANK (\d) WORLD (\d) BATCHES (\d+) SUM (\S+)', r.stdout)
    assert len(rows) == 2 and {w for _, w, _, _ in rows} == {'2'}
    assert rows[0][3] == rows[1][3]                                 # identical weights on both ranks
    # 32 items / bs 4 = 8 batches per epoch, half per rank, 2 epochs
    assert all(int(b) == 2 * 4 for _, _, b, _ in rows)
    assert (tmp_path / 'run' / 'model.safetensors').exists()        # rank 0 wrote the run
