"""The independent OCR judges through their wrappers: clean rendered plates are read, heavily blurred ones are not.
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
    assert blurred['cer'] >= 0.5 and blurred['exact'] == 0, blurred


def test_a_missing_engine_is_a_reason_not_an_error(monkeypatch):
    pytesseract = pytest.importorskip('pytesseract')
    monkeypatch.setattr(pytesseract.pytesseract, 'tesseract_cmd', '/no/such/tesseract')
    j = TesseractJudge()
    assert not j.available() and 'tesseract-ocr' in j.reason
