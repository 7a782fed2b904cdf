"""DistributedDataParallel on the CPU (gloo, 2 processes under torchrun) against one process (hrkd.distributed).

tests/ddp_check.py runs the same short runs once as one process and once as two ranks; these tests compare them:
a step of 2 ranks, each on half of every domain's batch, must equal a step of one process on the whole batch.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch_dist = pytest.importorskip('torch.distributed')
if not torch_dist.is_available() or not torch_dist.is_gloo_available():
    pytest.skip("this PyTorch build has no gloo backend", allow_module_level=True)

HERE = Path(__file__).parent
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}


def _run(command, timeout=600):
    out = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)
    return out


def _torchrun(*args, nproc=2):
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--standalone', *args]


@pytest.fixture(scope='module')
def launches(tmp_path_factory):
    "The runs of ddp_check.py as one process and as two ranks (one launch each)."
    root = tmp_path_factory.mktemp('ddp')
    single = _run([sys.executable, str(HERE / 'ddp_check.py'), str(root / 'single')])
    assert single.returncode == 0, single.stderr[-3000:]
    shutil.copytree(root / 'single' / 'tiny', root / 'ddp' / 'tiny')  # the same tiny model files
    ddp = _run(_torchrun(str(HERE / 'ddp_check.py'), str(root / 'ddp')))
    assert ddp.returncode == 0, ddp.stderr[-5000:]
    return root / 'single', root / 'ddp'


def _first_step(run):
    return json.loads((run / 'metrics.jsonl').read_text().splitlines()[0])


def _weights(run):
    from safetensors.torch import load_file
    return load_file(run / 'model' / 'model.safetensors')


def _close_weights(a, b, tol=2e-5):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst < tol, f"largest parameter difference {worst:.2e}"
    return worst


@pytest.mark.parametrize('run', ['teacher-mtl', 'teacher-mix', 'tinybert', 'hrkd', 'hrkd-batch'])
def test_two_ranks_take_the_step_of_one_process(launches, run):
    single, ddp = launches
    one, two = _first_step(single / run), _first_step(ddp / run)
    assert one['step'] == two['step'] == 1
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-5, abs=1e-6)  # the whole batch's loss
    assert two['grad_norm'] == pytest.approx(one['grad_norm'], rel=1e-4)  # gradients averaged over the ranks
    _close_weights(single / run, ddp / run)  # the parameters after the updates (2 steps; mix: 6, the last one uneven)
    evals_one = [json.loads(l) for l in (single / run / 'evals.jsonl').read_text().splitlines()]
    evals_two = [json.loads(l) for l in (ddp / run / 'evals.jsonl').read_text().splitlines()]
    assert [e['dev'] for e in evals_two] == [e['dev'] for e in evals_one]


def test_prototypes_and_their_gradients_are_those_of_the_whole_batch(launches):
    "Eq. (6) under DDP: every rank gets the whole batch's prototypes, and its rows the whole batch's gradient."
    _, ddp = launches
    ranks = json.loads((ddp / 'prototypes.json').read_text())
    assert len(ranks) == 2
    for rank in ranks:
        assert rank['synced_error'] < 1e-6 and rank['grad_error'] < 1e-6 * max(1.0, rank['grad_scale'])
        assert rank['local_error'] > 1e-2  # each rank's own prototypes (the released code's) are not the batch's


def test_only_rank_zero_writes_and_the_run_records_it(launches):
    _, ddp = launches
    run = ddp / 'hrkd'
    assert (run / 'results.json').is_file() and (run / 'finished.json').is_file() and not (run / 'last.pt').exists()
    assert len((run / 'evals.jsonl').read_text().splitlines()) == 1  # one evaluation at step 2, written once
    assert not list(run.glob('*.tmp'))


def test_a_two_rank_run_resumes_to_the_same_run(launches):
    _, ddp = launches
    status = json.loads((ddp / 'resume.json').read_text())
    assert status == {'first': 'interrupted', 'second': 'finished', 'world_size': 2}
    whole, resumed = ddp / 'whole', ddp / 'resumed'
    assert (resumed / 'evals.jsonl').read_text() == (whole / 'evals.jsonl').read_text()
    losses = lambda run: [(r['step'], r['loss']) for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines())]
    assert losses(resumed) == losses(whole)
    wa, wb = _weights(whole), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit, graph dropout included


def test_torchrun_command_line(tmp_path, launches):
    "`torchrun --no-python hrkd ...`: one report from rank 0; a batch size the ranks cannot share is refused once."
    single, _ = launches
    exe = shutil.which('hrkd') or os.path.join(os.path.dirname(sys.executable), 'hrkd')
    tiny = str(single / 'tiny')
    common = ['--dataset', 'toy', '--max-length', '16', '--precision', 'fp32', '--no-progress', '--max-steps', '2',
              '--eval-every', '2', '--efficiency-repeats', '0', '--teacher-model', tiny, '--student-model', tiny,
              '--student-layers', '2,4', '--teacher-batch-size', '4', '--methods', 'mtl>hrkd']
    ok = _run(_torchrun('--no-python', exe, 'pipeline', *common, '--student-batch-size', '4', '--out', str(tmp_path / 'p')))
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads(ok.stdout)  # rank 0 alone prints the result
    assert set(summary['models']) == {'teacher-mtl', 'mtl-hrkd'}
    assert json.loads((tmp_path / 'p' / 'results' / 'summary.json').read_text())['status'] == 'finished'
    bad = _run(_torchrun('--no-python', exe, 'pipeline', *common, '--student-batch-size', '3', '--out', str(tmp_path / 'q')))
    assert bad.returncode != 0
    assert bad.stderr.count("--batch-size 3 (rows per domain) does not divide among 2 ranks") == 1, bad.stderr[-3000:]
    meta = _run(_torchrun('--no-python', exe, 'pipeline', *common[:-1], 'meta>metakd', '--out', str(tmp_path / 'm')))
    assert meta.returncode != 0 and meta.stderr.count("Meta-KD rows run in one process") == 1, meta.stderr[-3000:]
    assert not (tmp_path / 'm').exists()  # refused before anything was written
