"""Dynamic padding on the real MNLI subset: how much of a fixed 128-token row is padding, and what trimming each
batch to its longest row (`trim=True`) and length buckets (`bucket=K`) save in one distillation step.

Data: `hrkd.data.mnli()` under $HRKD_DATA_DIR (the project's 20,000-pair training sample and 8,611 dev_matched
pairs), tokenized with the offline teacher's tokenizer (`hrkd.models.load_tokenizer(OFFLINE_TEACHER)`) at the
paper's `max_length=128`.
1. Padding share per split: the fraction of the 128 positions of all rows that are padding; real-length statistics.
2. Widths over one training epoch of `MultiDomainLoader` (5 domains x `--per-domain` rows): the mean padded width
   of a step, and the mean of width^2 (the attention scores' cost), fixed vs trim vs trim + bucket.
3. Step time: the trainer's own step (`hrkd.distill.distill_step` + `clip_and_step`, HRKD, teacher all-MiniLM-L6-v2,
   student = its embeddings and layers 2, 4, 6) on the first `--steps` batches of epoch 0 of each loader, timed in
   interleaved order (step s of every configuration, then step s+1, ...) after one warm-up step each; totals compared.
4. Losses on one real batch at 128 and trimmed: the relative change of each layer loss in the paper's form (with
   the fixed-length normaliser, `full_length=128`) and in the masked form (`attention_mask`), which is invariant.
Usage: python benchmarks/padding.py [--steps 12] [--per-domain 8] [--bucket 50] [--out results/bench_padding.json]
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import numpy as np
import torch

from hrkd.data import MultiDomainLoader, _row_lengths, mnli, tokenize
from hrkd.distill import DistillConfig, distill_step
from hrkd.losses import kd_losses
from hrkd.models import (OFFLINE_STUDENT_LAYERS, OFFLINE_TEACHER, FitProjections, load_tokenizer, student_from_layers,
                         teacher_from_pretrained, uniform_layer_map)
from hrkd.objective import ABLATIONS, HRKD
from hrkd.training import (autocast, clip_and_step, decay_parameter_groups, git_state, hardware, keep_freed_memory,
                           linear_warmup_schedule, make_optimizer, resolve_precision)


def build(domains, num_labels, seed=0):
    "Teacher, student, fit projections, HRKD objective and optimizer of the offline preset (as benchmarks/distill.py)."
    torch.manual_seed(seed)
    teacher = teacher_from_pretrained(OFFLINE_TEACHER, domains, num_labels=num_labels).eval().requires_grad_(False)
    student = student_from_layers(OFFLINE_TEACHER, OFFLINE_STUDENT_LAYERS, domains, num_labels=num_labels).train()
    M = student.num_layers
    fit = FitProjections(M, student.hidden_size, teacher.hidden_size)
    objective = HRKD(M, len(domains), student.hidden_size, **ABLATIONS['hrkd'])
    optimizer = make_optimizer(decay_parameter_groups([student, fit, objective]), lr=1e-5)
    return dict(teacher=teacher, student=student, fit=fit, objective=objective, config=DistillConfig(method='hrkd'),
                optimizer=optimizer, scheduler=linear_warmup_schedule(optimizer, 10_000),
                layer_map=uniform_layer_map(M, teacher.num_layers))


def train_step(run, precision, batch, domains):
    for m in (run['student'], run['fit'], run['objective']): m.train()
    with autocast(precision):
        loss, _ = distill_step(run['student'], run['teacher'], run['fit'], run['objective'], batch, run['layer_map'],
                               domains, run['config'])
    clip_and_step(loss, run['optimizer'], run['scheduler'], 1.0)


def epoch_widths(loader, lengths, trim) -> np.ndarray:  # [steps] padded width of every step of epoch 0
    loader.set_epoch(0)
    if not trim: return np.full(len(loader), 128)
    return np.array([lengths[loader.batch_indices(s).reshape(-1).numpy()].max() for s in range(len(loader))])


def loss_changes(run, batch, num_domains) -> dict:
    "Relative change of each layer loss (per domain, largest) when the batch is trimmed, paper's form vs masked form."
    from hrkd.data import trim_padding
    out = {}
    with torch.no_grad():
        def losses(b, full_length, masked):
            inputs = dict(input_ids=b['input_ids'], attention_mask=b['attention_mask'], token_type_ids=b['token_type_ids'])
            t = run['teacher'].eval()(**inputs, domain_ids=b['domain_ids'])
            s = run['student'].eval()(**inputs, domain_ids=b['domain_ids'])
            return kd_losses(run['fit'](s.hidden_states), t.hidden_states, s.attention_scores, t.attention_scores,
                             s.logits, t.logits, run['layer_map'], b['domain_ids'], num_domains, full_length=full_length,
                             attention_mask=b['attention_mask'] if masked else None)
        cut = trim_padding(batch)
        for form, masked in (('paper (all positions)', False), ('masked (real positions)', True)):
            fixed, trimmed = losses(batch, None, masked), losses(cut, 128, masked)
            out[form] = {name: float(((getattr(trimmed, name) - getattr(fixed, name)) / getattr(fixed, name)).abs().max())
                         for name in ('embedding', 'attention', 'hidden', 'prediction')}
        out['trimmed_width'] = int(cut['input_ids'].shape[1])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=12, help='timed steps per configuration')
    parser.add_argument('--per-domain', type=int, default=8, help='rows per domain per step')
    parser.add_argument('--bucket', type=int, default=50, help='batches per length-bucket chunk')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--precision', default='auto', help="'auto': bf16 where native, else fp32")
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    load_before = os.getloadavg()
    precision = resolve_precision(args.precision, 'cpu')

    raw = mnli()
    tokenizer = load_tokenizer(OFFLINE_TEACHER)
    data = tokenize(raw, tokenizer, max_length=128)
    domains = data['train'].features['domain_id'].names
    lengths = {split: _row_lengths(ds) for split, ds in data.items()}
    padding = {split: {'rows': int(len(n)), 'padding_share': float(1 - n.sum() / (128 * len(n))),
                       'mean_length': float(n.mean()), 'median_length': float(np.median(n)),
                       'p95_length': float(np.percentile(n, 95)), 'max_length': int(n.max()),
                       'truncated_share': float((n == 128).mean())} for split, n in lengths.items()}
    for split, p in padding.items():
        print(f"{split}: {p['rows']} rows, padding share {p['padding_share']:.1%} (mean real length {p['mean_length']:.1f})")

    b = args.per_domain
    configs = {'fixed': dict(), 'trim': dict(trim=True), f'trim+bucket{args.bucket}': dict(trim=True, bucket=args.bucket)}
    loaders = {name: MultiDomainLoader(data['train'], batch_size=b, seed=0, pad_token_id=tokenizer.pad_token_id, **kw)
               for name, kw in configs.items()}
    widths = {name: epoch_widths(loader, lengths['train'], configs[name].get('trim', False)) for name, loader in loaders.items()}
    width_stats = {name: {'mean_width': float(w.mean()), 'mean_width_squared_over_128_squared': float((w ** 2).mean() / 128 ** 2),
                          'steps': int(len(w))} for name, w in widths.items()}
    for name, w in width_stats.items(): print(f"{name}: mean width {w['mean_width']:.1f} over {w['steps']} steps")

    run = {name: build(domains, 3) for name in configs}  # one identical model set per configuration (same seed)
    batches = {name: [loader.batch(s) for s in range(args.steps + 1)] for name, loader in loaders.items()}
    for name in configs: train_step(run[name], precision, batches[name][0], len(domains))  # warm-up
    times = {name: [] for name in configs}
    for s in range(1, args.steps + 1):
        for name in configs:
            start = time.perf_counter(); train_step(run[name], precision, batches[name][s], len(domains))
            times[name].append(time.perf_counter() - start)
    total = {name: sum(t) for name, t in times.items()}
    steps = {name: dict(total_s=total[name], mean_step_s=total[name] / args.steps, median_step_s=statistics.median(times[name]),
                        samples_per_s=args.steps * b * len(domains) / total[name], speedup_vs_fixed=total['fixed'] / total[name],
                        widths=[int(x['input_ids'].shape[1]) for x in batches[name][1:]], step_times_s=times[name])
             for name in configs}
    for name, r in steps.items():
        print(f"{name}: {r['mean_step_s']:.3f} s/step, {r['samples_per_s']:.1f} samples/s, speed-up {r['speedup_vs_fixed']:.2f}x")

    changes = loss_changes(build(domains, 3), next(iter(MultiDomainLoader(data['dev'], batch_size=b, seed=0))), len(domains))
    for form in ('paper (all positions)', 'masked (real positions)'):
        print(f"losses trimmed vs 128, {form}: " + ', '.join(f"{k} {v:.2%}" for k, v in changes[form].items()))
    record = dict(benchmark='padding', data='hrkd.data.mnli() under HRKD_DATA_DIR, max_length 128, tokenizer of ' + OFFLINE_TEACHER,
                  padding=padding, per_domain=b, domains=domains, bucket=args.bucket, epoch_widths=width_stats,
                  precision=precision, steps_timed=args.steps, step_timing=steps, loss_change_on_trimming=changes,
                  threads=torch.get_num_threads(), load_average={'before': load_before, 'after': os.getloadavg()},
                  git=git_state(), torch=torch.__version__, hardware=hardware())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
    main()
