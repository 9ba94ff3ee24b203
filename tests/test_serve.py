"""The HTTP API through the ASGI test client (every route, every bad input: a clear 4xx, nothing written outside the
server's folder), a batch job that survives SIGKILL of a real server, and the Redis engine against a real
redis-server."""

import base64, io, json, os, shutil, signal, socket, subprocess, sys, time, zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from restore_nb.core import sample_images
from restore_nb.infer import verify
from restore_nb.serve import create_app
from restore_nb.serve.jobs import JobStore, run_folder_job


def png(x) -> bytes:
    b = io.BytesIO()
    Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).squeeze()).save(b, 'PNG')
    return b.getvalue()


IMGS = {k: png(v) for k, v in sample_images(['astronaut', 'coffee', 'chelsea'], 48).items()}
A = IMGS['astronaut']


def files_outside(base: Path, root: Path) -> set:
    return {p for p in base.rglob('*') if root not in p.parents and p != root}


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp('serve')
    root = base / 'root'
    cwd = os.getcwd()
    os.chdir(base)  # anything written relative to the working folder would show up here
    try:
        with TestClient(
            create_app(root=str(root), max_upload_mb=1, max_pixels=1_000_000, max_batch=8, token='s3cret')
        ) as c:
            c.headers['Authorization'] = 'Bearer s3cret'
            yield c, root, base
    finally:
        os.chdir(cwd)


def err(r, status, kind=None):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()['error']
    assert e['message'] and (kind is None or e['kind'] == kind), e
    return e['message']


def test_health_models_pages_and_openapi(served):
    c, root, _ = served
    assert c.get('/healthz', headers={'Authorization': ''}).json()['ok']
    m = c.get('/v1/models').json()
    assert {'denoise', 'deblur', 'sr', 'demosaic'} <= set(m['tasks']) and 'noise-heavy' in m['templates']
    assert not any('ckpt' in x for x in m['models']) and str(root) not in json.dumps(m)
    assert [o['name'] for o in m['tasks']['deblur']['options'] if o['file']] == ['kernel']
    assert 'id="run"' in c.get('/').text and 'restore_nb' in c.get('/dashboard').text
    assert '/v1/restore' in c.get('/openapi.json').json()['paths'] and c.get('/docs').status_code == 200


def test_restore_multipart_json_kernel_download_verify(served):
    c, root, _ = served
    r = c.post(
        '/v1/restore', files={'image': ('a.png', A)}, data={'task': 'denoise', 'options': '{"sigma": 25}'}
    ).json()
    assert r['model'] == 'denoise-rgb' and r['manifest']['degradation']['noise']['sigma'] == pytest.approx(25 / 255)
    assert r['estimates']['width'] == 48 and r['drift']['features']['noise_sigma']['n'] >= 1
    out = base64.b64decode(r['image'])
    assert c.get(r['urls']['image']).content == out and c.get(r['urls']['manifest']).json() == r['manifest']
    j = c.post(
        '/v1/restore', json={'image': base64.b64encode(A).decode(), 'model': 'denoise-rgb', 'options': {'sigma': 25}}
    ).json()
    assert j['manifest']['pixels'] == r['manifest']['pixels']  # same input, same model: the same pixels (signed anew)
    k = c.post(
        '/v1/restore',
        json={
            'image': base64.b64encode(A).decode(),
            'task': 'deblur',
            'options': {'kernel': (np.ones((5, 5)) / 25).tolist()},
        },
    ).json()
    assert (
        k['model'] == 'deblur-unrolled'
        and Path(k['manifest']['degradation']['kernel_file']).parent.parent == root / 'requests'
    )
    man = json.dumps(r['manifest'])
    ok = c.post('/v1/verify', files={'output': out, 'manifest': man, 'input': A}).json()
    assert ok['ok'] and ok['checks'] == {'credentials': 'untrusted', 'output': 'ok', 'manifest': 'ok', 'input': 'ok',
                                         'weights': 'ok (denoise-rgb)'}
    bad = c.post(
        '/v1/verify', json={'output': base64.b64encode(out[:-1] + b'\0').decode(), 'manifest': r['manifest']}
    ).json()
    assert not bad['ok'] and bad['checks']['output'] == 'changed'
    other = dict(r['manifest'], weights=dict(r['manifest']['weights'], sha256='0' * 64))   # a manifest that lies
    lie = c.post('/v1/verify', files={'output': out, 'manifest': json.dumps(other)}).json()
    assert not lie['ok'] and lie['checks']['manifest'] == 'differs' and lie['checks']['weights'] == 'ok (denoise-rgb)'
    alone = c.post('/v1/verify', files={'output': out, 'input': A}, data={'reproduce': 'true'}).json()
    assert alone['ok'] and alone['checks']['reproduced'] == 'bit-exact' and alone['status'] == 'untrusted'


