"""What the teacher-output cache and trimmed evaluation buy on this machine, measured in one run.

1. A student stage with and without the cache, back to back and interleaved (on, off, off, on): TinyBERT-KD (Eq. 5) of
   the `offline-2layer` preset on Amazon, `--steps` optimizer steps of 4 x 32 rows with evaluation every 50, distilled
   from a finished teacher run. The cache is built once before the timed runs; its build time and size are reported.
2. The cache's size and build time for MNLI (5 genres, the genre-tagged subset; bucket padding stores rows at their
   real length), from the preset's teacher (the build does not depend on the teacher's weights).
3. One evaluation pass (dev and test) of the student, fixed-length batches against rows by length with each batch cut
   to its longest row, on Amazon and MNLI: the share of a stage's wall time that evaluation takes, before and after.

Usage: HRKD_DATA_DIR=... python benchmarks/teacher_cache.py --teacher RUN --out DIR [--steps 100] [--stage-only] [--json results/bench_teacher_cache.json]
"""
import argparse, json, os, shutil, statistics, sys, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
import torch

from hrkd.data import tokenize
from hrkd.distill import DistillConfig, distill, load_student
from hrkd.models import load_tokenizer, teacher_from_pretrained, uniform_layer_map
from hrkd.pipeline import PRESETS, Row, load_data, student_config
from hrkd.runs import evaluate_splits
from hrkd.teacher_cache import open_teacher_cache
from hrkd.teachers import load_teacher
from hrkd.training import git_state, hardware, resolve_precision


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--teacher', type=Path, required=True, help='a finished mtl teacher run of Amazon (offline-2layer preset)')
    p.add_argument('--out', type=Path, required=True, help='scratch folder for the student runs and the caches')
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--cache-dir', type=Path, default=None, help='where the Amazon cache is (or goes); default OUT/cache')
    p.add_argument('--stage-only', action='store_true', help='part 1 only (the student stage with and without the cache)')
    p.add_argument('--json', type=Path, default=None)
    args = p.parse_args()
    preset, precision = PRESETS['offline-2layer'], resolve_precision('auto')
    tokenizer = load_tokenizer(preset['teacher'])
    amazon = tokenize(load_data('amazon'), tokenizer, max_length=128, cache_dir=args.out / 'tokens')
    teacher = load_teacher(args.teacher).eval()
    cache_root = args.cache_dir or args.out / 'cache'
    started = time.perf_counter()
    cache = open_teacher_cache(teacher, amazon['train'], uniform_layer_map(2, 6), cache_root, precision, batch_size=128, log=None)
    amazon_cache = {'rows': len(cache), 'gigabytes': cache.nbytes / 1e9, 'build_seconds': time.perf_counter() - started}
    runs = []
    for k, mode in enumerate(('on', 'off', 'off', 'on')):
        config = student_config(Row('mtl', 'tinybert'), 'amazon', 'offline-2layer', max_steps=args.steps, teacher_cache=mode)
        folder = args.out / f'student-{k}-{mode}'; shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        result = distill(config, teacher, amazon, folder, tokenizer=tokenizer, progress=False, cache_dir=cache_root)
        runs.append({'teacher_cache': mode, 'wall_seconds': time.perf_counter() - t0, 'train_seconds': result['train_seconds'],
                     'eval_seconds': result['eval_seconds'], 'peak_anon_mb': result['peak_anon_mb'],
                     'peak_rss_mb': result['peak_rss_mb'], 'test_average': result['test']['average']})
        print(runs[-1], file=sys.stderr)
    on = statistics.median(r['wall_seconds'] for r in runs if r['teacher_cache'] == 'on')
    off = statistics.median(r['wall_seconds'] for r in runs if r['teacher_cache'] == 'off')
    if args.stage_only:
        result = {'git': git_state(), 'hardware': hardware(), 'precision': precision, 'load_average': os.getloadavg(),
                  'student_stage': {'steps': args.steps, 'runs': runs, 'median_wall_on': on, 'median_wall_off': off, 'ratio_on_off': on / off},
                  'cache': {'amazon': amazon_cache}}
        print(json.dumps({k: v for k, v in result.items() if k != 'hardware'}, indent=1))
        if args.json: args.json.write_text(json.dumps(result, indent=1) + '\n')
        return
    student = load_student(args.out / 'student-0-on')
    evaluation = {}
    mnli = tokenize(load_data('mnli'), tokenizer, max_length=128, cache_dir=args.out / 'tokens')
    for name, data in (('amazon', amazon), ('mnli', mnli)):
        domains = data['train'].features['domain_id'].names
        model = student if name == 'amazon' else teacher_from_pretrained(preset['student'], domains, 3)
        if name == 'mnli':  # the same 2-layer student shape on MNLI's 5 heads
            from hrkd.distill import _build_student
            model = _build_student(student_config(Row('mtl', 'tinybert'), 'mnli', 'offline-2layer'), domains, 3, 'cpu')
        times = {}
        for trim in (False, True, False, True):
            t0 = time.perf_counter()
            evaluate_splits(model, data, domains, batch_size=64, precision=precision, trim=trim)
            times.setdefault(trim, []).append(time.perf_counter() - t0)
        evaluation[name] = {'rows': data['dev'].num_rows + data['test'].num_rows,
                            'fixed_seconds': statistics.median(times[False]), 'trimmed_seconds': statistics.median(times[True])}
    mnli_teacher = teacher_from_pretrained(preset['teacher'], mnli['train'].features['domain_id'].names, 3).eval()
    t0 = time.perf_counter()
    mcache = open_teacher_cache(mnli_teacher, mnli['train'], uniform_layer_map(2, 6), args.out / 'cache-mnli', precision,
                                ragged=True, batch_size=160, log=None)
    mnli_cache = {'rows': len(mcache), 'gigabytes': mcache.nbytes / 1e9, 'build_seconds': time.perf_counter() - t0, 'ragged': True}
    result = {'git': git_state(), 'hardware': hardware(), 'precision': precision, 'load_average': os.getloadavg(),
              'student_stage': {'steps': args.steps, 'runs': runs, 'median_wall_on': on, 'median_wall_off': off, 'ratio_on_off': on / off},
              'cache': {'amazon': amazon_cache, 'mnli': mnli_cache}, 'evaluation_pass': evaluation}
    print(json.dumps({k: v for k, v in result.items() if k != 'hardware'}, indent=1))
    if args.json: args.json.write_text(json.dumps(result, indent=1) + '\n')


if __name__ == '__main__':
    main()
