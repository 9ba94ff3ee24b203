"""restore_nb.streaming: RemoteZip over a real HTTP server on 127.0.0.1 (Range requests, faults, expiry), ByteCache."""
import io, random, time, zipfile
import pytest
from restore_nb.data.streaming import RemoteZip, ByteCache, LoopbackServer, RemoteZipError, CorruptMember, RangeReader


def make_zip(n=30, size=20_000, method=zipfile.ZIP_STORED, comment=b''):
    rnd = random.Random(1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', method) as z:
        for i in range(n):
            body = (
                rnd.randbytes(size) if method == zipfile.ZIP_STORED else bytes(rnd.choice(b'abc') for _ in range(size))
            )
            z.writestr(f'images_{i // 10 + 1:03d}/images/{i:08d}_000.png', body)
        z.comment = comment
    return buf.getvalue()


@pytest.mark.parametrize('method', [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize('comment', [b'', b'x' * 5000])
def test_reads_only_what_it_needs(tmp_path, method, comment):
    blob = make_zip(method=method, comment=comment)
    ref = zipfile.ZipFile(io.BytesIO(blob))
    with LoopbackServer(blob) as srv:
        rz = RemoteZip(srv.url(), cache=tmp_path / 'c', key='nih/1')
        assert rz.namelist() == ref.namelist()
        picked = rz.namelist()[3:8]
        for n in picked: assert rz.read(n) == ref.read(n) and rz.open(n).read() == ref.read(n)
        need = sum(ref.getinfo(n).compress_size for n in picked) + (len(blob) - ref.start_dir)
        # a long comment costs one 64 KiB tail read
        assert srv.bytes_sent == rz.stats.bytes <= 1.1 * need + (65536 + 22 if comment else 0)
        # tail, directory (or a 64 KiB tail holding both), members
        assert rz.stats.requests == 2 + len(picked)
        before, hits = srv.requests, rz.stats.cache_hits
        for n in picked: rz.read(n)
        assert srv.requests == before and rz.stats.cache_hits == hits + len(picked)
    # a new session (server gone) reads from the persistent cache by key, the URL never matters
    with LoopbackServer(blob) as srv2:
        rz2 = RemoteZip(srv2.url(), cache=tmp_path / 'c', key='nih/1')
        r0 = srv2.requests
        assert rz2.read(picked[0]) == ref.read(picked[0]) and srv2.requests == r0


def test_expired_urls_and_throttling_are_survived():
    blob = make_zip()
    with LoopbackServer(blob) as srv:
        rz = RemoteZip(lambda: srv.url(), key='nih/1', backoff=0.01)
        srv.expire()
        srv.faults = [429, 500, 502]
        name = rz.namelist()[0]
        assert rz.read(name) == zipfile.ZipFile(io.BytesIO(blob)).read(name)
        assert rz.stats.resolves == 2 and rz.stats.retries == 4
        srv.faults = [503] * 5
        with pytest.raises(RemoteZipError, match='gave up after 3 attempts') as e:
            RemoteZip(srv.url(), retries=2, backoff=0.01)
        assert 'token' not in str(e.value)                             # signed URLs never reach messages
        srv.faults = []
        with pytest.raises(RemoteZipError, match='HTTP '
                                                 '403'):            # a plain URL that expired: nothing to re-resolve
            RemoteZip(srv.url(token=0), retries=0)


def test_corrupt_and_truncated_archives(tmp_path):
    blob = make_zip()
    ref = zipfile.ZipFile(io.BytesIO(blob))
    bad = bytearray(blob)
    info = ref.getinfo(ref.namelist()[4])
    bad[info.header_offset + 100] ^= 0xFF
    with LoopbackServer(bytes(bad)) as srv:
        rz = RemoteZip(srv.url(), cache=tmp_path / 'c')
        with pytest.raises(CorruptMember, match='CRC'): rz.read(info.filename)
        assert len(ByteCache(tmp_path / 'c')) == 0                      # nothing bad was cached
        assert rz.read(ref.namelist()[5]) == ref.read(ref.namelist()[5])  # the rest of the archive still reads
    with LoopbackServer(blob[:len(blob) // 2]) as srv:
        with pytest.raises(RemoteZipError, match='not a zip'): RemoteZip(srv.url())
    with pytest.raises(ValueError, match='stable key'): RemoteZip(lambda: 'http://x/y.zip')
    with pytest.raises(ValueError, match='http'): RangeReader('ftp://x/y.zip')


def test_full_download_fallback_and_local_zip_behave_the_same(tmp_path):
    blob = make_zip()
    (tmp_path / 'a.zip').write_bytes(blob)
    ref = zipfile.ZipFile(io.BytesIO(blob))
    with LoopbackServer(blob, ranges=False) as srv:
        rz = RemoteZip(srv.url(), cache=tmp_path / 'c', key='nih/1')
        assert list((tmp_path / 'c' / 'archives').glob('*.zip'))           # downloaded once, into the cache folder
        n0 = srv.requests
        rz2 = RemoteZip(srv.url(), cache=tmp_path / 'c', key='nih/1')
        assert srv.requests == n0 + 1                                      # the probe only; the archive is reused
    local = RemoteZip(tmp_path / 'a.zip')
    for z in (rz, rz2, local):
        assert z.namelist() == ref.namelist() and z.read(ref.namelist()[7]) == ref.read(ref.namelist()[7])
    with pytest.raises(FileNotFoundError): RemoteZip(tmp_path / 'missing.zip')


def test_byte_cache_lru_atomic_and_safe(tmp_path):
    c = ByteCache(tmp_path, max_bytes=300)
    for k in ('a', 'b', 'c'):
        c.put(k, k.encode() * 100)
        time.sleep(0.02)
    c.get('a')
    time.sleep(0.02)
    c.put('d', b'd' * 100)                                              # evicts b, the least recently used
    assert [c.get(k) is not None for k in 'abcd'] == [True, False, True, True] and c.nbytes == 300
    c.put('../../../escape', b'x')
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in tmp_path.rglob('*'))
    assert not [p for p in tmp_path.rglob('.*') if p.is_file()]          # no temporary files left behind
    c.put('huge', b'h' * 301)
    assert c.get('huge') is None  # larger than the cache: not kept
    with pytest.raises(ValueError, match='max_bytes'): ByteCache(tmp_path, 0)


def test_kaggle_credentials_order(tmp_path, monkeypatch):
    from restore_nb.data.streaming import kaggle_credentials
    for k in ('KAGGLE_API_TOKEN', 'KAGGLE_USERNAME', 'KAGGLE_KEY'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('KAGGLE_CONFIG_DIR', str(tmp_path))
    with pytest.raises(RemoteZipError, match='KAGGLE_API_TOKEN.*kaggle.json.*Colab secrets'): kaggle_credentials()
    (tmp_path / 'kaggle.json').write_text('{"username": "u", "key": "k"}')
    assert kaggle_credentials() == {'auth': ('u', 'k')}
    monkeypatch.setenv('KAGGLE_USERNAME', 'eu')
    monkeypatch.setenv('KAGGLE_KEY', 'ek')
    assert kaggle_credentials() == {'auth': ('eu', 'ek')}
    monkeypatch.setenv('KAGGLE_API_TOKEN', 'tok')
    assert kaggle_credentials() == {'headers': {'Authorization': 'Bearer tok'}}
    (tmp_path / 'kaggle.json').write_text('{oops')
    monkeypatch.delenv('KAGGLE_API_TOKEN')
    monkeypatch.delenv('KAGGLE_USERNAME')
    with pytest.raises(RemoteZipError, match='not valid JSON'): kaggle_credentials()


def test_kaggle_source_end_to_end(tmp_path, monkeypatch):
    """ImageSource('kaggle:OWNER/DATASET/PATH'): a fake Kaggle API redirects to a signed URL on the loopback server,
    which expires mid-run; a damaged member is skipped and counted."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from restore_nb.core import save_image, sample_images
    from restore_nb.data import ImageSource
    from restore_nb.data import streaming
    imgs = sample_images(['astronaut', 'coffee', 'chelsea', 'rocket'], size=48)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        for n, im in imgs.items():
            save_image(im, tmp_path / f'{n}.png')
            z.write(tmp_path / f'{n}.png', f'images_001/images/{n}.png')
        z.writestr('Data_Entry_2017.csv', 'Image Index,Finding Labels\n')
    data = bytearray(buf.getvalue())
    off = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo('images_001/images/coffee.png').header_offset
    data[off + 90] ^= 0xFF
    calls = []
    with LoopbackServer(bytes(data)) as srv:
        class Api(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                calls.append((self.path, self.headers.get('Authorization')))
                self.send_response(302)
                self.send_header('Location', srv.url())
                self.send_header('Content-Length', '0')
                self.end_headers()
        api = ThreadingHTTPServer(('127.0.0.1', 0), Api)
        threading.Thread(target=api.serve_forever, daemon=True).start()
        try:
            monkeypatch.setenv('RESTORE_NB_KAGGLE_API', f'http://127.0.0.1:{api.server_address[1]}/api/v1')
            monkeypatch.setenv('KAGGLE_API_TOKEN', 'tok')
            monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path / 'home'))
            src = ImageSource('kaggle:nih-chest-xrays/data/images_001/')
            # archive order, CSV outside PATH left out
            assert src.names == [f'images_001/images/{n}' for n in imgs]
            assert calls == [('/api/v1/datasets/download/nih-chest-xrays/data', 'Bearer tok')]
            # the signed URL expires: the next read resolves again
            srv.expire()
            before = streaming.skipped()
            out = [src[i] for i in range(len(src))]
            # coffee skipped, its neighbour returned instead
            assert len(calls) == 2 and streaming.skipped() == before + 1
            assert all(o.shape == (3, 48, 48) for o in out)
            # members cached under the persistent folder
            assert any((tmp_path / 'home' / 'streaming').rglob('*'))
        finally:
            api.shutdown()
            api.server_close()
            streaming._HANDLES.clear()
    with pytest.raises(ValueError, match='OWNER/DATASET'): streaming.KaggleURL('just-a-name')


def _nih_tree(root):
    from restore_nb.core import save_image, sample_images
    gray = list(sample_images(['camera', 'moon', 'coins'], size=24, mode='gray').values())
    rows, tv, te = [], [], []
    for k in range(30):
        img = f'{k:08d}_000.png'
        save_image(gray[k % 3], root / f'images_{k // 10 + 1:03d}/images/{img}')
        rows.append(
            f"{img},{'No Finding' if k % 3 else 'Mass|Nodule'},0,{k // 3},40,F,{'AP' if k % 5 == 0 else 'PA'},"
            "2500,2048,0.14,0.14,"
        )
        (te if k >= 24 else tv).append(img)
    (root / 'Data_Entry_2017.csv').write_text(
        'Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient '
        'Gender,View Position,'
        'OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n' + '\n'.join(rows) + '\n'
    )
    (root / 'train_val_list.txt').write_text('\n'.join(tv))
    (root / 'test_list.txt').write_text('\n'.join(te))


def test_nih_layout_from_a_folder_and_over_http(tmp_path, monkeypatch):
    from restore_nb.data.streaming import NIHChestXray, read_nih_entries
    from restore_nb.data import streaming
    _nih_tree(tmp_path / 'nih')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        for p in sorted((tmp_path / 'nih').rglob('*')):
            if p.is_file(): z.write(p, p.relative_to(tmp_path / 'nih').as_posix())
    monkeypatch.setenv('RESTORE_NB_HOME', str(tmp_path / 'home'))
    with LoopbackServer(buf.getvalue()) as srv:
        try:
            results = []
            for src in (tmp_path / 'nih', srv.url()):
                nih = NIHChestXray(src, views=('PA', 'AP'), valid_frac=0.25)
                tr, va = nih.train()
                ts, table = nih.test()
                t = nih.table.set_index('image')
                pat = lambda s: {t.loc[n.rsplit('/', 1)[-1] + '.png', 'patient'] for n in s.names}
                assert not pat(tr) & pat(va) and not pat(tr) & pat(ts)                  # patient-wise
                assert all(t.loc[n.rsplit('/', 1)[-1] + '.png', 'healthy'] for n in tr.names + va.names)
                assert table['anomalous'].tolist() == [not h for h in table['healthy']] and table['anomalous'].any()
                assert tr[0].shape == (1, 24, 24)
                results.append((tr.names, va.names, ts.names))
            assert results[0] == results[1]                                        # folder and remote zip agree
            pa = NIHChestXray(tmp_path / 'nih')                                    # default: PA only
            assert set(pa.test()[1]['view']) == {'PA'}
        finally: streaming._HANDLES.clear()
    with pytest.raises(ValueError, match='missing columns'): read_nih_entries(b'a,b\n1,2\n')
    with pytest.raises(FileNotFoundError, match='test_list.txt'):
        (tmp_path / 'nih' / 'test_list.txt').unlink()
        NIHChestXray(tmp_path / 'nih')
