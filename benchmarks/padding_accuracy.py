"""Dynamic padding on a short real run: fixed (the paper's 128 tokens) against length buckets, on MNLI (Sec. 3.1).

One mtl teacher (trained with `padding='bucket'`, whose cross-entropy is the same under any padding) and two HRKD
students distilled from it with the same seed, schedule and data: `padding='fixed'` and `padding='bucket'`. Reported:
test and dev accuracy of each student under both selections and their difference, training and evaluation seconds,
the evaluation share of each run's wall time, and the speed-up. Every run folder is resumable (`--resume` is
implied): rerunning the script after an interruption continues where it stopped.

Usage: HRKD_DATA_DIR=... python benchmarks/padding_accuracy.py --out runs/padding-mnli [--teacher-steps 600]
       [--student-steps 300] [--per-domain 8] [--json results/padding-mnli-offline-cpu/padding_accuracy.json]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch

from hrkd.data import tokenize
from hrkd.distill import DistillConfig, distill
from hrkd.models import OFFLINE_TEACHER, load_tokenizer
from hrkd.pipeline import Row, load_data, student_config, teacher_config
from hrkd.teachers import load_teacher, train_teacher
from hrkd.training import git_state, hardware, read_jsonl


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', type=Path, required=True, help='folder of the three run folders (and the cache)')
    parser.add_argument('--teacher-steps', type=int, default=600)
    parser.add_argument('--student-steps', type=int, default=300)
    parser.add_argument('--per-domain', type=int, default=8, help='rows per domain per step (teacher and students)')
    parser.add_argument('--eval-every', type=int, default=50)
    parser.add_argument('--seed', type=int, default=42)
    parser.add_argument('--json', type=Path, default=None, help='write the summary here too')
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(OFFLINE_TEACHER)
    data = tokenize(load_data('mnli'), tokenizer, max_length=128, cache_dir=args.out / 'cache')
    teacher_cfg = teacher_config('mtl', 'offline', args.seed, args.teacher_steps, batch_size=args.per_domain,
                                 eval_every=max(args.teacher_steps // 3, 1), padding='bucket')
    teacher_run = args.out / 'teacher-mtl'
    teacher_results = train_teacher(teacher_cfg, data, teacher_run, tokenizer=tokenizer, resume=True)
    if teacher_results['status'] != 'finished': sys.exit(f"interrupted in {teacher_run}: run the same command again")
    teacher = load_teacher(teacher_run)
    students = {}
    for padding in ('fixed', 'bucket'):
        config = student_config(Row('mtl', 'hrkd'), 'mnli', 'offline', args.seed, None, args.student_steps,
                                batch_size=args.per_domain, eval_every=args.eval_every, padding=padding)
        folder = args.out / f'mtl-hrkd-{padding}'
        started = time.perf_counter()
        results = distill(config, teacher, data, folder, tokenizer=tokenizer, resume=True)
        if results['status'] != 'finished': sys.exit(f"interrupted in {folder}: run the same command again")
        evals = read_jsonl(folder / 'evals.jsonl')
        students[padding] = {'selections': results['selections'], 'train_seconds': results['train_seconds'],
                             'eval_seconds': results['eval_seconds'],
                             'eval_share': results['eval_seconds'] / results['train_seconds'],
                             'steps': args.student_steps, 'evaluations': len(evals),
                             'test_evaluations': sum(e['test'] is not None for e in evals),
                             'this_session_seconds': time.perf_counter() - started}
    fixed, bucket = students['fixed'], students['bucket']
    summary = {
        'benchmark': 'padding_accuracy', 'dataset': 'mnli', 'seed': args.seed, 'per_domain': args.per_domain,
        'teacher': {'config': teacher_cfg.to_dict(), 'test': teacher_results['test'],
                    'train_seconds': teacher_results['train_seconds'], 'eval_seconds': teacher_results['eval_seconds']},
        'students': students,
        'difference_bucket_minus_fixed': {
            selection: {split: {d: bucket['selections'][selection][split][d] - fixed['selections'][selection][split][d]
                                for d in fixed['selections'][selection][split]} for split in ('test', 'dev')}
            for selection in ('shared', 'per_domain')},
        'speedup_train_seconds': fixed['train_seconds'] / bucket['train_seconds'],
        'speedup_training_only': (fixed['train_seconds'] - fixed['eval_seconds']) / (bucket['train_seconds'] - bucket['eval_seconds']),
        'git': git_state(), 'hardware': hardware(), 'torch': torch.__version__, 'load_average_end': os.getloadavg()}
    text = json.dumps(summary, indent=1)
    (args.out / 'padding_accuracy.json').write_text(text)
    if args.json: args.json.parent.mkdir(parents=True, exist_ok=True); args.json.write_text(text)
    print(json.dumps({k: summary[k] for k in ('speedup_train_seconds', 'speedup_training_only')}, indent=1))
    for padding, s in students.items():
        print(padding, {k: round(v, 2) for k, v in s['selections']['shared']['test'].items()}, f"eval share {s['eval_share']:.2f}")


if __name__ == '__main__':
    main()
