"""restore_nb.train with the deblurring Learner: it learns; callbacks, checkpoints, resume, budgets work."""
import torch
from restore_nb.core import set_seed
from restore_nb.metrics import psnr
from restore_nb.physics import Blur
from restore_nb.tasks.deblur import deblur_dataloaders, deblur_learner, BlindDeblurLoss
from restore_nb.train import history, fit_run


def _dls():
    return deblur_dataloaders(size=40, bs=8, n_train=48, n_valid=16, kernel_size=11, device='cpu', seed=0)


def test_unrolled_learner_beats_the_blurred_input():
    set_seed(0)
    dls = _dls()
    learn = deblur_learner(dls, 'unrolled', layers=3, prior_width=8)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-3)
    ys, ks, xs = zip(*[b for b in dls.valid])
    y, k, x = torch.cat(ys), torch.cat(ks), torch.cat(xs)
    with torch.no_grad(): pred = learn.model.eval()(y, Blur(k))
    assert float(psnr(pred.clamp(0, 1), x)) > float(psnr(y.clamp(0, 1), x)) + 1.0
    h = history(learn)
    assert len(h) == 2 and set(h[0]) == {'train_loss', 'valid_loss', 'psnr_metric', 'ssim_metric'}


def test_kernel_curriculum_decays_linearly():
    set_seed(0)
    dls = _dls()
    learn = deblur_learner(dls, 'blind', layers=1, prior_width=4, kernel_weight=(2.0, 0.0))
    seen = []
    orig = BlindDeblurLoss.forward
    def spy(self, pred, targ):
        if self.training_flag: seen.append((learn.pct_train, self.kernel_weight))
        return orig(self, pred, targ)
    BlindDeblurLoss.forward = spy
    BlindDeblurLoss.training_flag = property(lambda self: learn.training)
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-4)
    finally:
        BlindDeblurLoss.forward = orig
        del BlindDeblurLoss.training_flag
    assert seen and all(abs(w - 2.0 * (1 - p)) < 1e-9 for p, w in seen)
    assert learn.loss_func.k_true.shape == (8, 11, 11) and learn.loss_func.k_est.shape == (8, 11, 11)


class FakeClock:
    "A clock that advances `step` seconds at every reading: a time budget that does not depend on the machine."
    def __init__(self, step): self.t, self.step = 0.0, step
    def __call__(self):
        self.t += self.step
        return self.t


def test_a_time_budget_follows_the_injected_clock(tmp_path):
    ("The one-cycle schedule spans exactly the budget of the run's clock: training stops on time and the LR has "
     "annealed.")
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    clock = FakeClock(0.1)
    rec = fit_run(learn, tmp_path / 'r', minutes=0.05, lr=1e-3, quiet=True, clock=clock)   # a 3-second budget
    n = rec['epochs']
    assert 3.0 <= clock.t < 3.0 + 3.0, clock.t          # budget + at most one batch, one validation and the checkpoints
    assert n >= 2 and len(learn.recorder.values) == n and rec['status'] == 'finished'
    # the cut epoch too
    assert all(set(h) == {'train_loss', 'valid_loss', 'psnr_metric', 'ssim_metric'} for h in history(learn))
    lrs = learn.recorder.lrs
    assert max(lrs) > 0.99e-3 and lrs[-1] < max(lrs) / 20   # warmed up to the max, annealed by the end
    assert any(not torch.equal(before[k], v) for k, v in learn.model.state_dict().items())


# --- checkpoints, resume, NaN guard: the reliability the issue asks to demonstrate ---------------------
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
from restore_nb.train import (load_checkpoint, load_train_state, checkpoint_dir, CheckpointError, runs_table, next_run)
from restore_nb.data import make_dataloaders
from conftest import ROOT

KILL_SCRIPT = r"""
import sys, time
from restore_nb.core import set_seed
from restore_nb.tasks.deblur import deblur_dataloaders, deblur_learner
from restore_nb.train import fit_run, Checkpoint
slow = {'on': False}
orig = Checkpoint._before_rename
def hook(self, tmp):                      # the second checkpoint pauses half-written: weights there, not yet renamed
    if self.epoch == 1:
        print('WRITING', tmp, flush=True); time.sleep(60)
Checkpoint._before_rename = hook
set_seed(0)
dls = deblur_dataloaders(size=32, bs=8, n_train=16, n_valid=8, kernel_size=9, device='cpu')
learn = deblur_learner(dls, 'unrolled', layers=1, prior_width=4)
with learn.no_bar(), learn.no_logging(): fit_run(learn, sys.argv[1], epochs=3)
"""


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = ''
    t0 = time.time()
    while 'WRITING' not in line and time.time() - t0 < 120: line = p.stdout.readline()
    assert 'WRITING' in line, 'the training process never reached the second checkpoint'
    tmp = Path(line.split()[1])
    assert (tmp / 'model.safetensors').exists() and (tmp / 'train_state.pt').exists()   # mid-write
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # the pointer still names epoch 0's complete checkpoint, which loads
    state = load_train_state(run_dir)
    assert state['epoch'] == 0
    model = load_checkpoint(run_dir, 'last')
    assert model.config.layers == 1
    # and the run resumes from it, sweeping the half-written folder
    set_seed(0)
    learn = deblur_learner(deblur_dataloaders(size=32, bs=8, n_train=16, n_valid=8, kernel_size=9, device='cpu'),
                           'unrolled', layers=1, prior_width=4)
    with learn.no_bar(), learn.no_logging(): rec = fit_run(learn, run_dir, resume=True)
    assert rec['status'] == 'finished' and rec['epochs'] == 3
    assert not tmp.exists() and load_train_state(run_dir)['epoch'] == 2


