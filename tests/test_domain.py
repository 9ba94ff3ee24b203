"""The independent OCR judges through their wrappers: clean rendered plates are read, heavily blurred ones are not
(not one exactly, and with a character error rate at least 0.25 higher).
Each is skipped, with the reason, where its engine is not installed (the project's setup installs both)."""
import numpy as np
import pytest
import torch.nn.functional as F

from restore_nb.domain import RapidOCRJudge, TesseractJudge, judge_texts, plate_string, render_plate

TEXTS = [plate_string(np.random.default_rng(i), ('uk', 'us', 'eu')[i % 3]) for i in range(4)]
CLEAN = [render_plate(t, seed=i) for i, t in enumerate(TEXTS)]
BLURRED = [F.avg_pool2d(x[None], 9, 1, 4)[0] for x in CLEAN]


@pytest.mark.parametrize('make', [TesseractJudge, RapidOCRJudge], ids=['tesseract', 'rapidocr'])
def test_a_judge_reads_clean_plates_and_not_blurred_ones(make):
    judge = make()
    if not judge.available(): pytest.skip(judge.reason)
    clean, blurred = judge_texts(judge, CLEAN, TEXTS), judge_texts(judge, BLURRED, TEXTS)
    assert clean['cer'] <= 0.1 and clean['exact'] >= 0.75, clean
    assert blurred['cer'] >= clean['cer'] + 0.25 and blurred['exact'] == 0, blurred


def test_a_missing_engine_is_a_reason_not_an_error(monkeypatch):
    pytesseract = pytest.importorskip('pytesseract')
    monkeypatch.setattr(pytesseract.pytesseract, 'tesseract_cmd', '/no/such/tesseract')
    j = TesseractJudge()
    assert not j.available() and 'tesseract-ocr' in j.reason


def test_the_domain_task_trains_restores_and_is_served_with_a_domain_option(tmp_path, monkeypatch):
    "The registry path end to end at toy size: `train domain`, `restore --task domain --domain`, the served options."
    from restore_nb.cli import main
    from restore_nb.core import save_image
    from restore_nb.serve.models import RequestError, request_options
    from restore_nb.tasks import TASKS
    monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path/'home'))          # the heads' cache
    run = tmp_path/'run'
    assert main(['train', 'domain', '--domains', 'plate', '--head_steps', '2', '--epochs', '1', '--n_train', '8',
                 '--bs', '4', '--out', str(run), '--device', 'cpu']) == 0
    assert (tmp_path/'home'/'domain-heads'/'plate-2-0.safetensors').exists()
    save_image(CLEAN[0], tmp_path/'plate.png')
    assert main(['restore', str(tmp_path/'plate.png'), '--task', 'domain', '--ckpt', str(run), '--domain', 'plate',
                 '--out', str(tmp_path/'out'), '--device', 'cpu']) == 0
    assert (tmp_path/'out'/'plate_restored.png').exists()
    with pytest.raises(ValueError, match="--domain: expected one the model was trained on"):
        TASKS['domain'].restore(TASKS['domain'].RestoreOptions(inputs=[str(tmp_path/'plate.png')], ckpt=str(run),
                                                               domain='field'))
    o = request_options(TASKS['domain'], {'domain': 'line'}, ['x.png'], 'out', str(run))
    assert o.domain == 'line'
    with pytest.raises(RequestError):
        request_options(TASKS['domain'], {'domain': 'faces'}, ['x.png'], 'out', str(run))
