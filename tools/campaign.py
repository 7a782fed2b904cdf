#!/usr/bin/env python
"""Run verdict campaigns on this machine, one pipeline cell after another, and commit their records as they finish.

    python tools/campaign.py amazon-cpu                          # Table 4's grid, then stop
    python tools/campaign.py amazon-cpu amazon-table3 mnli-cpu   # several campaigns, one after another
    python tools/campaign.py amazon-table3 --seeds 42,43          # some seeds only
    python tools/campaign.py amazon-cpu --status                 # what is finished, what remains

A campaign (CAMPAIGNS below) is a results folder, a dataset, seeds, optionally few-shot shares, and the `hrkd batch`
method sets of each seed's cells. Cells run seed by seed (each seed's cells together); with few-shot shares, share by
share (the smallest first, all seeds), then seed. Two campaigns may share a results folder (Table 3's remaining rows
sit next to Table 4's): before a cell starts, the seed's other cells in that folder must have run on this CPU and
precision, since the t-tests pair rows by seed (`hrkd.pipeline` refuses the same within one cell).

The code that trains is a clean git worktree at a recorded commit (``--code``, default ../campaign), so that developing
in this checkout never changes a running campaign's numbers; its runs are written outside any checkout (``--runs``), so
that no run records a dirty tree. After every finished stage, the stage's records (everything but weights, checkpoints
and caches, see .gitignore) are copied into results/<folder>/ of this checkout and committed there, with the progress
block of the folder's README. On a new machine the same command first copies the committed records back into the runs
folder: finished stages are never recomputed (see `hrkd.pipeline`).
"""
import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [42, 43, 44, 45, 46]
CAMPAIGNS = {  # campaign -> results folder, hrkd batch options, the cells of each seed (and their case-study students)
    'amazon-cpu': {'folder': 'amazon-cpu', 'datasets': 'amazon', 'seeds': SEEDS, 'set': ['preset=offline-2layer'],
                   'cells': [{'methods': 'ablation,mtl>hrkd:gatv2', 'case_study': ['mtl-hrkd', 'mtl-hrkd-gatv2']}]},
    'amazon-table3': {'folder': 'amazon-cpu', 'datasets': 'amazon', 'seeds': SEEDS, 'set': ['preset=offline-2layer'],
                      'cells': [{'methods': 'single>tinybert,mix>tinybert,meta>metakd'}]},
    'mnli-cpu': {'folder': 'mnli-cpu', 'datasets': 'mnli', 'seeds': SEEDS, 'set': ['preset=offline-2layer', 'padding=bucket'],
                 'few_shot': [0.02, 0.05, 0.1, 0.2], 'cells': [{'methods': 'few_shot'}]},
}
SKIP = ('model', 'cache', 'teacher-cache', 'tiny')  # folders that hold weights or caches: never committed
SKIP_SUFFIXES = ('.pt', '.safetensors', '.bin', '.tmp')
MACHINE = ("import json; from hrkd.training import hardware, resolve_precision; "
           "print(json.dumps({'cpu': hardware()['cpu'], 'precision': resolve_precision('auto', 'cpu')}))")

def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)

def slug(text: str) -> str:  # hrkd.batch's folder names, kept here so that the driver never imports torch (a test checks it)
    return re.sub(r'[^A-Za-z0-9_.+-]', '', text.replace('>', '-').replace(',', '+').replace(':', '').replace(';', '+'))

def units(spec: dict, seeds=None) -> list:
    "The campaign's cells in the order they run: (few-shot share or None, seed, cell spec, cell folder name)."
    seeds = [s for s in spec['seeds'] if seeds is None or s in seeds]
    shares = spec.get('few_shot') or [None]
    return [(share, seed, cell, '/'.join([spec['datasets'], slug(cell['methods'])] + ([f'fs{share:g}'] if share else [])
                                         + [f's{seed}']))
            for share in shares for seed in seeds for cell in spec['cells']]

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

def other_machines(runs: Path, name: str, machine: dict) -> list:
    "The cells of the same seed (and few-shot share) in this results folder that started on another CPU or precision."
    dataset, _, *rest = name.split('/')  # dataset / methods / [fs<share> /] s<seed>
    differ = []
    for other in sorted(runs.glob('/'.join([dataset, '*', *rest, 'pipeline.json']))):
        cell = str(other.parent.relative_to(runs))
        if cell == name: continue  # within one cell, hrkd.pipeline refuses a resume elsewhere
        started = json.loads(other.read_text())
        cpu, precision = (started.get('hardware') or {}).get('cpu'), started.get('precision')
        if cpu not in (None, machine['cpu']) or precision not in (None, machine['precision']):
            differ.append(f'{cell} ({cpu}, {precision})')
    return differ

