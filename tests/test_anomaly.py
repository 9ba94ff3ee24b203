"""The anomaly task: metrics against scikit-learn, models that learn, the NIH path, progressive sources, the CLI."""
import json
import numpy as np
import pytest
import torch

from restore_nb.metrics import roc_curve, average_precision, detection_metrics, group_auroc, compare_auroc
from restore_nb.models import BlurBaseline, ReversedAE, anomaly_unet
from restore_nb.tasks.anomaly import (anomaly_dataloaders, anomaly_learner, synthetic_test_set, evaluate_anomaly,
                                      make_nih_folder,
                                      nih_layout, nih_test_set, insert_anomaly, image_scores)
from restore_nb.core import set_seed
from conftest import run, BIN


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_curves_agree_with_sklearn(seed):
    sk = pytest.importorskip('sklearn.metrics')
    rng = np.random.default_rng(seed)
    l = rng.integers(0, 2, 200)
    s = np.round(l * 0.7 + rng.normal(size=200), 1)                     # rounded: many ties
    fpr, tpr, thr = roc_curve(s, l)
    f2, t2, th2 = sk.roc_curve(l, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])
    assert abs(average_precision(s, l) - sk.average_precision_score(l, s)) < 1e-12
    m = detection_metrics(s, l, n_boot=0)
    assert abs(m['auroc'] - sk.roc_auc_score(l, s)) < 1e-12
    p, r, _ = sk.precision_recall_curve(l, s)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0).max()
    assert abs(m['f1_max'] - f1) < 1e-12
    f2, t2, _ = sk.roc_curve(l, s)
    assert m['sens_at_95spec'] == t2[f2 <= 0.05].max()


def test_bootstrap_intervals_and_groups():
    rng = np.random.default_rng(0)
    l = np.r_[np.zeros(100), np.ones(100)].astype(int)
    s = l * 1.0 + rng.normal(size=200)
    a, b = detection_metrics(s, l, seed=3), detection_metrics(s, l, seed=3)
    assert a == b                                                          # seeded: reproducible
    lo, hi = a['auroc_ci']
    assert lo < a['auroc'] < hi and 0.03 < hi - lo < 0.2
    groups = ['x' if i % 2 else ['y', 'z'] for i in range(200)]
    rows = {r['group']: r for r in group_auroc(s, l, groups, n_boot=50)}
    assert set(rows) == {'x', 'y', 'z'} and rows['x']['n_anomalous'] == 50 and rows['x']['n_normal'] == 100
    with pytest.raises(ValueError, match='both classes'): detection_metrics(s[:50], l[:50])


def test_models_any_size_and_synthetic_masks():
    for m in (anomaly_unet(width=8, depth=3), ReversedAE(width=8, depth=3, decoder_blocks=1)):
        for shape in ((2, 1, 32, 32), (1, 1, 37, 45)):
            assert m(torch.rand(shape)).shape == shape
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 64, 64), 0.3)
    for k in ('lesion', 'blob', 'scratch'):
        y, mask = insert_anomaly(x, k, g)
        d = (y - x).abs()[0]
        assert d[mask[0] > 0].mean() > 5 * d[mask[0] == 0].mean()          # the change is where the mask says
    e = torch.zeros(1, 1, 10, 10)
    e[0, 0, 0, 0] = 1
    assert image_scores(e, 'topk', 0.01).item() == 1 and abs(image_scores(e).item() - 0.01) < 1e-7


