"""Peak memory and step time of the steps a CPU campaign runs, with glibc keeping freed memory (`keep_freed_memory`) and without.

Each measurement is a fresh process (so its peak is its own): the HRKD-teacher step (4 domains x 32 rows x 128 tokens,
MiniLM-L6, forward and backward) or a student step of the `offline-2layer` preset reading the teacher's outputs from
memory (TinyBERT-KD, Eq. 5, and HRKD, Eq. 17), `--steps` timed steps after two warm-up steps, on the Amazon training
rows. Conditions are interleaved over `--rounds`, so a busy machine slows them alike. Reported per condition: median
step seconds, peak anonymous memory (RssAnon: heap and tensors) and peak resident memory (VmRSS), in MB.

Usage: HRKD_DATA_DIR=... python benchmarks/memory.py [--rounds 2] [--steps 6] [--json results/bench_memory.json]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

KINDS = ('teacher', 'tinybert-cached', 'hrkd-cached')

def measure(kind: str, steps: int, cache: str) -> dict:
    "One condition in this process: build, warm up twice, time `steps` steps, and return the peaks."
    import torch
    from hrkd.data import MultiDomainLoader, tokenize
    from hrkd.distill import _build_student, distill_step
    from hrkd.models import FitProjections, load_tokenizer, teacher_from_pretrained, uniform_layer_map
    from hrkd.objective import HRKD
    from hrkd.pipeline import PRESETS, Row, load_data, student_config
    from hrkd.teacher_cache import teacher_forward
    from hrkd.teachers import _teacher_loss
    from hrkd.training import autocast, clip_and_step, keep_freed_memory, make_optimizer, memory_status, resolve_precision, track_memory
    keep_freed_memory()  # a no-op with HRKD_KEEP_FREED_MEMORY=0
    preset, precision = PRESETS['offline-2layer'], resolve_precision('auto')
    tokenizer = load_tokenizer(preset['teacher'])
    data = tokenize(load_data('amazon'), tokenizer, max_length=128, cache_dir=cache)
    domains = ['books', 'dvd', 'electronics', 'kitchen']
    loader = MultiDomainLoader(data['train'], batch_size=32, seed=0)
    batches = [loader.batch(s) for s in range(steps + 2)]
    torch.manual_seed(0)
    teacher = teacher_from_pretrained(preset['teacher'], domains, 2)
    if kind == 'teacher':
        optimizer = make_optimizer(teacher, lr=5e-5)
        def step(batch):
            teacher.train()
            with autocast(precision): loss = _teacher_loss(teacher, batch, 'mtl', 'cpu')
            clip_and_step(loss, optimizer)
    else:
        method = kind.split('-')[0]
        config = student_config(Row('mtl', method), 'amazon', 'offline-2layer')
        teacher.eval().requires_grad_(False)
        with autocast(precision): outputs = [teacher_forward(teacher, b) for b in batches]  # what the cache would hand back
        student = _build_student(config, domains, 2, 'cpu').train()
        layer_map = uniform_layer_map(student.num_layers, teacher.num_layers)
        fit = FitProjections(student.num_layers, student.hidden_size, teacher.hidden_size)
        objective = HRKD(student.num_layers, 4, student.hidden_size) if method == 'hrkd' else None
        modules = [student, fit] + ([objective] if objective is not None else [])
        optimizer = make_optimizer([p for m in modules for p in m.parameters()], lr=5e-4)
        lookup = {id(b): o for b, o in zip(batches, outputs)}
        def step(batch):
            with autocast(precision):
                loss, _ = distill_step(student, teacher, fit, objective, batch, layer_map, 4, config, teacher_outputs=lookup[id(batch)])
            clip_and_step(loss, optimizer)
    before = memory_status()
    times = []
    with track_memory() as memory:
        for i, batch in enumerate(batches):
            started = time.perf_counter(); step(batch)
            if i >= 2: times.append(time.perf_counter() - started)
    return {'kind': kind, 'keep_freed_memory': os.environ.get('HRKD_KEEP_FREED_MEMORY', '1') != '0',
            'step_seconds': statistics.median(times), **memory.peak, 'before_anon_mb': round(before['anon_mb'], 1),
            'precision': precision}

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--json', type=Path, default=None)
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)  # internal: KIND:CACHE, run in a fresh process
    args = p.parse_args()
    if args.one:
        kind, cache = args.one.split(':', 1)
        print(json.dumps(measure(kind, args.steps, cache))); return
    from hrkd.training import git_state, hardware
    cache = tempfile.mkdtemp(prefix='hrkd_bench_memory_')
    records = []
    for r in range(args.rounds):
        for kind in KINDS:
            for keep in ('1', '0'):
                env = {**os.environ, 'HRKD_KEEP_FREED_MEMORY': keep, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
                out = subprocess.run([sys.executable, __file__, '--one', f'{kind}:{cache}', '--steps', str(args.steps)],
                                     env=env, capture_output=True, text=True, check=True)
                records.append({**json.loads(out.stdout.strip().splitlines()[-1]), 'round': r})
                print(records[-1], file=sys.stderr)
    summary = {}
    for kind in KINDS:
        for keep in (True, False):
            mine = [x for x in records if x['kind'] == kind and x['keep_freed_memory'] == keep]
            summary[f"{kind}, keep_freed_memory={'on' if keep else 'off'}"] = {
                'step_seconds': statistics.median(x['step_seconds'] for x in mine),
                'peak_anon_mb': max(x['peak_anon_mb'] for x in mine), 'peak_rss_mb': max(x['peak_rss_mb'] for x in mine)}
    for kind in KINDS:
        on, off = summary[f'{kind}, keep_freed_memory=on'], summary[f'{kind}, keep_freed_memory=off']
        summary[f'{kind}: off/on'] = {'step_seconds': off['step_seconds'] / on['step_seconds'],
                                      'peak_anon_mb': off['peak_anon_mb'] / on['peak_anon_mb']}
    load = os.getloadavg()
    result = {'git': git_state(), 'hardware': hardware(), 'load_average': load, 'rounds': args.rounds, 'steps': args.steps,
              'summary': summary, 'records': records}
    print(json.dumps(summary, indent=1))
    if args.json: args.json.write_text(json.dumps(result, indent=1) + '\n')

if __name__ == '__main__':
    main()
