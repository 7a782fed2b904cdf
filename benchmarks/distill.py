"""Training throughput of the distillation step: multi-domain TinyBERT-KD (Eq. 5) vs HRKD (Eq. 17), fp32 vs bf16,
measured against the machine's own matrix-multiply limit for the same step.

One run, the offline preset shapes of the throughput target: D = 4 domains x 8 rows per domain (32 rows per step),
128 tokens, teacher all-MiniLM-L6-v2 (6 layers, 384 wide), student = its embeddings and layers 2, 4, 6 (M = 3).
Each timed step is the trainer's own: `hrkd.distill.distill_step` (teacher forward under no_grad, student forward,
Eqs. 1-4 per domain, and for HRKD prototypes + compare-aggregate + graphs + Eq. 17) followed by
`hrkd.training.clip_and_step` (backward, clip at 1.0, fused AdamW, schedule).

The matmul limit. One step per configuration runs under `FlopCounterMode` (its FLOPs: mm, addmm, bmm) and under a
dispatch mode that records every mm / addmm / bmm / baddbmm call the step makes (after autocast, so with the dtypes
the step really uses), with its operand shapes and strides. Replaying exactly those calls on random operands is
what the step would cost if everything but the matrix products were free: the matmul limit. Steps and replays of
all configurations are timed in interleaved rounds after one warm-up round, so load from elsewhere on the machine
hits them alike. Reported per configuration: step time, matmul limit, their ratio, the machine's matmul rate at the
step's own shapes (FLOPs / limit); and HRKD step / TinyBERT-KD step per precision. The headline figures use the
fastest round of each (the same work every round: interference only adds time); the median of the per-round ratios
(step and replay, or HRKD and TinyBERT-KD, timed back to back) is recorded next to them, and every round's times.
Every timing is taken twice: wall clock (`perf_counter`, what a run waits for) and the process's CPU time
(`process_time`, the work done, much less sensitive to other processes on a shared machine; with --threads 1 it
is the compute alone).
Optionally (default on) one more profiled step per configuration gives the share of self time in matmuls and the
largest other operators.

bf16 runs only where the CPU computes it natively (AVX512-BF16 / AMX, `hrkd.training.resolve_precision('auto')`);
elsewhere autocast emulates it at a small fraction of the fp32 speed and the numbers say nothing. `--precisions`
overrides.
With `--baseline-package`, an earlier copy of the library (renamed, e.g. hrkd_before) is timed in the same rounds:
before/after figures under the same load, from one run.
Usage: python benchmarks/distill.py [--repeats 8] [--per-domain 8] [--threads 2,1] [--baseline-package DIR]
                                    [--out results/bench_distill.json]
"""
import argparse
import collections
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from hrkd.models import OFFLINE_STUDENT_LAYERS, OFFLINE_TEACHER
from hrkd.training import git_state, hardware, keep_freed_memory, resolve_precision

aten = torch.ops.aten
MATMULS = {aten.mm.default: 'mm', aten.addmm.default: 'addmm', aten.bmm.default: 'bmm', aten.baddbmm.default: 'baddbmm'}
MATMUL_KERNELS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm')


def implementation(package: str) -> SimpleNamespace:
    "The modules of one copy of the library that a step needs (`hrkd`, or a baseline copy under another name)."
    module = lambda name: importlib.import_module(f'{package}.{name}')
    return SimpleNamespace(package=package, distill=module('distill'), models=module('models'),
                           objective=module('objective'), training=module('training'))


