"""Project hygiene: notebooks are clean and exported, README is generated, docs process, the wheel builds."""
import re, shutil, sys, zipfile
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run

sys.path.insert(0, str(ROOT / 'tools'))
from proc_nbs import notebooks


def _project_files():
    "Files git tracks plus untracked, non-ignored ones (what a commit would contain)."
    if (ROOT / '.git').exists():
        r = run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'])
        if r.returncode == 0: return [Path(p) for p in r.stdout.split('\0') if p and (ROOT / p).exists()]
    return [p.relative_to(ROOT) for d in ('nbs', 'restore_nb', 'tools') for p in (ROOT / d).rglob('*')
            if p.is_file() and '__pycache__' not in p.parts] + [Path('pyproject.toml'), Path('README.md'),
                                                                Path('LICENSE')]


@pytest.fixture(scope='module')
def copy(tmp_path_factory):
    "A copy of the project as it would be committed."
    dst = tmp_path_factory.mktemp('proj')
    for rel in _project_files():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    return dst


def _diff(a: Path, b: Path, sub: str):
    fa = {p.relative_to(a / sub) for p in (a / sub).rglob('*') if p.is_file() and '__pycache__' not in p.parts}
    fb = {p.relative_to(b / sub) for p in (b / sub).rglob('*') if p.is_file() and '__pycache__' not in p.parts}
    return sorted(
        str(Path(sub) / p)
        for p in fa ^ fb | {p for p in fa & fb if (a / sub / p).read_bytes() != (b / sub / p).read_bytes()}
    )


def test_no_settings_ini():
    assert not (ROOT / 'settings.ini').exists(), ("nbdev 3 refuses to run beside a settings.ini: configuration lives "
                                                  "in pyproject.toml")


def test_export_leaves_no_diff(copy):
    r = run([BIN / 'nbdev-export'], cwd=copy)
    assert r.returncode == 0, r.stderr
    changed = _diff(ROOT, copy, 'restore_nb')
    assert not changed, ("restore_nb/ is not what the notebooks export; run `make prepare` and commit. Differs: "
                         f"{changed}")


def test_clean_leaves_no_diff(copy):
    for args in ([], ['--fname', 'colab']):
        r = run([BIN / 'nbdev-clean', *args], cwd=copy)
        assert r.returncode == 0, r.stderr
    changed = _diff(ROOT, copy, 'nbs') + _diff(ROOT, copy, 'colab')
    assert not changed, f"notebooks are not clean; run `make prepare` (nbdev-clean) and commit: {changed}"


def test_readme_is_generated_from_index():
    r = run([sys.executable, ROOT / 'tools' / 'make_readme.py', '--check'])
    assert r.returncode == 0, r.stderr


@pytest.mark.slow   # 2 min: nbdev-proc-nbs over every page; the deploy workflow runs it on every push too
def test_docs_processing(copy):
    "nbdev-proc-nbs (the docs pre-processing step) succeeds and processes every notebook."
    r = run([sys.executable, copy / 'tools' / 'proc_nbs.py', '--root', copy])
    assert r.returncode == 0, r.stdout + r.stderr


def test_sidebar_lists_every_notebook_once():
    side = (ROOT / 'nbs' / 'sidebar.yml').read_text()
    listed = re.findall(r'^\s*-\s+(\S+\.ipynb)\s*$', side, flags=re.M)
    nbs = [str(p.relative_to(ROOT / 'nbs')) for p in notebooks(ROOT / 'nbs')]
    assert sorted(listed) == sorted(nbs), f"nbs/sidebar.yml lists {sorted(listed)}, notebooks are {sorted(nbs)}"


def test_ci_runs_the_readme_test_command():
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()
    assert 'make test' in (ROOT / 'README.md').read_text() and 'make demo' in (ROOT / 'README.md').read_text()


def test_wheel_builds_with_entry_point(tmp_path):
    src = tmp_path / 'src'
    for rel in ['pyproject.toml', 'README.md', 'LICENSE']:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    shutil.copytree(ROOT / 'restore_nb', src / 'restore_nb', ignore=shutil.ignore_patterns('__pycache__'))
    r = run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '-w', tmp_path / 'dist', src], timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    whl, = (tmp_path / 'dist').glob('restore_nb-*.whl')
    version = re.search(r'__version__\s*=\s*"(.*?)"', (ROOT / 'restore_nb' / '__init__.py').read_text()).group(1)
    assert f'restore_nb-{version}-' in whl.name
    names = zipfile.ZipFile(whl).namelist()
    assert {'restore_nb/__init__.py', 'restore_nb/core.py', 'restore_nb/cli.py'} <= set(names)
    ep = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'restore-nb = restore_nb.cli:main' in zipfile.ZipFile(whl).read(ep).decode()
    assert any(n.endswith('licenses/LICENSE') for n in names)


# ---- conventions of the library's layout (issue 18) ----------------------------------------------------
def _code_lines():
    for p in (ROOT / 'restore_nb').rglob('*.py'):
        if p.name == '_modidx.py': continue
        yield from p.read_text().splitlines()


def test_ruff_passes_on_the_package_the_notebooks_and_the_tests():
    ruff = BIN / 'ruff'
    if not ruff.exists(): pytest.skip('ruff is a dev dependency: pip install -e ".[dev]"')
    r = run([ruff, 'check', 'restore_nb', 'nbs', 'tests', 'tools'])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_line_length_and_no_semicolons():
    lines = list(_code_lines())
    long = [l for l in lines if len(l) > 120]
    assert len(long) / len(lines) < 0.01, f"{len(long)} of {len(lines)} lines are over 120 characters"


def test_export_cells_are_small():
    "Export cells of about one idea: on average under 20 lines."
    import json
    sizes = []
    for p in (ROOT / 'nbs').rglob('*.ipynb'):
        for c in json.loads(p.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and re.match(r'#\|\s*export', src): sizes.append(len(src.splitlines()))
    assert sizes and sum(sizes) / len(sizes) < 20, f"export cells average {sum(sizes) / len(sizes):.1f} lines"


def test_benchmarks_live_in_bench_and_the_cli_names_no_task():
    outside = [p for p in (ROOT / 'restore_nb').rglob('*.py') if 'bench' not in p.parts and p.name != '_modidx.py'
               and re.search(r'^def bench_', p.read_text(), flags=re.M)]
    assert not outside, f"bench_* functions outside restore_nb/bench/: {outside}"
    from restore_nb.tasks import TASKS
    cli = (ROOT / 'restore_nb' / 'cli.py').read_text()
    assert sorted(TASKS) == sorted(['deblur', 'demosaic', 'denoise', 'sr', 'anomaly', 'vae', 'diffusion', 'domain'])
    assert not [t for t in TASKS if re.search(rf"['\"]{t}['\"]", cli)], 'cli.py names a task'
