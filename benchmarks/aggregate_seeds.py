"""Aggregate the pipeline summaries of several seeds into one table (mean, sd, paired t-tests).

    python benchmarks/aggregate_seeds.py results/amazon-offline-h100

reads FOLDER/s*/summary.json (written by `hrkd pipeline`) and writes FOLDER/seeds.md and FOLDER/seeds.json.
"""
import json
import statistics
import sys
from pathlib import Path

from scipy import stats


def main(folder):
    folder = Path(folder)
    summaries = {int(p.parent.name[1:]): json.loads(p.read_text()) for p in sorted(folder.glob('s*/summary.json'))}
    if len(summaries) < 2: raise SystemExit(f"{folder}: need summaries of at least 2 seeds in s<seed>/summary.json")
    seeds = sorted(summaries)
    domains = summaries[seeds[0]]['domains']
    models = list(summaries[seeds[0]]['models'])
    table = {}
    for selection in ('shared', 'per_domain'):
        table[selection] = {}
        for m in models:
            per_seed = [summaries[s]['models'][m]['selections'][selection]['test'] for s in seeds]
            table[selection][m] = {c: {'mean': statistics.mean(r[c] for r in per_seed), 'sd': statistics.stdev(r[c] for r in per_seed),
                                       'seeds': [r[c] for r in per_seed]} for c in [*domains, 'average']}
    pairs = [('HRKD', 'TinyBERT-KD (multi-domain)'), ('HRKD', 'Meta-KD (one student per domain)'),
             ('Meta-KD (one student per domain)', 'TinyBERT-KD (multi-domain)')]
    tests = {}
    for selection in ('shared', 'per_domain'):
        for a, b in pairs:
            if a not in models or b not in models: continue
            x, y = table[selection][a]['average']['seeds'], table[selection][b]['average']['seeds']
            t = stats.ttest_rel(x, y)
            tests[f'{selection}: {a} - {b}'] = {'mean_difference': statistics.mean(x) - statistics.mean(y),
                                                't': float(t.statistic), 'p_two_sided': float(t.pvalue)}
    costs = {s: summaries[s].get('pipeline_seconds', {}) for s in seeds}
    out = {'seeds': seeds, 'domains': domains, 'test': table, 'paired_t_tests': tests, 'pipeline_seconds': costs,
           'git': {s: summaries[s]['git'] for s in seeds}, 'hardware': summaries[seeds[0]]['hardware']}
    (folder / 'seeds.json').write_text(json.dumps(out, indent=1))
    lines = [f"Test accuracy (%), mean ± sd over seeds {', '.join(map(str, seeds))}; written by benchmarks/aggregate_seeds.py.", '']
    for selection, title in (('shared', 'one checkpoint per model (best dev average)'),
                             ('per_domain', "each domain's best dev checkpoint (the released code's selection)")):
        lines += [f'**Selection: {title}**', '', '| model | ' + ' | '.join(domains) + ' | average |',
                  '|---' * (len(domains) + 2) + '|']
        for m in models:
            r = table[selection][m]
            lines.append(f'| {m} | ' + ' | '.join(f"{r[c]['mean']:.2f} ± {r[c]['sd']:.2f}" for c in [*domains, 'average']) + ' |')
        lines.append('')
    lines += ['**Paired t-tests on the average (same seeds)**', '', '| comparison | mean difference | t | p (two-sided) |',
              '|---|---|---|---|']
    lines += [f"| {k} | {v['mean_difference']:+.2f} | {v['t']:.2f} | {v['p_two_sided']:.3f} |" for k, v in tests.items()]
    (folder / 'seeds.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'results/amazon-offline-h100')
