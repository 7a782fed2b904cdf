"""Peak memory and step time of the stages a CPU campaign runs: layer checkpointing on and off, glibc keeping freed
memory (`keep_freed_memory`) and not.

Every condition is a fresh process (so its peak is its own) that runs the real trainer on the real data for `--steps`
optimizer steps, with one evaluation (dev and test) at the end, and reads the peaks the run itself records in its
results.json:

- Amazon, `offline-2layer` preset: the HRKD-teacher (mtl; 4 domains x 32 rows x 128 tokens, MiniLM-L6) and, from a
  teacher of the preset's initial weights, the TinyBERT-KD (Eq. 5) and HRKD (Eq. 17) students reading the teacher's
  outputs from the cache (built once, before the measured processes, by a process of its own);
  each with `checkpoint_layers` off and on, and the default (off) once more with `HRKD_KEEP_FREED_MEMORY=0`.
- `--mnli`: an MNLI few-shot pipeline (`few_shot` rows at 2%, bucket padding, the preset's models), every stage
  capped at `--steps` steps (at 2% the teachers' whole schedule is 9 steps), whose peak is the pipeline process's
  (all its stages run in one process); `checkpoint_layers` off and on. `--no-amazon`: these only.

Reported per condition: seconds per training step (the run's training time over its steps: a short run, so an upper
bound of a long run's), peak anonymous memory (RssAnon: heap and tensors; what the memory targets are about) and
peak resident memory (VmRSS: also the pages of the memory-mapped cache, which the kernel can drop), in MB.

Usage: HRKD_DATA_DIR=... python benchmarks/memory.py [--steps 12] [--mnli [off,on] [--no-amazon]] [--json results/bench_memory.json]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

CONDITIONS = [(kind, checkpoint, keep) for kind in ('teacher', 'tinybert', 'hrkd')
              for checkpoint, keep in ((False, True), (True, True), (False, False))]

def measure(kind: str, checkpoint: bool, steps: int, scratch: Path) -> dict:
    "One condition in this process: the real trainer for `steps` steps and one evaluation; the run's own peaks."
    import torch
    from hrkd.data import tokenize
    from hrkd.distill import distill
    from hrkd.models import load_tokenizer, teacher_from_pretrained
    from hrkd.pipeline import PRESETS, Row, load_data, student_config, teacher_config
    from hrkd.teachers import train_teacher
    from hrkd.training import keep_freed_memory, resolve_precision
    keep_freed_memory()  # a no-op with HRKD_KEEP_FREED_MEMORY=0
    preset = PRESETS['offline-2layer']
    tokenizer = load_tokenizer(preset['teacher'])
    data = tokenize(load_data('amazon'), tokenizer, max_length=128, cache_dir=scratch / 'tokens')
    domains = data['train'].features['domain_id'].names
    folder = scratch / f"{kind}-{'checkpoint' if checkpoint else 'plain'}-{os.getpid()}"
    options = dict(max_steps=steps, eval_every=steps, checkpoint_layers=checkpoint)
    if kind == 'teacher':
        result = train_teacher(teacher_config('mtl', 'offline-2layer', **options), data, folder, progress=False)
    else:
        torch.manual_seed(0)  # the same initial teacher in every process: one cache key
        teacher = teacher_from_pretrained(preset['teacher'], domains, 2).eval()
        config = student_config(Row('mtl', kind), 'amazon', 'offline-2layer', **options)
        result = distill(config, teacher, data, folder, progress=False, cache_dir=scratch / 'cache')
    shutil.rmtree(folder, ignore_errors=True)
    return {'kind': kind, 'checkpoint_layers': checkpoint, 'keep_freed_memory': os.environ.get('HRKD_KEEP_FREED_MEMORY', '1') != '0',
            'steps': steps, 'step_seconds': round(result['train_seconds'] / steps, 3), 'eval_seconds': round(result['eval_seconds'], 1),
            'peak_anon_mb': result['peak_anon_mb'], 'peak_rss_mb': result['peak_rss_mb'],
            'precision': resolve_precision('auto')}

def mnli_pipeline(steps: int, scratch: Path, checkpoint: bool = False) -> dict:
    "An MNLI few-shot cell at 2% in one process, every stage capped at `steps` steps: the pipeline's peaks."
    out = scratch / f"mnli-few-shot{'-checkpoint' if checkpoint else ''}"
    cmd = [sys.executable, '-c', 'import sys; from hrkd.cli import main; sys.exit(main())', 'pipeline', '--dataset', 'mnli',
           '--methods', 'few_shot', '--few-shot', '0.02', '--preset', 'offline-2layer', '--padding', 'bucket',
           '--max-steps', str(steps), '--out', str(out)] + (['--checkpoint-layers'] if checkpoint else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env('1'))
    summary = json.loads((out / 'results' / 'summary.json').read_text())
    stages = {name: {k: m.get(k) for k in ('peak_anon_mb', 'peak_rss_mb', 'train_seconds', 'eval_seconds')}
              for name, m in summary['models'].items()}
    return {'kind': 'mnli-few-shot-2%', 'checkpoint_layers': checkpoint, 'steps_per_stage': steps, 'wall_seconds': round(time.perf_counter() - started, 1),
            'peak_anon_mb': summary.get('peak_anon_mb'), 'peak_rss_mb': summary.get('peak_rss_mb'), 'stages': stages}

def _env(keep: str) -> dict:
    return {**os.environ, 'HRKD_KEEP_FREED_MEMORY': keep, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}

def _one(kind, checkpoint, keep, steps, scratch):
    out = subprocess.run([sys.executable, __file__, '--one', f"{kind}:{int(checkpoint)}:{scratch}", '--steps', str(steps)],
                         env=_env('1' if keep else '0'), capture_output=True, text=True)
    if out.returncode: sys.exit(f"{kind} (checkpoint_layers={checkpoint}, keep_freed_memory={keep}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--mnli', nargs='?', const='off,on', default='', help='also MNLI few-shot cells at 2%%, with checkpoint_layers off and on (or: off / on)')
    p.add_argument('--no-amazon', action='store_true', help='the MNLI cells only')
    p.add_argument('--json', type=Path, default=None)
    p.add_argument('--scratch', type=Path, default=None, help='scratch folder (kept; a cache built there is reused); default: a temporary one, removed')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)  # internal: KIND:CHECKPOINT:SCRATCH, in a fresh process
    args = p.parse_args()
    if args.one:
        kind, checkpoint, scratch = args.one.split(':', 2)
        print(json.dumps(measure(kind, checkpoint == '1', args.steps, Path(scratch)))); return
    from hrkd.training import git_state, hardware
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix='hrkd_bench_memory_'))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        records, loads = [], []
        if not args.no_amazon: _one('tinybert', False, True, 1, scratch)  # a 1-step student builds the cache the measured students open
        for kind, checkpoint, keep in [] if args.no_amazon else CONDITIONS:
            records.append(_one(kind, checkpoint, keep, args.steps, scratch)); loads.append(os.getloadavg()[0])
            print(records[-1], file=sys.stderr)
        for checkpoint in [{'off': False, 'on': True}[x] for x in args.mnli.split(',') if x]:
            records.append(mnli_pipeline(args.steps, scratch, checkpoint)); loads.append(os.getloadavg()[0])
            print(records[-1], file=sys.stderr)
    finally:
        if args.scratch is None: shutil.rmtree(scratch, ignore_errors=True)
    def find(kind, checkpoint, keep):
        return next(r for r in records if r['kind'] == kind and r['checkpoint_layers'] == checkpoint and r['keep_freed_memory'] == keep)
    ratios = {}
    for kind in () if args.no_amazon else ('teacher', 'tinybert', 'hrkd'):
        plain, ckpt, off = find(kind, False, True), find(kind, True, True), find(kind, False, False)
        ratios[kind] = {'checkpoint_layers on/off: step seconds': round(ckpt['step_seconds'] / plain['step_seconds'], 3),
                        'checkpoint_layers on/off: peak anon': round(ckpt['peak_anon_mb'] / plain['peak_anon_mb'], 3),
                        'keep_freed_memory off/on: step seconds': round(off['step_seconds'] / plain['step_seconds'], 3),
                        'keep_freed_memory off/on: peak anon': round(off['peak_anon_mb'] / plain['peak_anon_mb'], 3)}
    mnli = [r for r in records if r['kind'] == 'mnli-few-shot-2%']
    if len(mnli) == 2:
        ratios['mnli-few-shot-2%'] = {'checkpoint_layers on/off: wall seconds': round(mnli[1]['wall_seconds'] / mnli[0]['wall_seconds'], 3),
                                      'checkpoint_layers on/off: peak anon': round(mnli[1]['peak_anon_mb'] / mnli[0]['peak_anon_mb'], 3)}
    result = {'git': git_state(), 'hardware': hardware(), 'steps': args.steps, 'load_average_after_each': loads,
              'ratios': ratios, 'records': records}
    print(json.dumps({'ratios': ratios, 'records': records}, indent=1))
    if args.json: args.json.write_text(json.dumps(result, indent=1) + '\n')

if __name__ == '__main__':
    main()