def progress_block(name: str, runs: Path, spec: dict, code: str) -> str:
    few = bool(spec.get('few_shot'))
    lines = [f'<!-- progress {name}: written by tools/campaign.py -->', '', f'Code: commit `{code[:7]}`; '
             f'updated {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.', '',
             ('| share ' if few else '') + '| seed | cell | finished stages | their hours | pipeline |',
             ('|---' if few else '') + '|---|---|---|---|---|']
    for share, seed, cell, folder in units(spec):
        cell_dir = runs / folder
        planned = json.loads((cell_dir / 'pipeline.json').read_text())['rows'] if (cell_dir / 'pipeline.json').is_file() else []
        done = [r for r in (json.loads(p.read_text()) for p in cell_dir.glob('*/results.json')) if r.get('status') == 'finished']
        hours = sum(r.get('train_seconds', 0.0) + (r.get('eval_seconds') or 0.0) for r in done) / 3600
        whole = 'finished' if (cell_dir / 'results' / 'summary.json').is_file() else 'started' if planned else 'not started'
        lines.append((f'| {share:.0%} ' if few else '') + f"| {seed} | `{cell['methods']}` | {len(done)} of {len(planned) or '?'} | "
                     f"{hours:.2f} | {whole} |")
    lines += ['', 'Hours: training and evaluation of the finished stages, from their `results.json` (a resumed stage counts '
              'the time up to its last checkpoint before the interruption and all of it after).', '',
              'Resume (same command on any machine; it copies these records back first):', '', '```bash',
              f'python tools/campaign.py {name}', '```', '', f'<!-- /progress {name} -->']
    return '\n'.join(lines)

def write_progress(readme: Path, name: str, block: str) -> bool:
    "Replace the campaign's progress block in the folder's README (nothing when the README has none)."
    if not readme.is_file(): return False
    text = readme.read_text()
    start, end_mark = text.find(f'<!-- progress {name}:'), f'<!-- /progress {name} -->'
    end = text.find(end_mark)
    if start < 0 or end < start: return False
    readme.write_text(text[:start] + block + text[end + len(end_mark):])
    return True

def commit(name: str, runs: Path, spec: dict, code: str, message: str) -> int:
    target = ROOT / 'results' / spec['folder']
    copied = copy_records(runs, target)
    write_progress(target / 'README.md', name, progress_block(name, runs, spec, code))
    path = f"results/{spec['folder']}"
    run(['git', '-C', str(ROOT), 'add', path])
    if subprocess.run(['git', '-C', str(ROOT), 'diff', '--cached', '--quiet', '--', path]).returncode == 0: return 0
    for attempt in range(5):  # another git command may hold the index lock for a moment
        done = subprocess.run(['git', '-C', str(ROOT), 'commit', '-q', '-m', message, '--', path], capture_output=True, text=True)
        if done.returncode == 0: return copied
        time.sleep(5)
    print(f"commit failed: {done.stderr}", file=sys.stderr)
    return copied

def case_ratios(cell_dir: Path, stages: list, python: str, env: dict, code_dir: Path):
    "The case-study ratios of the cell's HRKD students, written while their weights are on this machine."
    for stage in stages:
        folder = cell_dir / stage
        if (folder / 'case_ratios.json').is_file() or not (folder / 'model').is_dir(): continue
        script = ("import json, sys; from hrkd.pipeline import load_data; from hrkd.data import tokenize; "
                  "from hrkd.models import load_tokenizer; from hrkd.verdicts import write_case_ratios; "
                  f"p = json.load(open({str(cell_dir / 'pipeline.json')!r})); "
                  f"test = tokenize(load_data(p['dataset']), load_tokenizer({str(folder / 'model')!r}), max_length=p['config']['max_length'])['test']; "
                  f"print(write_case_ratios({str(folder)!r}, test))")
        run(['nice', '-n', '10', python, '-c', script], env=env, cwd=str(code_dir))