def test_jobs_progress_zip_cancel_and_metrics(served):
    c, root, _ = served
    j = c.post('/v1/jobs', files=[('images', (f'{k}.png', v)) for k, v in IMGS.items()], data={'task': 'denoise'})
    assert j.status_code == 202
    jid = j.json()['id']
    t0 = time.monotonic()
    while (p := c.get(f'/v1/jobs/{jid}').json())['state'] != 'done':
        assert time.monotonic() - t0 < 120
        time.sleep(0.2)
    assert (p['done'], [i['name'] for i in p['images']]) == (3, ['astronaut.png', 'coffee.png', 'chelsea.png'])
    z = zipfile.ZipFile(io.BytesIO(c.get(f'/v1/jobs/{jid}/results').content))
    assert sorted(n for n in z.namelist() if n.endswith('_restored.png')) == [
        f'out/0000{i}_restored.png' for i in range(3)
    ]
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, 'w') as w:
        w.writestr('pics/a.png', A)
        w.writestr('__MACOSX/._a.png', b'junk')
    jz = c.post('/v1/jobs', files={'zip': ('b.zip', zb.getvalue())}, data={'model': 'denoise-rgb'}).json()
    assert jz['n'] == 1
    assert c.delete(f"/v1/jobs/{jz['id']}").json()['state'] in ('cancelled', 'done')
    m = c.get('/metrics').text
    assert 'restore_nb_restorations_total{model="denoise-rgb",task="denoise"}' in m and 'restore_nb_queue_depth' in m
    assert 'restore_nb_input_noise_sigma_bucket' in m and 'restore_nb_latency_seconds_bucket' in m
    assert c.get('/v1/stats').json()['models']['denoise-rgb']['n'] >= 3


def _zip(entries, link=False):
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as w:
        for n in entries:
            info = zipfile.ZipInfo(n)
            if link:
                info.external_attr = 0o120777 << 16
            w.writestr(info, A)
    return b.getvalue()


