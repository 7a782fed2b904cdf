"""How much of a student training step does the HRKD objective cost? (issue: method, efficiency target < 3%)

One run, on the offline preset shapes: teacher all-MiniLM-L6-v2 (6 layers, 384 wide), student = its embeddings and
layers 2, 4, 6 (M = 3), D = 4 domains, a batch of 32 per domain (128 rows), 128 tokens. It times, with the same
inputs and the same precision:
  * step_kd:   one TinyBERT-KD step (Eq. 5): teacher forward (no grad) + student forward + losses + backward + AdamW
  * step_hrkd: the same step with the HRKD objective (Eq. 17: prototypes, compare-aggregate, graphs, weighting)
  * objective: the objective alone (prototypes + HRKD module + Eq. 17 total, forward and backward into the hidden
               states), on hidden states of the same shapes
and prints objective / step_hrkd and (step_hrkd - step_kd) / step_hrkd, medians of --repeats rounds in which the three
are timed one after another (interleaved, after one warm-up round).
Usage: python benchmarks/objective.py [--repeats 5] [--precision bf16|fp32|both] [--out results/bench_objective.json]
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch

from hrkd.losses import kd_losses
from hrkd.models import (OFFLINE_STUDENT_LAYERS, OFFLINE_TEACHER, FitProjections, student_from_layers,
                         teacher_from_pretrained, uniform_layer_map)
from hrkd.objective import HRKD, hrkd_loss
from hrkd.prototypes import layer_prototypes
from hrkd.training import git_state, hardware


def run(precision, repeats, domains=4, per_domain=32, length=128, seed=0):
    torch.manual_seed(seed)
    names = [f'domain{i}' for i in range(domains)]
    teacher = teacher_from_pretrained(OFFLINE_TEACHER, names, num_labels=2).eval()
    student = student_from_layers(teacher, OFFLINE_STUDENT_LAYERS, names, num_labels=2).train()
    M, N = student.num_layers, teacher.num_layers
    layer_map = uniform_layer_map(M, N)
    fit = FitProjections(M, student.hidden_size, teacher.hidden_size)
    objective = HRKD(M, domains, student.hidden_size).train()
    params = [p for m in (student, fit, objective) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    rows = domains * per_domain
    batch = dict(input_ids=torch.randint(1000, 30000, (rows, length)),
                 attention_mask=torch.ones(rows, length, dtype=torch.long),
                 token_type_ids=torch.zeros(rows, length, dtype=torch.long))
    batch['attention_mask'][::3, length // 2:] = 0  # some padding, as in real batches
    domain_ids = torch.arange(domains).repeat_interleave(per_domain)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bf16')

    def step(with_hrkd):
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            with torch.no_grad(): t = teacher(**batch, domain_ids=domain_ids)
            s = student(**batch, domain_ids=domain_ids)
            losses = kd_losses(fit(s.hidden_states), t.hidden_states, s.attention_scores, t.attention_scores,
                               s.logits, t.logits, layer_map, domain_ids, domains)
            ratios = None
            if with_hrkd:
                prototypes = layer_prototypes(s.hidden_states, batch['attention_mask'], domain_ids, domains)
                ratios = objective(prototypes.float()).ratios
            total = hrkd_loss(losses.layers.float(), losses.prediction.float(), ratios)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    with torch.no_grad(), autocast:
        hidden = [h.detach().float() for h in student(**batch, domain_ids=domain_ids).hidden_states]
    hidden = [h.requires_grad_() for h in hidden]

    def objective_only():
        with autocast:
            prototypes = layer_prototypes(hidden, batch['attention_mask'], domain_ids, domains)
            total = hrkd_loss(torch.ones(M + 1, domains), torch.ones(domains), objective(prototypes.float()).ratios)
        total.backward()

    # interleave the three measurements so that load from elsewhere on the machine hits them alike
    step(False); step(True); objective_only()  # warm-up
    times = {'kd': [], 'hrkd': [], 'objective': []}
    for _ in range(repeats):
        for name, fn in (('kd', lambda: step(False)), ('hrkd', lambda: step(True)), ('objective', objective_only)):
            start = time.perf_counter(); fn(); times[name].append(time.perf_counter() - start)
    step_kd, step_hrkd, obj = (statistics.median(times[k]) for k in ('kd', 'hrkd', 'objective'))
    return dict(precision=precision, step_kd_s=step_kd, step_hrkd_s=step_hrkd, objective_s=obj,
                objective_fraction=obj / step_hrkd, step_overhead_fraction=(step_hrkd - step_kd) / step_hrkd,
                samples_per_s_kd=rows / step_kd, samples_per_s_hrkd=rows / step_hrkd)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--precision', choices=['bf16', 'fp32', 'both'], default='both')
    parser.add_argument('--out', type=Path, default=None, help='also write the results as JSON here')
    args = parser.parse_args()
    precisions = ['bf16', 'fp32'] if args.precision == 'both' else [args.precision]
    results = [run(p, args.repeats) for p in precisions]
    record = dict(benchmark='objective', shapes=dict(domains=4, per_domain=32, length=128, teacher=OFFLINE_TEACHER,
                                                     student_layers=OFFLINE_STUDENT_LAYERS),
                  repeats=args.repeats, git=git_state(), torch=torch.__version__, hardware=hardware(), results=results)
    for r in results:
        print(f"{r['precision']}: KD step {r['step_kd_s']:.3f}s, HRKD step {r['step_hrkd_s']:.3f}s, "
              f"objective {r['objective_s'] * 1e3:.1f}ms = {100 * r['objective_fraction']:.2f}% of an HRKD step "
              f"(step difference {100 * r['step_overhead_fraction']:.2f}%)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
    main()
