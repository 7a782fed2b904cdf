"""The experiment notebooks under papermill (nbs/experiments), and `hrkd batch` over them, on the toy data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / 'nbs' / 'experiments'
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')


def _outputs(notebook: Path) -> str:
    "Everything an executed notebook printed or displayed, as text."
    cells = json.loads(notebook.read_text())['cells']
    texts = []
    for cell in cells:
        for out in cell.get('outputs', []):
            texts.append(''.join(out.get('text', '')))
            texts += [''.join(v) for k, v in out.get('data', {}).items() if k.startswith('text/')]
    return '\n'.join(texts)


def test_pipeline_notebook_takes_its_parameters_from_the_papermill_command_line(tmp_path):
    out = tmp_path / 'run43'
    done = subprocess.run([sys.executable, '-m', 'papermill', str(EXPERIMENTS / 'pipeline.ipynb'), str(tmp_path / 'run43.ipynb'),
                           '-p', 'dataset', 'toy', '-p', 'seed', '43', '-p', 'methods', 'mtl>hrkd', '-p', 'out', str(out),
                           '-p', 'efficiency_repeats', '0', '--no-progress-bar'], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / 'pipeline.json').read_text())['seed'] == 43
    assert json.loads((out / 'mtl-hrkd' / 'run.json').read_text())['seed'] == 43
    shown = _outputs(tmp_path / 'run43.ipynb')
    assert 'HRKD-teacher (mtl) -> HRKD' in shown and f"results: {out / 'results'}" in shown


def test_tables_notebook_reproduces_the_earlier_aggregate(tmp_path):
    import papermill
    papermill.execute_notebook(str(EXPERIMENTS / 'tables.ipynb'), str(tmp_path / 'tables.ipynb'), kernel_name='python3',
                               parameters={'results_dir': str(ROOT / 'results' / 'amazon-offline-h100'), 'out': str(tmp_path)},
                               progress_bar=False, cwd=str(EXPERIMENTS))
    assert 'numbers of seeds.json reproduced exactly' in _outputs(tmp_path / 'tables.ipynb')
    text = (tmp_path / 'tables.md').read_text()
    assert '| HRKD-teacher (mtl) -> HRKD | 4 | 87.31 ± 1.11 (87.4) |' in text, text[:2000]


def test_batch_skips_finished_cells_reports_failures_and_runs_the_analyses(tmp_path):
    from hrkd.batch import grid_from_options, run_batch
    from hrkd.cli import main
    out = tmp_path / 'batch'
    settings = ['max_steps=2', 'efficiency_repeats=0']
    methods = 'single>tinybert,mtl>hrkd'  # Fig. 2's baseline and HRKD: enough for every analysis notebook, and quick
    grid = grid_from_options(datasets='toy', seeds='42,44', methods=methods, few_shot='0.5', settings=settings)
    first = run_batch(grid, out, limit=1, tables=False, log=lambda line: None)  # as if stopped after the first cell
    assert (first['finished'], first['left']) == (['toy/single-tinybert+mtl-hrkd/fs0.5/s42'], ['toy/single-tinybert+mtl-hrkd/fs0.5/s44'])
    done_first = out / 'toy' / 'single-tinybert+mtl-hrkd' / 'fs0.5' / 's42'
    stamps = {p: p.stat().st_mtime_ns for p in (done_first / 'pipeline.ipynb', done_first / 'results' / 'summary.json')}
    broken = tmp_path / 'broken.csv'  # a file that passes the grid check (it exists) and fails in the notebook
    broken.write_text('a,b\n1,2\n')
    code = main(['batch', '--out', str(out), '--datasets', f'toy,{broken}', '--seeds', '42,44', '--methods', methods,
                 '--few-shot', '0.5', *[a for s in settings for a in ('--set', s)]])
    assert code == 3  # some cells failed
    report = json.loads((out / 'batch.json').read_text())
    assert report['skipped'] == ['toy/single-tinybert+mtl-hrkd/fs0.5/s42'] and report['finished'] == ['toy/single-tinybert+mtl-hrkd/fs0.5/s44']
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished cell was not run again
    assert sorted(f['cell'] for f in report['failed']) == ['broken/single-tinybert+mtl-hrkd/fs0.5/s42', 'broken/single-tinybert+mtl-hrkd/fs0.5/s44']
    for failed in report['failed']:
        assert Path(failed['notebook']).is_file() and 'broken.csv' in failed['error'], failed['error']
    for seed in (42, 44):  # the injected parameters took effect
        cell = out / 'toy' / 'single-tinybert+mtl-hrkd' / 'fs0.5' / f's{seed}'
        assert json.loads((cell / 'pipeline.json').read_text())['seed'] == seed
        assert json.loads((cell / 'mtl-hrkd' / 'run.json').read_text())['seed'] == seed
    assert [(Path(a['notebook']).name, a['status']) for a in report['analyses']] == \
        [('tables.ipynb', 'finished'), ('few_shot.ipynb', 'finished'), ('case_study.ipynb', 'finished')]
    assert {'tables.md', 'tables.json', 'few_shot.md', 'few_shot.png', 'case_study.md', 'case_study.json'} <= {p.name for p in out.iterdir()}
    assert 'HRKD-teacher (mtl) -> HRKD' in (out / 'tables.md').read_text()
