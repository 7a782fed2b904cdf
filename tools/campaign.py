#!/usr/bin/env python
"""Run a verdict campaign on this machine, one seed after another, and commit its records as they finish.

    python tools/campaign.py amazon-cpu            # the whole grid, then stop
    python tools/campaign.py amazon-cpu --status   # what is finished, what remains

The campaign's grid is in CAMPAIGNS below. The code that trains is a clean git worktree at a recorded commit (``--code``,
default ../campaign), so that developing in this checkout never changes a running campaign's numbers; its runs are
written outside any checkout (``--runs``), so that no run records a dirty tree. After every finished stage, the stage's
records (everything but weights, checkpoints and caches, see .gitignore) are copied into results/<campaign>/ of this
checkout and committed there, with the campaign README's progress block. On a new machine the same command first copies
the committed records back into the runs folder: finished stages are never recomputed (see `hrkd.pipeline`).
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = {  # campaign -> hrkd batch options (one cell per seed) and the students whose case-study ratios are kept
    'amazon-cpu': {'datasets': 'amazon', 'seeds': [42, 43, 44, 45, 46], 'methods': 'ablation,mtl>hrkd:gatv2',
                   'set': ['preset=offline-2layer'], 'case_study': ['mtl-hrkd', 'mtl-hrkd-gatv2']},
}
SKIP = ('model', 'cache', 'teacher-cache', 'tiny')  # folders that hold weights or caches: never committed
SKIP_SUFFIXES = ('.pt', '.safetensors', '.bin', '.tmp')

def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)

def records(folder: Path):
    "Every file of a cell folder that is a record (not weights, checkpoints or caches)."
    for path in sorted(folder.rglob('*')):
        parts = path.relative_to(folder).parts
        if len(parts) == 1 and path.name == 'README.md': continue  # the campaign's own README is written by hand
        if path.is_file() and not any(p in SKIP or p.endswith('.again') or p.startswith('.') for p in parts[:-1]) \
                and not path.name.endswith(SKIP_SUFFIXES) and not path.name.startswith('.'):
            yield path

def copy_records(source: Path, target: Path, only_missing: bool = False) -> int:
    copied = 0
    for path in records(source):
        dest = target / path.relative_to(source)
        if only_missing and dest.exists(): continue
        if dest.exists() and dest.read_bytes() == path.read_bytes(): continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest); copied += 1
    return copied

def finished_stages(runs: Path) -> list:
    return sorted(str(p.parent.relative_to(runs)) for p in runs.rglob('results.json')
                  if json.loads(p.read_text()).get('status') == 'finished' and (p.parent / 'run.json').is_file())

def progress_block(name: str, runs: Path, spec: dict, code: str) -> str:
    cells = {s: next(iter(sorted(runs.glob(f"{spec['datasets']}/*/s{s}"))), runs / f'missing-s{s}') for s in spec['seeds']}
    lines = ['<!-- progress: written by tools/campaign.py -->', '', f'Code: commit `{code[:7]}`; '
             f'updated {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.', '',
             '| seed | finished stages | pipeline |', '|---|---|---|']
    for seed, cell in cells.items():
        planned = json.loads((cell / 'pipeline.json').read_text())['rows'] if (cell / 'pipeline.json').is_file() else []
        done = [p.parent.name for p in cell.glob('*/results.json')]
        whole = 'finished' if (cell / 'results' / 'summary.json').is_file() else 'started' if planned else 'not started'
        lines.append(f"| {seed} | {len(done)} of {len(planned) or '?'} | {whole} |")
    lines += ['', 'Resume (same command on any machine; it copies these records back first):', '', '```bash',
              f'python tools/campaign.py {name}', '```', '', '<!-- /progress -->']
    return '\n'.join(lines)

def commit(name: str, runs: Path, spec: dict, code: str, message: str):
    target = ROOT / 'results' / name
    copied = copy_records(runs, target)
    readme = target / 'README.md'
    if readme.is_file():
        text = readme.read_text()
        start, end = text.find('<!-- progress'), text.find('<!-- /progress -->')
        if start >= 0 and end >= 0:
            readme.write_text(text[:start] + progress_block(name, runs, spec, code) + text[end + len('<!-- /progress -->'):])
    run(['git', '-C', str(ROOT), 'add', f'results/{name}'])
    staged = subprocess.run(['git', '-C', str(ROOT), 'diff', '--cached', '--quiet', '--', f'results/{name}'])
    if staged.returncode == 0: return 0
    for attempt in range(5):  # another git command may hold the index lock for a moment
        done = subprocess.run(['git', '-C', str(ROOT), 'commit', '-q', '-m', message, '--', f'results/{name}'],
                              capture_output=True, text=True)
        if done.returncode == 0: return copied
        time.sleep(5)
    print(f"commit failed: {done.stderr}", file=sys.stderr)
    return copied

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('campaign', choices=sorted(CAMPAIGNS))
    p.add_argument('--code', default=str(ROOT.parent / 'campaign'), help='a clean git worktree of this project (the code that trains)')
    p.add_argument('--runs', default=str(ROOT.parent / 'campaign-runs'), help='where the runs are written (outside any checkout)')
    p.add_argument('--python', default=sys.executable, help='a Python with the dependencies installed')
    p.add_argument('--poll', type=int, default=300, help='seconds between commits of finished stages')
    p.add_argument('--status', action='store_true', help='print the progress block and stop')
    args = p.parse_args(argv)
    spec, code_dir = CAMPAIGNS[args.campaign], Path(args.code)
    runs = Path(args.runs) / args.campaign
    code = run(['git', '-C', str(code_dir), 'rev-parse', 'HEAD'], capture_output=True).stdout.strip()
    if run(['git', '-C', str(code_dir), 'status', '--porcelain'], capture_output=True).stdout.strip():
        sys.exit(f"{code_dir} has uncommitted changes: a campaign runs from a clean worktree")
    if args.status: print(progress_block(args.campaign, runs, spec, code)); return 0
    runs.mkdir(parents=True, exist_ok=True)
    restored = copy_records(ROOT / 'results' / args.campaign, runs, only_missing=True)  # a new machine: committed records back
    if restored: print(f"{restored} committed records copied back into {runs}", file=sys.stderr)
    env = {**os.environ, 'PYTHONPATH': str(code_dir), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false', 'PYTHONHASHSEED': '0'}
    env.setdefault('HRKD_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
    for seed in spec['seeds']:
        cmd = ['nice', '-n', '10', args.python, '-c', 'import sys; from hrkd.cli import main; sys.exit(main())', 'batch', '--out', str(runs), '--datasets', spec['datasets'],
               '--seeds', str(seed), '--methods', spec['methods'], '--no-tables', *[a for s in spec['set'] for a in ('--set', s)]]
        print(f"seed {seed}: {' '.join(cmd)}", file=sys.stderr)
        batch = subprocess.Popen(cmd, env=env, cwd=str(code_dir))
        known = set(finished_stages(runs))
        while batch.poll() is None:
            time.sleep(args.poll)
            now = set(finished_stages(runs))
            if now - known:
                commit(args.campaign, runs, spec, code, f"results/{args.campaign}: finished {', '.join(sorted(now - known))} "
                       f"(code {code[:7]}, campaign in progress)")
                known = now
        if batch.returncode != 0: sys.exit(f"seed {seed}: hrkd batch exited with {batch.returncode}; see the cell's pipeline.ipynb")
        cell = next(runs.glob(f"{spec['datasets']}/*/s{seed}"))
        for stage in spec['case_study']:  # the case-study ratios, written while the students are on this machine
            folder = cell / stage
            if (folder / 'case_ratios.json').is_file() or not (folder / 'model').is_dir(): continue
            script = ("import json, sys; from hrkd.pipeline import load_data; from hrkd.data import tokenize; "
                      "from hrkd.models import load_tokenizer; from hrkd.verdicts import write_case_ratios; "
                      f"p = json.load(open({str(cell / 'pipeline.json')!r})); "
                      f"test = tokenize(load_data(p['dataset']), load_tokenizer({str(folder / 'model')!r}), max_length=p['config']['max_length'])['test']; "
                      f"print(write_case_ratios({str(folder)!r}, test))")
            run(['nice', '-n', '10', args.python, '-c', script], env=env, cwd=str(code_dir))
        commit(args.campaign, runs, spec, code, f"results/{args.campaign}: seed {seed} finished, with its case-study ratios (code {code[:7]})")
    print(f"campaign {args.campaign}: every seed finished", file=sys.stderr)
    return 0

if __name__ == '__main__':
    sys.exit(main())