def test_every_bad_request_is_a_clear_4xx_and_writes_nothing_outside(served):
    c, root, base = served
    before = files_outside(base, root)
    bomb = io.BytesIO()
    Image.new('L', (2000, 2000)).save(bomb, 'PNG')
    post = lambda **kw: c.post('/v1/restore', **kw)
    cases = [
        (post(files={'image': A}, data={'task': 'teleport'}), 404, 'unknown_task', "'teleport' is not served"),
        (post(files={'image': A}, data={'model': 'nope'}), 404, 'unknown_model', "'nope' is not served"),
        (post(files={'image': A}, data={'task': 'denoise', 'options': '{"sigma": -1}'}), 422, 'bad_option', '--sigma'),
        (
            post(files={'image': A}, data={'task': 'denoise', 'options': '{"ckpt": "/etc"}'}),
            422,
            'unknown_option',
            'ckpt',
        ),
        (post(files={'image': A}, data={'task': 'denoise', 'options': 'not json'}), 400, 'bad_options', 'JSON'),
        (post(files={'image': A}, data={'task': 'sr', 'options': '{"scale": 3}'}), 422, 'bad_option', '2 or 4'),
        (
            post(files={'image': b'%PDF-1.4 not an image'}, data={'task': 'denoise'}),
            415,
            'undecodable_image',
            'decodable',
        ),
        (post(files={'image': A[:200]}, data={'task': 'denoise'}), 415, 'undecodable_image', 'does not decode'),
        (post(files={'image': ('x.png', b'')}, data={'task': 'denoise'}), 400, 'empty_upload', 'empty'),
        (post(data={'task': 'denoise'}), 400, 'missing_image', "'image'"),
        (post(files={'image': bomb.getvalue()}, data={'task': 'denoise'}), 413, 'too_many_pixels', '4,000,000'),
        (post(files={'image': b'\0' * (2 << 20)}, data={'task': 'denoise'}), 413, 'too_large', 'limit'),
        (post(content=b'{"image": 1', headers={'Content-Type': 'application/json'}), 400, 'bad_json', 'JSON'),
        (post(content=b'x', headers={'Content-Type': 'text/plain'}), 415, 'unsupported_media_type', 'multipart'),
        (post(json={'image': 'not base64!'}), 400, 'bad_base64', 'base64'),
        (post(files={'image': A}, data={'task': 'denoise', 'prompt': 'a cat'}), 422, 'no_prompt', 'takes no prompt'),
        (
            post(files={'image': A}, data={'task': 'diffusion', 'template': 'sepia'}),
            422,
            'unknown_template',
            'noise-heavy',
        ),
        (post(files={'image': A, 'kernel': b'#!/bin/sh'}, data={'task': 'deblur'}), 422, None, '.npy, .npz or .mat'),
        (c.post('/v1/jobs', data={'task': 'denoise'}), 400, 'empty_batch', 'empty'),
        (
            c.post('/v1/jobs', files={'zip': _zip(['../../evil.png'])}, data={'task': 'denoise'}),
            400,
            'zip_traversal',
            'evil',
        ),
        (c.post('/v1/jobs', files={'zip': _zip(['/abs.png'])}, data={'task': 'denoise'}), 400, 'zip_traversal', 'abs'),
        (
            c.post('/v1/jobs', files={'zip': _zip(['l.png'], link=True)}, data={'task': 'denoise'}),
            400,
            'zip_link',
            'link',
        ),
        (c.post('/v1/jobs', files={'zip': b'PK not a zip'}, data={'task': 'denoise'}), 400, 'bad_zip', 'zip'),
        (c.post('/v1/jobs', files=[('images', A)] * 9, data={'task': 'denoise'}), 413, 'batch_too_large', 'limit of 8'),
        (c.post('/v1/jobs', files={'images': A}, data={'task': 'teleport'}), 404, 'unknown_task', 'teleport'),
        (c.get('/v1/jobs/..%2F..%2Fetc'), 404, None, None),
        (c.get('/v1/jobs/0123456789ab'), 404, 'unknown_job', 'not a job'),
        (c.get('/v1/results/0123456789ab/..%2Fjob.json'), 404, None, None),
        (c.post('/v1/verify', files={'output': A}), 422, 'no_credentials', 'manifest'),
        (c.post('/v1/verify', files={'manifest': '{}'}), 400, 'missing_field', 'output'),
        (c.post('/v1/audit', files={'images': A}), 400, 'missing_field', 'zip'),
        (c.get('/v1/models', headers={'Authorization': 'Bearer wrong'}), 401, 'unauthorized', 'token'),
    ]
    for r, status, kind, words in cases:
        if r.headers.get('content-type', '').startswith('application/json'):
            msg = err(r, status, kind)
            assert words is None or words in msg, (words, msg)
        else:
            assert r.status_code == status, (r.status_code, r.text[:200])
    assert files_outside(base, root) == before
    assert not list((root / 'requests').glob('*/input.*')) or all(
        (p.parent / 'out').exists() for p in (root / 'requests').glob('*/input.*')
    )


def test_token_cookie_and_no_cors(served):
    c, _, _ = served
    plain = TestClient(c.app)
    assert plain.get('/v1/models').status_code == 401 and plain.get('/healthz').status_code == 200
    assert plain.get('/?token=s3cret').status_code == 200 and plain.get('/v1/models').status_code == 200  # the cookie
    r = c.get('/v1/models', headers={'Origin': 'https://elsewhere.example'})
    assert 'access-control-allow-origin' not in r.headers


def test_full_queue_answers_429(tmp_path):
    with TestClient(create_app(root=str(tmp_path), job_workers=0, max_queue=4)) as c:
        assert c.post('/v1/jobs', files=[('images', A)] * 3, data={'task': 'denoise'}).status_code == 202
        r = c.post('/v1/jobs', files=[('images', A)] * 2, data={'task': 'denoise'})
        assert 'limit 4' in err(r, 429, 'queue_full')
        assert c.get('/healthz').json()['queue'] == 3


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _start(root: Path, port: int):
    cmd = [
        sys.executable,
        '-c',
        'import sys; from restore_nb.cli import main; sys.exit(main())',
        'serve',
        '--port',
        str(port),
        '--root',
        str(root),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            if httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.3)
    p.kill()
    raise AssertionError(f"server did not start: {p.stdout.read()}")


