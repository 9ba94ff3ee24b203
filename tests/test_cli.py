"""The installed `restore-nb` command, run as a user runs it."""
import json
import restore_nb
from conftest import BIN, run

EXE = BIN / 'restore-nb'


def test_version_and_help():
    r = run([EXE, '--version'])
    assert r.returncode == 0 and r.stdout.strip() == f'restore_nb {restore_nb.__version__}'
    r = run([EXE, '--help'])
    assert r.returncode == 0 and 'demo' in r.stdout
    r = run([EXE])
    assert r.returncode == 2 and 'COMMAND' in r.stdout


def test_demo_restores_better_than_degraded(tmp_path):
    out = tmp_path / 'report'
    r = run([EXE, 'demo', '--out', out, '--size', '64'])
    assert r.returncode == 0, r.stderr
    res = json.loads((out / 'results.json').read_text())
    assert set(res) == {'task', 'protocol', 'metrics', 'per_image'} and res['task'] == 'deblur'
    assert len(res['per_image']) == 6
    m = res['metrics']
    assert m['wiener']['psnr'] > m['degraded']['psnr'] + 0.5
    assert m['richardson_lucy']['psnr'] > m['degraded']['psnr'] + 0.5
    assert (out / 'report.md').read_text().startswith('# restore_nb demo')
    assert len(list((out / 'images').glob('*.png'))) == 6 * 4


def test_demo_bad_argument_is_one_clear_line(tmp_path):
    r = run([EXE, 'demo', '--out', tmp_path, '--size', '8'])
    assert r.returncode == 2
    assert 'size must be at least 32' in r.stderr and 'Traceback' not in r.stderr
    r = run([EXE, 'demo', '--size', 'big'])
    assert r.returncode == 2 and 'invalid int value' in r.stderr
