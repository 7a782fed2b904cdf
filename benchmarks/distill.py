"""Training throughput of the distillation step: multi-domain TinyBERT-KD (Eq. 5) vs HRKD (Eq. 17), fp32 vs bf16.

One run, the offline preset shapes of the throughput target: D = 4 domains x 8 rows per domain (32 rows per step),
128 tokens, teacher all-MiniLM-L6-v2 (6 layers, 384 wide), student = its embeddings and layers 2, 4, 6 (M = 3).
Each timed step is the trainer's own: `hrkd.distill.distill_step` (teacher forward under no_grad, student forward,
Eqs. 1-4 per domain, and for HRKD prototypes + compare-aggregate + graphs + Eq. 17) followed by
`hrkd.training.clip_and_step` (backward, clip at 1.0, fused AdamW, schedule). The four configurations are timed in
interleaved rounds after one warm-up round, so load from elsewhere on the machine hits them alike; medians reported.
Usage: python benchmarks/distill.py [--repeats 8] [--per-domain 8] [--out results/bench_distill.json]
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

from hrkd.distill import DistillConfig, distill_step
from hrkd.models import (OFFLINE_STUDENT_LAYERS, OFFLINE_TEACHER, FitProjections, student_from_layers,
                         teacher_from_pretrained, uniform_layer_map)
from hrkd.objective import ABLATIONS, HRKD
from hrkd.training import (autocast, clip_and_step, decay_parameter_groups, git_state, hardware, keep_freed_memory,
                           linear_warmup_schedule, make_optimizer)


def build(method, domains, seed=0):
    torch.manual_seed(seed)
    names = [f'domain{i}' for i in range(domains)]
    teacher = teacher_from_pretrained(OFFLINE_TEACHER, names, num_labels=2).eval().requires_grad_(False)
    student = student_from_layers(OFFLINE_TEACHER, OFFLINE_STUDENT_LAYERS, names, num_labels=2).train()
    M = student.num_layers
    fit = FitProjections(M, student.hidden_size, teacher.hidden_size)
    config = DistillConfig(method=method)
    objective = HRKD(M, domains, student.hidden_size, **ABLATIONS['hrkd']) if method == 'hrkd' else None
    modules = [m for m in (student, fit, objective) if m is not None]
    optimizer = make_optimizer(decay_parameter_groups(modules), lr=1e-5)
    scheduler = linear_warmup_schedule(optimizer, 10_000)
    return dict(teacher=teacher, student=student, fit=fit, objective=objective, config=config, optimizer=optimizer,
                scheduler=scheduler, layer_map=uniform_layer_map(M, teacher.num_layers))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=8)
    parser.add_argument('--domains', type=int, default=4)
    parser.add_argument('--per-domain', type=int, default=8)
    parser.add_argument('--length', type=int, default=128)
    parser.add_argument('--reference', type=float, default=23.0,
                        help='samples/s of the released code on this machine, as given in the issue (not measured here)')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    keep_freed_memory()
    D, rows = args.domains, args.domains * args.per_domain
    generator = torch.Generator().manual_seed(0)
    batch = dict(input_ids=torch.randint(1000, 30000, (rows, args.length), generator=generator),
                 attention_mask=torch.ones(rows, args.length, dtype=torch.long),
                 token_type_ids=torch.zeros(rows, args.length, dtype=torch.long),
                 domain_ids=torch.arange(D).repeat_interleave(args.per_domain))
    batch['attention_mask'][::3, args.length // 2:] = 0  # some padding, as in real batches
    runs = {(method, precision): build(method, D) for method in ('tinybert', 'hrkd') for precision in ('fp32', 'bf16')}

    def step(key):
        r, (method, precision) = runs[key], key
        for m in (r['student'], r['fit'], r['objective']):
            if m is not None: m.train()
        with autocast(precision):
            loss, _ = distill_step(r['student'], r['teacher'], r['fit'], r['objective'], batch, r['layer_map'], D, r['config'])
        clip_and_step(loss, r['optimizer'], r['scheduler'], 1.0)

    for key in runs: step(key)  # warm-up
    times = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key in runs:
            start = time.perf_counter(); step(key); times[key].append(time.perf_counter() - start)
    results = []
    for (method, precision), ts in times.items():
        median = statistics.median(ts)
        results.append(dict(method=method, precision=precision, step_s=median, samples_per_s=rows / median,
                            vs_reference=rows / median / args.reference))
    by = {(r['method'], r['precision']): r for r in results}
    overhead = {p: by[('hrkd', p)]['step_s'] / by[('tinybert', p)]['step_s'] for p in ('fp32', 'bf16')}
    for r in results:
        print(f"{r['method']:8s} {r['precision']}: {r['step_s']:.3f} s/step, {r['samples_per_s']:.1f} samples/s "
              f"({r['vs_reference']:.2f}x the {args.reference} samples/s reference)")
    for p, v in overhead.items(): print(f"HRKD / TinyBERT-KD step time, {p}: {v:.3f}")
    record = dict(benchmark='distill', shapes=dict(domains=D, per_domain=args.per_domain, length=args.length,
                                                  teacher=OFFLINE_TEACHER, student_layers=OFFLINE_STUDENT_LAYERS),
                  repeats=args.repeats, reference_samples_per_s=args.reference, results=results,
                  hrkd_over_tinybert_step=overhead, git=git_state(), torch=torch.__version__, hardware=hardware())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
    main()