def load_baseline(folder: Path, current: SimpleNamespace) -> SimpleNamespace:
    """An earlier copy of the package (a folder such as /tmp/before/hrkd_before: `cp -r hrkd` renamed; its imports are
    relative). Its attention function is registered with transformers under its own name, because both copies would
    otherwise claim `hrkd_scores` in transformers' global registry."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    folder = Path(folder).resolve()
    sys.path.insert(0, str(folder.parent))
    baseline = implementation(folder.name)  # importing its models registers its score attention as 'hrkd_scores'
    name = f'{baseline.models.ATTENTION_IMPLEMENTATION}_{folder.name}'
    baseline.models.ATTENTION_IMPLEMENTATION = name  # read at call time by its builders and its forward check
    AttentionInterface.register(name, baseline.models.score_attention)
    AttentionMaskInterface.register(name, eager_mask)
    current.models.register_score_attention()  # 'hrkd_scores' is the current implementation's again
    return baseline


def build(impl, method, domains, seed=0):
    "Teacher, student, fit projections, objective (HRKD) and optimizer of the offline preset, from `impl`'s library."
    models, training = impl.models, impl.training
    torch.manual_seed(seed)
    names = [f'domain{i}' for i in range(domains)]
    teacher = models.teacher_from_pretrained(OFFLINE_TEACHER, names, num_labels=2).eval().requires_grad_(False)
    student = models.student_from_layers(OFFLINE_TEACHER, OFFLINE_STUDENT_LAYERS, names, num_labels=2).train()
    M = student.num_layers
    fit = models.FitProjections(M, student.hidden_size, teacher.hidden_size)
    config = impl.distill.DistillConfig(method=method)
    objective = (impl.objective.HRKD(M, domains, student.hidden_size, **impl.objective.ABLATIONS['hrkd'])
                 if method == 'hrkd' else None)
    for model in (teacher, student):  # each copy runs its own attention core
        assert model.encoder.config._attn_implementation == models.ATTENTION_IMPLEMENTATION
    modules = [m for m in (student, fit, objective) if m is not None]
    optimizer = training.make_optimizer(training.decay_parameter_groups(modules), lr=1e-5)
    scheduler = training.linear_warmup_schedule(optimizer, 10_000)
    return dict(impl=impl, teacher=teacher, student=student, fit=fit, objective=objective, config=config,
                optimizer=optimizer, scheduler=scheduler, layer_map=models.uniform_layer_map(M, teacher.num_layers))


def make_batch(domains, per_domain, length, seed=0):
    "Random token ids of `domains` x `per_domain` rows; every third row padded from the middle on, as in real batches."
    generator = torch.Generator().manual_seed(seed)
    rows = domains * per_domain
    batch = dict(input_ids=torch.randint(1000, 30000, (rows, length), generator=generator),
                 attention_mask=torch.ones(rows, length, dtype=torch.long),
                 token_type_ids=torch.zeros(rows, length, dtype=torch.long),
                 domain_ids=torch.arange(domains).repeat_interleave(per_domain))
    batch['attention_mask'][::3, length // 2:] = 0
    return batch


def train_step(run, precision, batch, domains):
    "One optimizer step of the trainer: distill_step under autocast, then backward, clipping and AdamW."
    impl = run['impl']
    for m in (run['student'], run['fit'], run['objective']):
        if m is not None: m.train()
    with impl.training.autocast(precision):
        loss, _ = impl.distill.distill_step(run['student'], run['teacher'], run['fit'], run['objective'], batch,
                                            run['layer_map'], domains, run['config'])
    impl.training.clip_and_step(loss, run['optimizer'], run['scheduler'], 1.0)
    return loss


class MatmulRecorder(TorchDispatchMode):
    "Records every mm / addmm / bmm / baddbmm call (operand shapes, strides, dtypes; scalar arguments) while active."
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:
            spec = lambda a: ('tensor', tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a
            self.calls.append((func, tuple(spec(a) for a in args), {k: spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _operand(spec):
    "A random tensor with the recorded shape, strides and dtype (its own storage)."
    if not (isinstance(spec, tuple) and spec and spec[0] == 'tensor'): return spec
    _, shape, stride, dtype = spec
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0
    return torch.randn(extent, dtype=dtype).as_strided(shape, stride)


class MatmulReplay:
    "The recorded matmul calls of one step on fresh random operands (one set per call, as in the step)."
    def __init__(self, calls):
        self.calls = [(func, tuple(_operand(a) for a in args), {k: _operand(v) for k, v in kwargs.items()})
                      for func, args, kwargs in calls]

    def __call__(self):
        for func, args, kwargs in self.calls: func(*args, **kwargs)

    def summary(self) -> dict:
        "Calls per op, and the distinct (op, dtype, shapes) with their counts."
        ops = collections.Counter(MATMULS[f] for f, _, _ in self.calls)
        shapes = collections.Counter((MATMULS[f], str(next(a.dtype for a in args if isinstance(a, torch.Tensor))).replace('torch.', ''),
                                      ' x '.join(str(list(a.shape)) for a in args if isinstance(a, torch.Tensor)))
                                     for f, args, _ in self.calls)
        return {'calls': dict(ops), 'shapes': [dict(op=o, dtype=d, shapes=s, count=n) for (o, d, s), n in shapes.most_common()]}


def count_step(run, precision, batch, domains):
    "FLOPs per matmul op (FlopCounterMode) and the recorded matmul calls of one step."
    with MatmulRecorder() as recorder, FlopCounterMode(display=False) as counter:
        train_step(run, precision, batch, domains)
    flops = {str(op).replace('aten.', '').split('.')[0]: int(n) for op, n in counter.get_flop_counts().get('Global', {}).items()}
    return counter.get_total_flops(), flops, recorder.calls


def profile_step(run, precision, batch, domains, top=12) -> dict:
    "Self CPU time of one step by operator: matmul share and the largest non-matmul operators."
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(run, precision, batch, domains)
    events = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in prof.key_averages()]
    total = sum(t for _, t, _ in events)
    matmul = sum(t for k, t, _ in events if k in MATMUL_KERNELS)
    others = sorted((e for e in events if e[0] not in MATMUL_KERNELS), key=lambda e: -e[1])[:top]
    return {'self_ms': round(total, 1), 'matmul_share': round(matmul / total, 4),
            'top_other_ops': [dict(op=k, self_ms=round(t, 1), share=round(t / total, 4), calls=n) for k, t, n in others]}


def measure(runs, replays, counted, keys, impls, batch, D, rows, args) -> dict:
    "Interleaved rounds of every configuration's step and matmul replay at the current thread count, and the figures."
    times = {key: {'step': [], 'matmuls': [], 'step_cpu': [], 'matmuls_cpu': []} for key in keys}
    for key in keys: train_step(runs[key], key[2], batch, D); replays[key]()  # warm-up at this thread count
    for _ in range(args.repeats):
        for key in keys:
            for name, work in (('step', lambda: train_step(runs[key], key[2], batch, D)), ('matmuls', replays[key])):
                wall, cpu = time.perf_counter(), time.process_time()
                work()
                times[key][name].append(time.perf_counter() - wall)
                times[key][f'{name}_cpu'].append(time.process_time() - cpu)
    profiles = {} if args.no_profile else {key: profile_step(runs[key], key[2], batch, D) for key in keys}
    results = []
    for key in keys:
        label, method, precision = key
        t = times[key]
        flops, per_op = counted[key]
        # Work that is the same every round only gains time from interference, so the fastest round is the best
        # estimate of the machine's own cost; the median of the per-round ratios (step and replay timed back to back)
        # is the second, load-matched estimate.
        step, limit, step_cpu, limit_cpu = min(t['step']), min(t['matmuls']), min(t['step_cpu']), min(t['matmuls_cpu'])
        results.append(dict(
            implementation=label, package=impls[label].package, method=method, precision=precision,
            step_min_s=step, step_median_s=statistics.median(t['step']), samples_per_s=rows / step,
            vs_reference=rows / step / args.reference, gflop=flops / 1e9, gflop_by_op={k: v / 1e9 for k, v in per_op.items()},
            matmul_limit_min_s=limit, matmul_limit_median_s=statistics.median(t['matmuls']),
            step_over_matmul_limit=step / limit,
            step_over_matmul_limit_paired_median=statistics.median(a / b for a, b in zip(t['step'], t['matmuls'])),
            matmul_gflop_per_s=flops / limit / 1e9, step_gflop_per_s=flops / step / 1e9,
            step_cpu_min_s=step_cpu, matmul_limit_cpu_min_s=limit_cpu, step_over_matmul_limit_cpu=step_cpu / limit_cpu,
            step_times_s=t['step'], matmul_times_s=t['matmuls'], step_cpu_times_s=t['step_cpu'],
            matmul_cpu_times_s=t['matmuls_cpu'], profile=profiles.get(key)))
    by = {(r['implementation'], r['method'], r['precision']): r for r in results}
    figures = {'hrkd_over_tinybert_step': {}, 'hrkd_over_tinybert_step_paired_median': {}, 'hrkd_over_tinybert_step_cpu': {}}
    for label in impls:
        for p in {k[2] for k in keys}:
            if (label, 'hrkd', p) in by and (label, 'tinybert', p) in by:
                h, b = by[(label, 'hrkd', p)], by[(label, 'tinybert', p)]
                figures['hrkd_over_tinybert_step'][f'{label} {p}'] = h['step_min_s'] / b['step_min_s']
                figures['hrkd_over_tinybert_step_paired_median'][f'{label} {p}'] = statistics.median(
                    x / y for x, y in zip(h['step_times_s'], b['step_times_s']))
                figures['hrkd_over_tinybert_step_cpu'][f'{label} {p}'] = h['step_cpu_min_s'] / b['step_cpu_min_s']
    if 'baseline' in impls:
        for clock, field in (('', 'step_min_s'), ('_cpu', 'step_cpu_min_s')):
            figures[f'current_over_baseline_step{clock}'] = {
                f'{m} {p}': by[('current', m, p)][field] / by[('baseline', m, p)][field]
                for (label, m, p) in keys if label == 'current'}
    return dict(threads=torch.get_num_threads(), results=results, **figures)


def report(measured: dict, targets: dict):
    print(f"--- {measured['threads']} thread(s)")
    for r in measured['results']:
        print(f"{r['implementation']:8s} {r['method']:8s} {r['precision']}: {r['step_min_s']:.3f} s/step best (median "
              f"{r['step_median_s']:.3f}; {r['samples_per_s']:.1f} samples/s), {r['gflop']:.1f} GFLOP, matmul limit "
              f"{r['matmul_limit_min_s']:.3f} s ({r['matmul_gflop_per_s']:.0f} GFLOP/s): step / limit = "
              f"{r['step_over_matmul_limit']:.2f} (paired median {r['step_over_matmul_limit_paired_median']:.2f}; "
              f"CPU time {r['step_cpu_min_s']:.3f} s / {r['matmul_limit_cpu_min_s']:.3f} s = {r['step_over_matmul_limit_cpu']:.2f})"
              + (f", matmul share of self time {r['profile']['matmul_share']:.0%}" if r['profile'] else ''))
    for k, v in measured['hrkd_over_tinybert_step'].items():
        print(f"{k}: HRKD / TinyBERT-KD step {v:.3f} (paired median {measured['hrkd_over_tinybert_step_paired_median'][k]:.3f}; "
              f"CPU time {measured['hrkd_over_tinybert_step_cpu'][k]:.3f}; target <= {targets['hrkd_over_tinybert']})")
    for k, v in measured.get('current_over_baseline_step', {}).items():
        print(f"current / baseline step, {k}: {v:.3f} (CPU time {measured['current_over_baseline_step_cpu'][k]:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=8, help='timed rounds (after one warm-up round)')
    parser.add_argument('--domains', type=int, default=4)
    parser.add_argument('--per-domain', type=int, default=8)
    parser.add_argument('--length', type=int, default=128)
    parser.add_argument('--threads', default='2', help='torch intra-op threads; a comma list measures each in turn')
    parser.add_argument('--methods', default='tinybert,hrkd')
    parser.add_argument('--precisions', default='native',
                        help="comma list of fp32, bf16; 'native': fp32, plus bf16 where the CPU computes it natively")
    parser.add_argument('--no-profile', action='store_true', help='skip the profiled step per configuration')
    parser.add_argument('--reference', type=float, default=23.0,
                        help='samples/s of the released code on this machine, as given in the issue (not measured here)')
    parser.add_argument('--baseline-package', type=Path, default=None,
                        help='folder of an earlier copy of the package under another name (e.g. before a change: '
                             'cp -r hrkd /tmp/before/hrkd_before): timed in the same interleaved rounds')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    thread_counts = [int(t) for t in str(args.threads).split(',')]
    torch.set_num_threads(thread_counts[0])
    keep_freed_memory()
    load_before = os.getloadavg()
    native_bf16 = resolve_precision('auto', 'cpu') == 'bf16'
    precisions = (['fp32'] + (['bf16'] if native_bf16 else []) if args.precisions == 'native'
                  else [p.strip() for p in args.precisions.split(',')])
    methods = [m.strip() for m in args.methods.split(',')]
    D, rows = args.domains, args.domains * args.per_domain
    batch = make_batch(D, args.per_domain, args.length)
    impls = {'current': implementation('hrkd')}
    if args.baseline_package: impls = {'baseline': load_baseline(args.baseline_package, impls['current']), **impls}
    keys = [(label, method, precision) for label in impls for method in methods for precision in precisions]
    runs = {key: build(impls[key[0]], key[1], D) for key in keys}

    counted, replays = {}, {}
    for key in keys:  # FLOPs and the matmul calls of one step (the same at every thread count)
        total, per_op, calls = count_step(runs[key], key[2], batch, D)
        counted[key], replays[key] = (total, per_op), MatmulReplay(calls)
    targets = {'hrkd_bf16_over_limit': 1.6, 'hrkd_fp32_over_limit': 1.15, 'hrkd_over_tinybert': 1.03}
    measured = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        measured.append(measure(runs, replays, counted, keys, impls, batch, D, rows, args))
        report(measured[-1], targets)
    if not native_bf16 and 'bf16' not in precisions:
        print('bf16 skipped: this CPU has no native bf16 (autocast would emulate it); --precisions fp32,bf16 forces it')
    record = dict(benchmark='distill', shapes=dict(domains=D, per_domain=args.per_domain, length=args.length,
                                                  teacher=OFFLINE_TEACHER, student_layers=OFFLINE_STUDENT_LAYERS),
                  repeats=args.repeats, threads=thread_counts, precisions=precisions, native_bf16=native_bf16,
                  reference_samples_per_s=args.reference, targets=targets,
                  implementations={label: impl.package for label, impl in impls.items()},
                  baseline_package=str(args.baseline_package) if args.baseline_package else None,
                  matmul_calls={f'{k[0]} {k[1]} {k[2]}': replays[k].summary() for k in keys},
                  measured=measured, load_average={'before': load_before, 'after': os.getloadavg()},
                  git=git_state(), torch=torch.__version__, hardware=hardware())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
    main()
