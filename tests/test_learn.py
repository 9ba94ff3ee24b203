"""restore_nb.learn: the deblurring Learner learns; callbacks do what they say."""
import torch
from restore_nb.core import set_seed
from restore_nb.data import deblur_dataloaders
from restore_nb.learn import deblur_learner, fit_minutes, KernelCurriculum, BlindDeblurLoss, history
from restore_nb.metrics import psnr


def _dls():
    return deblur_dataloaders(size=40, bs=8, n_train=48, n_valid=16, kernel_size=11, device='cpu', seed=0)


def test_unrolled_learner_beats_the_blurred_input():
    set_seed(0)
    dls = _dls()
    learn = deblur_learner(dls, 'unrolled', layers=3, prior_width=8)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-3)
    ys, ks, xs = zip(*[b for b in dls.valid])
    y, k, x = torch.cat(ys), torch.cat(ks), torch.cat(xs)
    with torch.no_grad(): pred = learn.model.eval()(y, k)
    assert float(psnr(pred.clamp(0, 1), x)) > float(psnr(y.clamp(0, 1), x)) + 1.0
    h = history(learn)
    assert len(h) == 2 and set(h[0]) == {'train_loss', 'valid_loss', 'psnr_metric'}


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
        BlindDeblurLoss.forward = orig; del BlindDeblurLoss.training_flag
    assert seen and all(abs(w - 2.0 * (1 - p)) < 1e-9 for p, w in seen)
    assert learn.loss_func.k_true.shape == (8, 11, 11) and learn.loss_func.k_est.shape == (8, 11, 11)


def test_fit_minutes_follows_the_clock():
    "The one-cycle schedule spans exactly the budget: training stops on time and the LR has annealed."
    import time
    set_seed(0)
    learn = deblur_learner(_dls(), 'unet', width=4)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): n = fit_minutes(learn, 0.1, lr=1e-3)
    dt = time.perf_counter() - t0
    assert 6 <= dt < 6 + 3, dt                       # budget + at most one batch and one validation pass
    assert n >= 1 and len(learn.recorder.values) == n
    lrs = learn.recorder.lrs
    assert max(lrs) > 0.9e-3 and lrs[-1] < max(lrs) / 20   # warmed up to the max, annealed by the end
    assert any(not torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