def test_resume_equals_uninterrupted_without_ema_and_with_clipping(tmp_path):
    from fastai.callback.core import Callback
    class Stop(Callback):
        order = 80
        def after_epoch(self):
            if self.epoch == 0: raise KeyboardInterrupt
    def make(seed, cbs=None):
        set_seed(seed)
        return deblur_learner(_dls(), 'unrolled', layers=2, prior_width=4, clip=0.5, cbs=cbs)
    a = make(0)
    with a.no_bar(), a.no_logging(): fit_run(a, tmp_path / 'a', epochs=2)
    b = make(0, Stop())
    with pytest.raises(KeyboardInterrupt):
        with b.no_bar(), b.no_logging(): fit_run(b, tmp_path / 'b', epochs=2)
    assert json.loads((tmp_path / 'b' / 'run.json').read_text())['status'] == 'interrupted'
    c = make(7)
    with c.no_bar(), c.no_logging(): rec = fit_run(c, tmp_path / 'b', resume=True)
    for (k, v), w in zip(a.model.state_dict().items(), c.model.state_dict().values()): assert torch.equal(v, w), k
    assert history(a) == history(c) and rec['epochs'] == 2


class _NaNAt(torch.utils.data.Dataset):
    def __init__(self, ds, bad, epoch): self.ds, self.bad, self.bad_epoch = ds, bad, epoch
    def __len__(self): return len(self.ds)
    def set_epoch(self, e):
        self.ds.set_epoch(e)
        self.epoch = e
    def __getitem__(self, i):
        y, k, x = self.ds[i]
        if i == self.bad and self.epoch == self.bad_epoch: y = torch.full_like(y, float('nan'))
        return y, k, x


def test_nan_batch_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path):
    set_seed(0)
    d = _dls()
    dls = make_dataloaders(_NaNAt(d.train.dataset, bad=3, epoch=1), d.valid.dataset, bs=8, device='cpu', n_inp=2)
    learn = deblur_learner(dls, 'unrolled', layers=1, prior_width=4)
    with learn.no_bar(), learn.no_logging(): rec = fit_run(learn, tmp_path / 'run', epochs=3)
    assert rec['status'] == 'diverged'
    assert rec['nan_report']['epoch'] == 1 and rec['nan_report']['what'] == 'input'
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
    assert load_train_state(tmp_path / 'run')['epoch'] == 0              # epoch 0's checkpoint is the latest
    assert load_checkpoint(tmp_path / 'run') is not None
    assert runs_table(tmp_path).status.tolist() == ['diverged']


def test_nan_loss_is_caught_before_the_step(tmp_path):
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4, loss_func=lambda p, t: (p - t).abs().mean() / 0.0 * 0.0)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with learn.no_bar(), learn.no_logging(): rec = fit_run(learn, tmp_path / 'r', epochs=1)
    assert rec['status'] == 'diverged' and rec['nan_report']['what'] == 'loss' and rec['nan_report']['batch'] == 0
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())


def test_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path):
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4)
    with learn.no_bar(), learn.no_logging(): fit_run(learn, tmp_path / 'r', epochs=1)
    d = checkpoint_dir(tmp_path / 'r', 'last')
    f = d / 'train_state.pt'
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'): load_train_state(tmp_path / 'r')
    torch.save({'x': torch.nn.Linear(1, 1)}, f)                           # a pickled module: refused, not executed
    with pytest.raises(CheckpointError, match='refuses to unpickle'): load_train_state(tmp_path / 'r')
    w = d / 'model.safetensors'
    w.write_bytes(w.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match='model.safetensors'): load_checkpoint(tmp_path / 'r', 'last')
    (tmp_path / 'r' / 'checkpoints' / 'last.json').write_text('{"dir": "ckpt-gone"}')
    with pytest.raises(CheckpointError, match='does not exist'): load_checkpoint(tmp_path / 'r', 'last')
    with pytest.raises(FileNotFoundError, match='checkpoint not found'): load_checkpoint(tmp_path / 'nothing')


def test_every_torch_load_uses_weights_only():
    "No code path unpickles arbitrary objects: every torch.load in the package passes weights_only=True."
    calls = []
    for p in (ROOT / 'restore_nb').rglob('*.py'):
        for m in re.finditer(r'torch\.load\(([^)]*)\)', p.read_text()): calls.append((p.name, m.group(1)))
    assert calls, 'expected torch.load calls (training state)'
    assert all('weights_only=True' in args for _, args in calls), calls


def test_wandb_logger_writes_an_offline_run(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    from restore_nb.train import WandbLogger
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4, cbs=WandbLogger(name='t', config={'a': 1}, dir=tmp_path, every=1))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    runs = list((tmp_path / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('*.wandb'))


def test_next_run_numbers_and_table(tmp_path):
    assert next_run(tmp_path, 'x').name == 'v0.1_x'
    (tmp_path / 'v0.7_a').mkdir()
    (tmp_path / 'v1.2_b').mkdir()
    assert next_run(tmp_path, 'c').name == 'v0.8_c' and next_run(tmp_path, 'c', major=1).name == 'v1.3_c'
    assert runs_table(tmp_path).empty


def test_a_fresh_start_never_overwrites_a_run(tmp_path):
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4)
    with learn.no_bar(), learn.no_logging(): fit_run(learn, tmp_path / 'r', epochs=1)
    with pytest.raises(ValueError, match='already holds a run'): fit_run(learn, tmp_path / 'r', epochs=1)