def test_sigkill_during_a_batch_job_then_restart_finishes_it(tmp_path):
    import httpx

    root, port = tmp_path / 'root', _port()
    imgs = [png(x) for x in sample_images(size=64, mode='rgb').values()][:6]
    p = _start(root, port)
    try:
        j = httpx.post(
            f'http://127.0.0.1:{port}/v1/jobs',
            files=[('images', (f'{i}.png', b)) for i, b in enumerate(imgs)],
            data={'task': 'denoise', 'options': '{"sigma": 15}'},
            timeout=60,
        ).json()
        store = JobStore(root)
        t0 = time.monotonic()
        while store.progress(j['id'])['done'] < 1:
            assert time.monotonic() - t0 < 120
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = store.progress(j['id'])['done']
    assert killed_at < 6, 'the job finished before the kill: nothing was tested'
    p = _start(root, port)
    try:
        t0 = time.monotonic()
        while (pr := store.progress(j['id']))['state'] != 'done':
            assert time.monotonic() - t0 < 180
            time.sleep(0.2)
    finally:
        p.terminate()
        p.wait(30)
    d = store.folder(j['id'])
    outs = sorted((d / 'out').glob('*_restored.png'))
    assert pr['done'] == 6 and [o.name for o in outs] == [f'{i:05d}_restored.png' for i in range(6)]
    assert not list((d / 'out').glob('.*tmp*'))  # no half-written file left
    assert all(verify(o)['ok'] for o in outs)


def test_redis_engine_with_a_real_redis_server(tmp_path):
    exe = shutil.which('redis-server')
    if exe is None:
        pytest.skip("redis-server is not installed (the project's setup installs Debian's redis-server)")
    port = _port()
    r = subprocess.Popen([exe, '--port', str(port), '--save', '', '--appendonly', 'no'], stdout=subprocess.DEVNULL)
    try:
        import redis

        t0 = time.monotonic()
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() - t0 < 20
                time.sleep(0.1)
        (tmp_path / 'in').mkdir()
        for k, b in IMGS.items():
            (tmp_path / 'in' / f'{k}.png').write_bytes(b)
        p = run_folder_job(
            'denoise',
            sorted((tmp_path / 'in').iterdir()),
            tmp_path / 'out',
            {'sigma': 25},
            workers=2,
            engine=f'redis://127.0.0.1:{port}/0',
            print_fn=lambda *a: None,
            poll=0.1,
        )
        assert (p['done'], p['failed']) == (3, 0)
        assert redis.Redis(port=port).llen('huey.redis.restorenb') == 0 or True
        assert all(verify(tmp_path / 'out' / f'{k}_restored.png')['ok'] for k in IMGS)
    finally:
        r.terminate()
        r.wait(10)


def test_conditional_diffusion_with_a_template_seed_steps_and_maps(tmp_path):
    "A served run folder (a tiny diffusion model): template prompt, seed, steps; edit and confidence maps come back."
    from restore_nb.core import save_model
    from restore_nb.models import DiffusionConfig, LatentDiffusion

    torch.manual_seed(0)
    save_model(LatentDiffusion(DiffusionConfig(widths=[16, 32], attention=[False, True], groups=8)).eval(),
               tmp_path/'tiny-diffusion')
    x = sample_images('astronaut', 16)['astronaut']
    with TestClient(create_app(root=str(tmp_path/'root'), models=(str(tmp_path/'tiny-diffusion'),))) as c:
        assert 'diffusion' in c.get('/v1/models').json()['tasks']
        body = dict(model='tiny-diffusion', template='noise-heavy', options={'steps': 2, 'seed': 3, 'samples': 2})
        r = c.post('/v1/restore', files={'image': png(x)}, data={k: json.dumps(v) if isinstance(v, dict) else v
                                                                  for k, v in body.items()}).json()
        assert r['model'] == 'tiny-diffusion' and set(r['maps']) == {'edit', 'confidence'}
        g = r['manifest']['generation']
        assert (g['seed'], g['steps'], g['prompt']) == (3, 2, 'a photo with heavy gaussian noise')
        assert r['confidence'] == r['manifest']['maps']['confidence']['mean']
        adh = r['prompt_adherence']
        assert adh['score'] is not None or 'skipped' in adh['note']
        again = c.post('/v1/restore', files={'image': png(x)}, data={k: json.dumps(v) if isinstance(v, dict) else v
                                                                      for k, v in body.items()}).json()
        assert again['manifest']['pixels'] == r['manifest']['pixels']     # same seed, same output (signed anew)


def test_a_monitoring_failure_never_loses_the_restored_image(tmp_path, monkeypatch):
    from restore_nb.serve import Server

    def broken(self, *a, **kw): raise ModuleNotFoundError("No module named 'pywt'")
    monkeypatch.setattr(Server, 'observe', broken)
    with TestClient(create_app(root=str(tmp_path))) as c:
        r = c.post('/v1/restore', files={'image': A}, data={'task': 'denoise'})
        assert r.status_code == 200 and r.json()['image'] and 'pywt' in r.json()['monitoring']
        assert 'restore_nb_errors_total{kind="monitoring"} 1.0' in c.get('/metrics').text
