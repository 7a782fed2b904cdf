"""Project-level checks that no single notebook can host: packaging, README sync, notebook hygiene."""
import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    return cfg['DEFAULT']


def test_readme_is_generated_from_index():
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'sync_readme.py'), '--check'], check=True)


def test_torch_is_pinned_and_every_import_is_declared():
    cfg = settings()
    requirements = shlex.split(cfg['requirements'])
    assert 'torch==2.13.0' in requirements, 'an unpinned torch pulls CUDA packages on a CPU machine'
    declared = {re.split(r'[<>=!\[ ]', r)[0].lower().replace('-', '_') for r in requirements}
    import_names = {'sklearn': 'scikit_learn', 'yaml': 'pyyaml'}
    # optional extras may only be imported inside a function (indented), never at module level
    optional = {re.split(r'[<>=!\[ ]', r)[0].lower().replace('-', '_') for r in shlex.split(cfg['offline_requirements'])}
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for module in (ROOT / 'hrkd').glob('*.py'):
        for top in re.findall(r'^\s*(?:from|import)\s+([A-Za-z_][\w]*)', module.read_text(), flags=re.M):
            name = import_names.get(top, top).lower()
            if top in stdlib or top == 'hrkd' or name in declared: continue
            if name in optional and re.search(rf'^\s+import {top}\b', module.read_text(), flags=re.M): continue
            missing.add(f'{module.name}: {top}')
    assert not missing, f'imported by the package but not in settings.ini requirements: {sorted(missing)}'


def test_parameters_tag_survives_nbdev_clean():
    from nbdev.clean import clean_nb
    cfg = settings()
    assert 'tags' in cfg['allowed_cell_metadata_keys'].split()
    nb = {'cells': [{'cell_type': 'code', 'source': 'seed = 42', 'metadata': {'tags': ['parameters'], 'foo': 1},
                     'outputs': [], 'execution_count': 3}], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    clean_nb(nb, allowed_cell_metadata_keys=cfg['allowed_cell_metadata_keys'].split())
    assert nb['cells'][0]['metadata'] == {'tags': ['parameters']}


def test_slow_and_gpu_cells_are_skipped_by_default():
    assert set(settings()['tst_flags'].split()) >= {'slow', 'gpu'}


def notebooks():
    return sorted(p for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)


@pytest.mark.parametrize('path', notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_exports_only_its_own_module(path):
    "NN_name.ipynb exports hrkd/name.py and nothing else; experiment notebooks export nothing."
    nb = json.loads(path.read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    targets = [m for src in code for m in re.findall(r'^#\|\s*default_exp\s+(\S+)', src, flags=re.M)]
    exports = any(re.search(r'^#\|\s*export', src, flags=re.M) for src in code)
    if path.parent.name == 'experiments' or path.stem == 'index':
        assert not targets and not exports, f'{path.name} must not export code'
        return
    assert re.fullmatch(r'\d\d[a-z]?_\w+', path.stem), f'library notebooks are named NN_name: {path.name}'
    assert targets == [path.stem.split('_', 1)[1]], f'{path.name} must export hrkd/{path.stem.split("_", 1)[1]}.py'
    size = path.stat().st_size
    assert size < 400_000, f'{path.name} is {size} bytes: keep outputs small'
