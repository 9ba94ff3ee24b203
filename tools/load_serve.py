"""Bounded load on loopback: a real `restore-nb serve` process, N concurrent httpx clients for a fixed time per image
size, then a burst of jobs against a small queue. Writes nbs/benchmarks/results/serve.json and serve.md.

    python tools/load_serve.py --clients 4 --seconds 60 --sizes 256,1024
"""

import argparse, io, json, os, socket, subprocess, sys, threading, time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from restore_nb.core import write_json, write_text  # noqa: E402


def png(size: int, seed: int = 0) -> bytes:
    g = np.random.default_rng(seed)
    x = np.clip(
        np.linspace(0, 1, size)[None, :, None] * np.ones((size, size, 3)) + g.normal(0, 25 / 255, (size, size, 3)), 0, 1
    )
    b = io.BytesIO()
    Image.fromarray((x * 255).astype(np.uint8)).save(b, 'PNG')
    return b.getvalue()


def rss_mb(pid: int) -> float:
    return int(Path(f'/proc/{pid}/status').read_text().split('VmRSS:')[1].split()[0]) / 1024


def load(url: str, data: bytes, clients: int, seconds: float, pid: int) -> dict:
    lat, errors, sent, stop, mem = [], [], [0], time.monotonic() + seconds, []
    lock = threading.Lock()

    def client():
        with httpx.Client(base_url=url, timeout=600) as c:
            while time.monotonic() < stop:
                with lock:
                    sent[0] += 1
                t0 = time.perf_counter()
                try:
                    r = c.post('/v1/restore', files={'image': ('x.png', data)}, data={'task': 'denoise'})
                    ok = r.status_code == 200 and len(r.json()['image']) > 0
                except httpx.HTTPError as e:
                    ok, r = False, e
                with lock:
                    (lat.append(time.perf_counter() - t0) if ok else errors.append(str(getattr(r, 'status_code', r))))

    ts = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    while any(t.is_alive() for t in ts):
        mem.append(rss_mb(pid))
        time.sleep(0.5)
    wall = time.monotonic() - t0
    q = lambda p: round(float(np.percentile(lat, p)), 3) if lat else None
    return dict(
        clients=clients,
        seconds=round(wall, 1),
        sent=sent[0],
        ok=len(lat),
        errors=len(errors),
        lost=sent[0] - len(lat) - len(errors),
        rps=round(len(lat) / wall, 3),
        p50=q(50),
        p95=q(95),
        p99=q(99),
        peak_rss_mb=round(max(mem)),
        error_kinds=sorted(set(errors)),
    )


def engines(n: int = 16, size: int = 256) -> dict:
    "One folder job of n images on each engine (in this process): wall time, restoration time, queue overhead."
    import shutil, tempfile
    from restore_nb.serve.jobs import run_folder_job
    out, redis_proc = {}, None
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d/'in').mkdir()
        for i in range(n): (d/'in'/f'{i:03d}.png').write_bytes(png(size, i))
        runs = [('sqlite', 'sqlite', 1), ('sqlite', 'sqlite', 2)]
        if shutil.which('redis-server'):
            with socket.socket() as s:
                s.bind(('127.0.0.1', 0))
                rport = s.getsockname()[1]
            redis_proc = subprocess.Popen(['redis-server', '--port', str(rport), '--save', '', '--appendonly', 'no'],
                                          stdout=subprocess.DEVNULL)
            time.sleep(1)
            runs.append(('redis', f'redis://127.0.0.1:{rport}/0', 1))
        try:
            warm = sorted((d/'in').iterdir())[:2]                        # imports and first model load, not measured
            run_folder_job('denoise', warm, d/'warm-up', {}, print_fn=lambda *a: None, poll=0.05)
            for name, engine, workers in runs:
                t0 = time.perf_counter()
                p = run_folder_job('denoise', sorted((d/'in').iterdir()), d/f'out_{name}_{workers}', {},
                                   workers=workers, engine=engine, print_fn=lambda *a: None, poll=0.05)
                wall = time.perf_counter() - t0
                work = sum(im['seconds'] for im in p['images'])
                out[f'{name}, {workers} worker(s)'] = dict(images=n, size=size, done=p['done'], wall_s=round(wall, 2),
                                                          images_per_s=round(n / wall, 3),
                                                          restore_s=round(work, 2),
                                                          overhead_s_per_image=round((wall - work / workers) / n, 3))
                print(name, workers, out[f'{name}, {workers} worker(s)'], flush=True)
        finally:
            if redis_proc:
                redis_proc.terminate()
                redis_proc.wait(10)
    return out


