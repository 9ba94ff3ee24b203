"""The docs a reader can trust: saved outputs are clean, code is shown, commands name data a reader can get, the
repository is named in one place, and the numbers a page quotes are in the results it shows."""
import json, re, sys
from pathlib import Path
import pytest
from conftest import ROOT, run

sys.path.insert(0, str(ROOT / 'tools'))
from proc_nbs import notebooks

NBS = ROOT / 'nbs'
RESULTS = NBS / 'benchmarks' / 'results'
MACHINE_PATH = re.compile(r'(/work/|/tmp/|/home/|/root/|/Users/|site-packages|\.\./shared\b)')
WARNING = re.compile(r'\b(\w*Warning|warnings\.warn)\b')
REPAINT = re.compile(r'\r(?!\n)|█')


def _cells(nb: Path):
    return json.loads(nb.read_text())['cells']


def _src(c): return ''.join(c['source'])


def _texts(cell):
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream': yield o['name'], ''.join(o['text'])
        elif o['output_type'] == 'error': yield 'error', f"{o.get('ename')}: {o.get('evalue')}"
        else:
            for k, v in o.get('data', {}).items():
                if k.startswith('text/'): yield k, ''.join(v)


def _problems(text: str, kind: str) -> list:
    found = [what for what, bad in (('stderr output', kind == 'stderr'), ('an error', kind == 'error'),
                                     ('a machine path', MACHINE_PATH.search(text)), ('a warning', WARNING.search(text)),
                                     ('a progress bar', REPAINT.search(text)),
                                     (f'{len(text) // 1000} KB of text', len(text) > 20_000)) if bad]
    return found


@pytest.mark.parametrize('nb', notebooks(NBS), ids=lambda p: str(p.relative_to(NBS)))
def test_saved_outputs_are_clean(nb):
    "No warnings, stderr, errors, machine paths, progress repaints or text dumps in the outputs a page shows."
    bad = [f"cell {i}: {', '.join(p)}: {t[:120]!r}" for i, c in enumerate(_cells(nb)) for k, t in _texts(c)
           if (p := _problems(t, k))]
    assert not bad, f"{nb.relative_to(ROOT)}:\n" + '\n'.join(bad)


def test_colab_notebooks_carry_no_outputs_and_ask_for_a_gpu():
    for nb in sorted((ROOT / 'colab').glob('*.ipynb')):
        d = json.loads(nb.read_text())
        assert not [c for c in d['cells'] if c.get('outputs')], f"{nb.name} has saved outputs"
        assert d['metadata'].get('accelerator') == 'GPU' and d['metadata']['colab']['gpuType'], nb.name


def test_pages_name_data_a_reader_can_get():
    "Commands and prose say `std:NAME` (restore_nb.data.dataset), never a folder of this machine; results too."
    bad = [f"{nb.relative_to(ROOT)} cell {i}" for nb in notebooks(NBS) for i, c in enumerate(_cells(nb))
           if MACHINE_PATH.search(_src(c))]
    bad += [str(p.relative_to(ROOT)) for p in RESULTS.glob('*.*') if p.suffix in ('.json', '.md')
            and MACHINE_PATH.search(p.read_text())]
    bad += [str(p.relative_to(ROOT)) for p in (ROOT / 'restore_nb' / 'zoo').rglob('card.json')
            if MACHINE_PATH.search(p.read_text())]
    assert not bad, f"machine paths: {bad}"


def test_exported_code_is_shown():
    "`#| export` hides a cell's code on the page; the library's methods use `#| exports` (code shown, folded open)."
    hidden = [f"{nb.relative_to(ROOT)} cell {i}" for nb in notebooks(NBS) for i, c in enumerate(_cells(nb))
              if c['cell_type'] == 'code' and re.match(r'#\|\s*export\s*$', _src(c).split('\n', 1)[0])
              and re.search(r'^(def|class|async def) ', _src(c), flags=re.M)]
    assert not hidden, f"code hidden from the docs: {hidden}"


def test_results_tables_are_not_pages():
    "benchmarks/results/*.md are data the pages show, not pages of their own."
    quarto = (NBS / '_quarto.yml').read_text()
    assert '"!benchmarks/results/"' in quarto