def run_campaign(name: str, args, code_dir: Path, code: str, env: dict) -> None:
    spec = CAMPAIGNS[name]
    runs = Path(args.runs) / spec['folder']
    runs.mkdir(parents=True, exist_ok=True)
    restored = copy_records(ROOT / 'results' / spec['folder'], runs, only_missing=True)  # a new machine: committed records back
    if restored: print(f"{restored} committed records copied back into {runs}", file=sys.stderr)
    machine = json.loads(run([args.python, '-c', MACHINE], env=env, cwd=str(code_dir), capture_output=True).stdout)
    for share, seed, cell, folder in units(spec, args.seeds):
        cell_dir, label = runs / folder, f"{name} {folder}"
        if (cell_dir / 'results' / 'summary.json').is_file() and \
                all((cell_dir / s / 'case_ratios.json').is_file() for s in cell.get('case_study', [])):
            print(f"{label}: finished earlier", file=sys.stderr); continue
        differ = other_machines(runs, folder, machine)
        if differ:
            sys.exit(f"{label}: this machine is {machine['cpu']} in {machine['precision']}, but seed {seed}'s other cells ran "
                     f"elsewhere: {'; '.join(differ)}. A seed's rows stay on one machine and precision (their t-tests pair "
                     "by seed): run this cell where they ran, or leave the seed out (--seeds)")
        cmd = ['nice', '-n', '10', args.python, '-c', 'import sys; from hrkd.cli import main; sys.exit(main())', 'batch',
               '--out', str(runs), '--datasets', spec['datasets'], '--seeds', str(seed), '--methods', cell['methods'],
               *(['--few-shot', f'{share:g}'] if share else []), '--no-tables',
               *[a for s in spec['set'] for a in ('--set', s)]]
        print(f"{label}: {' '.join(cmd)}", file=sys.stderr)
        batch = subprocess.Popen(cmd, env=env, cwd=str(code_dir))
        known = set(finished_stages(runs))
        while True:
            try: batch.wait(timeout=args.poll)
            except subprocess.TimeoutExpired: pass
            now = set(finished_stages(runs))
            if now - known:
                commit(name, runs, spec, code, f"results/{spec['folder']}: finished {', '.join(sorted(now - known))} "
                       f"(code {code[:7]}, campaign {name} in progress)")
                known = now
            if batch.returncode is not None: break
        if batch.returncode != 0: sys.exit(f"{label}: hrkd batch exited with {batch.returncode}; see {cell_dir / 'pipeline.ipynb'}")
        case_ratios(cell_dir, cell.get('case_study', []), args.python, env, code_dir)
        commit(name, runs, spec, code, f"results/{spec['folder']}: {folder} finished"
               + (", with its case-study ratios" if cell.get('case_study') else '') + f" (code {code[:7]})")
    print(f"campaign {name}: every cell finished", file=sys.stderr)

def seed_list(text: str) -> list:  # the syntax of hrkd batch --seeds
    seeds = []
    for part in text.split(','):
        first, dash, last = part.strip().partition('-')
        try: seeds += list(range(int(first), int(last) + 1)) if dash else [int(first)]
        except ValueError: raise argparse.ArgumentTypeError(f"seeds are integers or ranges like 42-46; got {text!r}") from None
    return seeds

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('campaigns', nargs='+', choices=sorted(CAMPAIGNS), metavar='campaign',
                   help=f"one or more of {', '.join(CAMPAIGNS)}, run one after another")
    p.add_argument('--seeds', type=seed_list, help='only these seeds of each campaign, e.g. 42,43 or 44-46')
    p.add_argument('--code', default=str(ROOT.parent / 'campaign'), help='a clean git worktree of this project (the code that trains)')
    p.add_argument('--runs', default=str(ROOT.parent / 'campaign-runs'), help='where the runs are written (outside any checkout)')
    p.add_argument('--python', default=sys.executable, help='a Python with the dependencies installed')
    p.add_argument('--poll', type=int, default=300, help='seconds between commits of finished stages')
    p.add_argument('--status', action='store_true', help='print the progress blocks and stop')
    args = p.parse_args(argv)
    code_dir = Path(args.code)
    if not (code_dir / '.git').exists():
        sys.exit(f"{code_dir} is not a git worktree of this project: make one with "
                 f"git worktree add --detach {code_dir} COMMIT (the commit the campaign's README names)")
    code = run(['git', '-C', str(code_dir), 'rev-parse', 'HEAD'], capture_output=True).stdout.strip()
    if run(['git', '-C', str(code_dir), 'status', '--porcelain'], capture_output=True).stdout.strip():
        sys.exit(f"{code_dir} has uncommitted changes: a campaign runs from a clean worktree")
    if args.status:
        for name in args.campaigns:
            print(progress_block(name, Path(args.runs) / CAMPAIGNS[name]['folder'], CAMPAIGNS[name], code))
        return 0
    env = {**os.environ, 'PYTHONPATH': str(code_dir), 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false', 'PYTHONHASHSEED': '0'}
    env.setdefault('HRKD_DATA_DIR', str(ROOT.parent / 'shared' / 'data'))
    for name in args.campaigns: run_campaign(name, args, code_dir, code, env)
    return 0

if __name__ == '__main__':
    sys.exit(main())