def engines_md(e: dict) -> list:
    md = ['', '| engine | images | done | wall s | images/s | restoration s | queue overhead s/image |',
          '|---|---|---|---|---|---|---|']
    return md + [f"| {k} | {r['images']} ({r['size']}²) | {r['done']} | {r['wall_s']} | {r['images_per_s']} | "
                 f"{r['restore_s']} | {r['overhead_s_per_image']} |" for k, r in e.items()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--clients', type=int, default=4)
    ap.add_argument('--seconds', type=float, default=60)
    ap.add_argument('--sizes', default='256,1024')
    ap.add_argument('--engines_only', action='store_true', help='only the job-engine comparison, merged into --out')
    ap.add_argument('--out', default=str(ROOT / 'nbs/benchmarks/results/serve.json'))
    a = ap.parse_args()
    if a.engines_only:
        res = json.loads(Path(a.out).read_text())
        res['engines'] = engines()
        write_json(res, a.out)
        md = Path(a.out).with_suffix('.md').read_text().split('\n\n| engine')[0].rstrip('\n')
        write_text(md + '\n' + '\n'.join(engines_md(res['engines'])) + '\n', Path(a.out).with_suffix('.md'))
        return
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    root = Path(os.environ.get('TMPDIR', '/tmp')) / f'restore_nb_load_{port}'
    t0 = time.monotonic()
    p = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import sys; from restore_nb.cli import main; sys.exit(main())',
            'serve',
            '--port',
            str(port),
            '--root',
            str(root),
            '--max_queue',
            '8',
            '--job_workers',
            '1',
        ]
    )
    url = f'http://127.0.0.1:{port}'
    while True:
        try:
            if httpx.get(url + '/healthz', timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    startup = time.monotonic() - t0
    try:
        rows = {}
        for size in map(int, a.sizes.split(',')):
            httpx.post(
                url + '/v1/restore', files={'image': png(size, 1)}, data={'task': 'denoise'}, timeout=600
            )  # warm-up
            rows[f'{size}x{size}'] = load(url, png(size), a.clients, a.seconds, p.pid)
            print(size, rows[f'{size}x{size}'], flush=True)
        codes = [
            httpx.post(
                url + '/v1/jobs', files=[('images', png(64, i)) for i in range(3)], data={'task': 'denoise'}, timeout=60
            ).status_code
            for i in range(5)
        ]
        queue = dict(max_queue=8, jobs_of_3=5, statuses=codes, accepted=codes.count(202), refused_429=codes.count(429))
    finally:
        p.terminate()
        p.wait(60)
    import torch

    res = dict(
        protocol=dict(
            server='restore-nb serve (uvicorn, 1 restoration worker, 1 job worker), loopback',
            model='denoise-rgb (zoo, Swin-UNet tiny, 0.54 M parameters), whole image, no tiles',
            input='synthetic gradient + Gaussian noise σ 25, PNG',
            clients=a.clients,
            seconds_per_size=a.seconds,
            hardware=f'{os.cpu_count()} CPU cores, no GPU',
            torch=torch.__version__,
            startup_seconds=round(startup, 1),
        ),
        load=rows,
        queue=queue,
    )
    res['engines'] = engines()
    write_json(res, a.out)
    md = [
        '| image | clients | requests/s | p50 s | p95 s | p99 s | ok | errors | lost | peak RSS MB |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    md += [
        '| ' + ' | '.join(str(v) for v in (k, *(r[c] for c in ('clients', 'rps', 'p50', 'p95', 'p99', 'ok', 'errors',
                                                                'lost', 'peak_rss_mb')))) + ' |'
        for k, r in rows.items()
    ]
    md += [
        '',
        f"Queue limit {queue['max_queue']} images, 5 jobs of 3 images posted at once: {queue['accepted']} accepted, "
        f"{queue['refused_429']} refused with 429. Server start to first /healthz: {startup:.1f} s.",
    ]
    md += engines_md(res['engines'])
    write_text('\n'.join(md) + '\n', Path(a.out).with_suffix('.md'))


if __name__ == '__main__':
    main()