def test_repository_is_named_in_one_place():
    "pyproject.toml's [project.urls] is the one place; the Colab notebooks and site settings are written from it."
    r = run([sys.executable, ROOT / 'tools' / 'sync_urls.py', '--check'])
    assert r.returncode == 0, r.stdout + r.stderr
    import tomllib
    urls = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['urls']
    hosts = {m.removesuffix('.git') for p in [*notebooks(NBS), *(ROOT / 'colab').glob('*.ipynb'), ROOT / 'README.md']
             for m in re.findall(r'https://github\.com/restore[\w-]*/[\w.-]+|https://[\w-]+\.github\.io/[\w.-]+',
                                 p.read_text())}
    assert hosts <= {urls['Repository'].rstrip('/'), urls['Documentation'].rstrip('/')}, hosts


# ---- the numbers a page quotes --------------------------------------------------------------------------
def _numbers(obj, out):
    if isinstance(obj, bool): return out
    if isinstance(obj, (int, float)): out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values(): _numbers(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj: _numbers(v, out)
    elif isinstance(obj, str):
        out.extend(float(m) for m in re.findall(r'(?<![\w.])-?\d+\.\d+(?![\w.])', obj))
    return out


def _quoted(md: str):
    "Absolute figures a page states in prose: 'NN.NN dB' (two decimals)."
    md = re.sub(r'`[^`]*`|\$[^$]*\$', '', md)
    for m in re.finditer(r'(?<![+\-−±\d.])(\d{1,3}\.\d{2}) dB', md):
        before = md[max(0, m.start() - 12):m.start()]
        after = md[m.end():m.end() + 16]
        diff_before = re.search(r'(by|of|\+|−|-|to|gains?|loses?)\s*$', before)
        if (diff_before and not re.search(r'(from|at|reaches)\s*$', before)
                or re.match(r'\s*(below|above|behind|ahead|better|worse|over|under|more|less|higher|lower)', after)):
            continue                                   # a difference, not a figure of the results
        yield m.group(1)


def _benchmark_pages():
    pages = {}
    for nb in sorted((NBS / 'benchmarks').glob('*.ipynb')):
        text = '\n'.join(_src(c) for c in _cells(nb))
        files = sorted({RESULTS / f for f in re.findall(r'results/([\w.-]+\.json)', text) if (RESULTS / f).exists()})
        if files: pages[nb] = files
    return pages


PAGES = _benchmark_pages()


@pytest.mark.parametrize('nb', list(PAGES), ids=lambda p: p.name)
def test_benchmark_pages_quote_their_results(nb):
    "Every 'NN.NN dB' a benchmark page's prose states is a value of the results JSON it shows (rounded as quoted)."
    values = []
    for f in PAGES[nb]: _numbers(json.loads(f.read_text()), values)
    have = {f'{v:.2f}' for v in values}
    md = '\n'.join(_src(c) for c in _cells(nb) if c['cell_type'] == 'markdown')
    missing = sorted({q for q in _quoted(md) if q not in have})
    assert not missing, (f"{nb.relative_to(ROOT)} quotes {missing} dB, which its results "
                         f"({[f.name for f in PAGES[nb]]}) do not hold")


def test_docs_processing_runs_no_page_code():
    """nbdev-proc-nbs executes every cell of a documented page that imports something; a cell that imports and also
    runs code is executed out of context when the docs are built (and fails there). Imports go in the page's first
    cells (the full processing runs in `make test-slow` and the deploy workflow)."""
    import ast
    bad = []
    for nb in notebooks(NBS):
        cells = _cells(nb)
        if not any(c['cell_type'] == 'code' and re.match(r'#\|\s*export', _src(c)) for c in cells): continue
        for i, c in enumerate(cells):
            src = _src(c)
            skip = re.match(r'#\|\s*(export|hide|eval:\s*false)', src)        # exports, and the hidden import cells
            if c['cell_type'] != 'code' or skip: continue
            try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
            except SyntaxError: continue
            top = tree.body
            if (any(isinstance(t, (ast.Import, ast.ImportFrom)) for t in top)
                    and any(isinstance(t, (ast.Expr, ast.Assign)) for t in top)):
                bad.append(f"{nb.relative_to(ROOT)} cell {i}")
    assert not bad, f"cells that import and run code (move the imports up): {bad}"
