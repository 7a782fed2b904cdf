"""tools/campaign.py: the order of a campaign's cells, their folder names, the one-machine-per-seed check, the
progress blocks of two campaigns that share a README, and which files count as records (no training here)."""
import importlib.util
import json
from pathlib import Path

import pytest

from hrkd.batch import Cell

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('campaign', ROOT / 'tools' / 'campaign.py')
campaign = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(campaign)


@pytest.mark.parametrize('name', sorted(campaign.CAMPAIGNS))
def test_cell_folders_are_the_ones_hrkd_batch_writes(name):
    spec = campaign.CAMPAIGNS[name]
    for share, seed, cell, folder in campaign.units(spec):
        assert folder == Cell(spec['datasets'], seed, cell['methods'], share).name


def test_few_shot_cells_run_share_by_share_and_others_seed_by_seed():
    order = [(share, seed) for share, seed, _, _ in campaign.units(campaign.CAMPAIGNS['mnli-cpu'])]
    assert order[:6] == [(0.02, 42), (0.02, 43), (0.02, 44), (0.02, 45), (0.02, 46), (0.05, 42)]
    assert len(order) == 20 and sorted(set(order)) == sorted(order)
    spec = {'folder': 'x', 'datasets': 'amazon', 'seeds': [42, 43], 'set': [],
            'cells': [{'methods': 'ablation'}, {'methods': 'single>tinybert'}]}
    assert [(seed, cell['methods']) for _, seed, cell, _ in campaign.units(spec)] == \
        [(42, 'ablation'), (42, 'single>tinybert'), (43, 'ablation'), (43, 'single>tinybert')]
    assert [seed for _, seed, _, _ in campaign.units(spec, seeds=[43])] == [43, 43]


def _started(runs: Path, cell: str, cpu: str, precision: str = 'bf16'):
    (runs / cell).mkdir(parents=True)
    (runs / cell / 'pipeline.json').write_text(json.dumps({'rows': ['single', 'single>tinybert'], 'hardware': {'cpu': cpu}, 'precision': precision}))


def test_a_seed_stays_on_one_machine_and_precision(tmp_path):
    here = {'cpu': 'CPU A', 'precision': 'bf16'}
    _started(tmp_path, 'amazon/ablation/s42', 'CPU A')
    _started(tmp_path, 'amazon/ablation/s43', 'CPU B')  # another seed: no concern of s42's cells
    _started(tmp_path, 'amazon/meta-metakd/s44', 'CPU A', 'fp32')
    assert campaign.other_machines(tmp_path, 'amazon/single-tinybert/s42', here) == []
    assert campaign.other_machines(tmp_path, 'amazon/single-tinybert/s43', here) == ['amazon/ablation/s43 (CPU B, bf16)']
    assert campaign.other_machines(tmp_path, 'amazon/single-tinybert/s44', here) == ['amazon/meta-metakd/s44 (CPU A, fp32)']
    assert campaign.other_machines(tmp_path, 'amazon/ablation/s43', here) == []  # the cell itself: hrkd.pipeline decides
    _started(tmp_path, 'mnli/few_shot/fs0.02/s42', 'CPU B')
    assert campaign.other_machines(tmp_path, 'mnli/few_shot/fs0.05/s42', here) == []  # rows pair within a share
    assert campaign.other_machines(tmp_path, 'mnli/few_shot+x/fs0.02/s42', here) == ['mnli/few_shot/fs0.02/s42 (CPU B, bf16)']


def test_two_campaigns_keep_their_own_progress_blocks(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- progress a: x -->\nold a\n<!-- /progress a -->\nmiddle\n'
                      '<!-- progress b: x -->\nold b\n<!-- /progress b -->\nend\n')
    assert campaign.write_progress(readme, 'b', '<!-- progress b: new -->\nnew b\n<!-- /progress b -->')
    assert readme.read_text() == ('intro\n<!-- progress a: x -->\nold a\n<!-- /progress a -->\nmiddle\n'
                                  '<!-- progress b: new -->\nnew b\n<!-- /progress b -->\nend\n')
    assert not campaign.write_progress(readme, 'c', 'anything')  # no block of its own: the README is left alone
    spec = {**campaign.CAMPAIGNS['amazon-table3'], 'seeds': [42]}
    _started(tmp_path / 'runs', 'amazon/single-tinybert+mix-tinybert+meta-metakd/s42', 'CPU A')
    block = campaign.progress_block('amazon-table3', tmp_path / 'runs', spec, 'abcdef0123')
    assert block.startswith('<!-- progress amazon-table3:') and block.endswith('<!-- /progress amazon-table3 -->')
    assert '| 42 | `single>tinybert,mix>tinybert,meta>metakd` | 0 of 2 | 0.00 | started |' in block
    stage = tmp_path / 'runs' / 'amazon/single-tinybert+mix-tinybert+meta-metakd/s42/teacher-single'
    stage.mkdir(); (stage / 'results.json').write_text(json.dumps({'status': 'finished', 'train_seconds': 5400.0, 'eval_seconds': 1800.0}))
    block = campaign.progress_block('amazon-table3', tmp_path / 'runs', spec, 'abcdef0123')
    assert '| 42 | `single>tinybert,mix>tinybert,meta>metakd` | 1 of 2 | 2.00 | started |' in block


def test_records_leave_out_weights_caches_and_the_readme(tmp_path):
    for path in ('README.md', 'a/s42/pipeline.json', 'a/s42/teacher-mtl/results.json', 'a/s42/teacher-mtl/model/config.json',
                 'a/s42/cache/x.arrow', 'a/s42/teacher-mtl/teacher-cache/h.npy', 'a/s42/x/ckpt.pt', 'a/s42/.lock',
                 'a/s42/teacher-mtl.again/results.json'):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True); (tmp_path / path).write_text('{}')
    assert [str(p.relative_to(tmp_path)) for p in campaign.records(tmp_path)] == \
        ['a/s42/pipeline.json', 'a/s42/teacher-mtl/results.json']
