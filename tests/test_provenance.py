"""Content Credentials end to end through the command: signing (self-issued and a user's certificate), PNG and
JPEG, tampering of image, credentials, manifest, maps and log, verify --reproduce, audit of a folder."""
import json, shutil
import pytest
import torch
from restore_nb.cli import main
from restore_nb.core import load_image, sample_images, save_image
from restore_nb.infer import Identity, change_one_pixel, check_log, read_credentials, self_issued, signer_info, verify
from restore_nb.physics import GaussianNoise


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path / 'home'))      # the installation's identity and log
    monkeypatch.delenv('RESTORE_NB_SIGN_CERT', raising=False)
    monkeypatch.delenv('RESTORE_NB_SIGN_KEY', raising=False)
    monkeypatch.delenv('RESTORE_NB_LOG', raising=False)
    g = torch.Generator().manual_seed(0)
    for n in ('coffee', 'rocket', 'chelsea'):
        x = sample_images(n, size=40)[n]
        save_image(GaussianNoise(20 / 255)(x[None], generator=g)[0].clamp(0, 1), tmp_path / f'{n}.png')
    return tmp_path


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_png_jpeg_tiff_outputs_carry_credentials_that_fail_after_one_changed_byte(home, capsys):
    for fmt in ('png', 'jpg', 'tif'):
        rc, _, err = cli(capsys, 'restore', home / 'coffee.png', '--task', 'denoise', '--sigma', 20, '--format', fmt,
                         '--out', home / fmt)
        assert rc == 0, err
        out = home / fmt / f'coffee_restored.{fmt}'
        c = read_credentials(out)
        assert (c['status'], c['failures'], c['signer']['self_issued']) == ('untrusted', [], True)
        assert c['actions'][1]['digitalSourceType'].endswith('algorithmicallyEnhanced')
        rc, text, _ = cli(capsys, 'verify', out, '--reproduce')
        assert rc == 0 and 'self-issued' in text and 'bit-exact' in text
        ca = home / 'home' / 'credentials' / 'self-issued-ca.pem'
        assert verify(out, trust=ca)['status'] == 'valid'
    change_one_pixel(home / 'png' / 'coffee_restored.png')
    b = bytearray((home / 'jpg' / 'coffee_restored.jpg').read_bytes())
    b[-40] ^= 1                                                          # one byte of the JPEG's scan
    (home / 'jpg' / 'coffee_restored.jpg').write_bytes(bytes(b))
    for out in (home / 'png' / 'coffee_restored.png', home / 'jpg' / 'coffee_restored.jpg'):
        rc, _, err = cli(capsys, 'verify', out)
        assert rc == 1 and 'assertion.dataHash.mismatch' in err


def test_a_users_certificate_signs_and_its_ca_is_trusted(home, capsys, tmp_path):
    chain, key, ca = self_issued(tmp_path / 'org')                      # stands in for an organisation's certificate
    rc, _, err = cli(capsys, 'restore', home / 'rocket.png', '--task', 'denoise', '--sigma', 20, '--out', home / 'o',
                     '--sign-cert', chain, '--sign-key', key, '--log', home / 'org.jsonl')
    assert rc == 0, err
    out = home / 'o' / 'rocket_restored.png'
    signer = json.loads((home / 'o' / 'rocket_restored.png.json').read_text())['credentials']['signer']
    assert signer['sha256'] == signer_info(Identity(chain, key).certificate())['sha256']
    assert cli(capsys, 'verify', out, '--trust', ca)[1].count('credentials  valid') == 1
    assert verify(out, trust=self_issued()[2])['status'] == 'untrusted'          # another CA vouches for nothing here
    assert check_log(home / 'org.jsonl')['entries'] == 1


def test_maps_and_manifest_tampering_are_caught(home, capsys):
    rc, _, _ = cli(capsys, 'restore', home / 'chelsea.png', '--task', 'denoise', '--sigma', 20, '--out', home / 'o')
    out, man = home / 'o' / 'chelsea_restored.png', home / 'o' / 'chelsea_restored.png.json'
    m = json.loads(man.read_text())
    m['degradation']['noise']['sigma'] = 0.5                             # the sidecar lies
    man.write_text(json.dumps(m))
    rc, _, err = cli(capsys, 'verify', out)
    assert rc == 1 and 'differs from the signed credentials' in err
    man.unlink()                                                         # the credentials alone still verify
    assert cli(capsys, 'verify', out)[0] == 0


def test_log_tampering_removed_reordered_altered(home, capsys):
    for n in ('coffee', 'rocket', 'chelsea'):
        cli(capsys, 'restore', home / f'{n}.png', '--task', 'denoise', '--sigma', 20, '--out', home / 'o')
    log = home / 'home' / 'credentials' / 'log.jsonl'
    rc, text, _ = cli(capsys, 'audit', '--log', log)
    assert rc == 0 and '3 entries' in text
    lines = log.read_text().splitlines()
    for name, ls, expect in (('removed', [lines[0], lines[2]], 'entry 1 removed'),
                             ('reordered', [lines[1], lines[0], lines[2]], 'reordered'),
                             ('altered', [lines[0], lines[1].replace('rocket', 'racket'), lines[2]], 'altered')):
        t = home / f'{name}.jsonl'
        t.write_text('\n'.join(ls) + '\n')
        rc, _, err = cli(capsys, 'audit', '--log', t)
        assert rc == 1 and expect in err, (name, err)
    head = check_log(log)['head']
    (home / 'cut.jsonl').write_text('\n'.join(lines[:2]) + '\n')        # truncated: only a head kept elsewhere shows it
    assert cli(capsys, 'audit', '--log', home / 'cut.jsonl')[0] == 0
    assert cli(capsys, 'audit', '--log', home / 'cut.jsonl', '--head', head)[0] == 1


def test_audit_command_writes_the_table(home, capsys):
    for n in ('coffee', 'rocket'):
        cli(capsys, 'restore', home / f'{n}.png', '--task', 'denoise', '--sigma', 20, '--out', home / 'o')
    shutil.copy(home / 'chelsea.png', home / 'o' / 'stray.png')          # no credentials
    rc, text, _ = cli(capsys, 'audit', home / 'o', '--reproduce', -1, '--json', home / 'audit.json')
    res = json.loads((home / 'audit.json').read_text())
    assert rc == 0 and (home / 'audit.md').exists() and 'reproducibility rate' in text
    assert res['metrics']['credentials'] == dict(files=3, valid=0, untrusted=2, invalid=0, missing=1)
    assert res['metrics']['reproducibility'] == dict(sampled=2, bit_exact=2, rate=1.0)
    assert load_image(home / 'o' / 'coffee_restored.png').shape == (3, 40, 40)