def test_a_trained_model_learns_and_detects():
    ("Real short training: validation L1 on healthy images drops, and the RA beats the blur baseline (paired "
     "bootstrap) on inserted anomalies.")
    set_seed(0)
    dls = anomaly_dataloaders('builtin', size=32, bs=16, n_train=256, n_valid=32, device='cpu')
    learn = anomaly_learner(dls, 'ra', width=16, depth=3, bottleneck=16, decoder_blocks=1)
    with learn.no_bar(), learn.no_logging():
        v0 = learn.validate()[0]
        learn.fit_one_cycle(10, 2e-3)
    assert learn.recorder.values[-1][1] < 0.7 * v0                       # valid L1 drops
    test = synthetic_test_set(dls.valid.dataset.source, n=160, size=32, seed=5)
    ra = evaluate_anomaly(learn.model, test, maps=('l1',), reduces=('topk',), n_boot=0)
    blur = evaluate_anomaly(BlurBaseline(), test, maps=('l1',), reduces=('topk',), n_boot=0)
    c = compare_auroc(ra.arrays['scores']['l1/topk'], blur.arrays['scores']['l1/topk'], test['labels'], n_boot=300)
    assert ra.metrics['l1/topk']['auroc'] > 0.75 and c['ci'][0] > 0, c


@pytest.mark.slow   # 2 min; colab/02_imgae_dx runs the same NIH-layout path by default
def test_nih_layout_end_to_end_and_cli(tmp_path):
    root = make_nih_folder(tmp_path / 'nih', n=120, size=32)
    assert nih_layout(root) and not nih_layout('builtin')
    t = nih_test_set(root, 32, views=('PA', 'AP'))
    assert set(np.unique(t['labels'])) == {0, 1} and len(t['x']) == len(t['view'])
    r = run([BIN / 'restore-nb', 'train', 'anomaly', '--data', root, '--out', tmp_path / 'run', '--epochs', 2,
             '--size', 32, '--bs', 8, '--views', 'PA,AP'], env={'RESTORE_NB_HOME': str(tmp_path / 'home')})
    assert r.returncode == 0, r.stderr
    assert 'train anomaly: ReversedAE' in r.stdout
    r = run([BIN / 'restore-nb', 'eval', 'anomaly', '--ckpt', tmp_path / 'run', '--data', root, '--json',
             tmp_path / 'e.json'],
            env={'RESTORE_NB_HOME': str(tmp_path / 'home')})
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / 'e.json').read_text())
    assert {'l1/mean', 'ssim/topk',
            'perceptual/mean'} <= set(res['metrics']) and 'auroc_ci' in res['metrics']['l1/mean']
    assert res['groups'][res['best']]['kind'] and 'view' in res['groups'][res['best']]
    assert 'AUROC' in r.stdout and 'per kind' in r.stdout
    r = run([BIN / 'restore-nb', 'train', 'anomaly', '--data', tmp_path / 'missing', '--out', tmp_path / 'r2'])
    assert r.returncode == 2 and 'missing' in r.stderr


def test_progressive_source_over_http(tmp_path, monkeypatch):
    "A remote NIH archive trains part by part: epoch 0 sees images_001 only."
    import zipfile
    from restore_nb.data.streaming import LoopbackServer, ProgressiveSource, _HANDLES
    monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path / 'home'))
    root = make_nih_folder(tmp_path / 'nih', n=36, size=32, findings=0.0)
    zp = tmp_path / 'nih.zip'
    with zipfile.ZipFile(zp, 'w') as z:
        for p in sorted(root.rglob('*')):
            if p.is_file(): z.write(p, p.relative_to(root).as_posix())
    with LoopbackServer(zp) as srv:
        try:
            dls = anomaly_dataloaders(srv.url(), size=32, bs=4, n_train=8, n_valid=4, views=('PA', 'AP'), device='cpu')
            src = dls.train.dataset.source
            assert isinstance(src, ProgressiveSource) and src.part_names == ['images_001', 'images_002', 'images_003']
            n0 = len(src)
            dls.train.dataset.set_epoch(2)
            assert 0 < n0 < len(src) and all(src.source.names[i].startswith('images_001') for i in src.parts[0])
            x, y = dls.one_batch()
            assert x.shape == (4, 1, 32, 32) and torch.equal(x, y)
        finally: _HANDLES.clear()
