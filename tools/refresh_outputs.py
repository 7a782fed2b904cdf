#!/usr/bin/env python
"""Run lesson notebooks top to bottom and save their outputs, so that the saved outputs (and the docs pages built from
them) are the ones the current code gives.

    python tools/refresh_outputs.py nbs/17_distill.ipynb nbs/21_pipeline.ipynb

Cells are run as `nbdev_test` runs them (in the notebook's folder; cells marked `#| eval: false` or with a flag of
`tst_flags` in settings.ini are skipped and keep what they had); a cell that raises stops the notebook and nothing is
written. Run `nbdev_clean` afterwards.
"""
import configparser, json, os, re, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def copy_outputs(ran: dict, path: Path) -> int:
    "Write the code cells' outputs of the executed notebook `ran` into the notebook at `path` (no progress-bar widgets)."
    old = json.loads(path.read_text())
    if len(ran['cells']) != len(old['cells']): sys.exit(f"the executed copy of {path} has another number of cells")
    kept = 0
    for mine, theirs in zip(old['cells'], ran['cells']):
        if mine['cell_type'] != 'code': continue
        mine['outputs'] = [o for o in theirs.get('outputs', []) if 'application/vnd.jupyter.widget-view+json' not in o.get('data', {})]
        kept += len(mine['outputs'])
    path.write_text(json.dumps(old, indent=1, ensure_ascii=False) + '\n')
    return kept

def skipped(flags):
    def preproc(cell):
        if cell.cell_type != 'code': return False
        directives = [l.strip()[3:].strip() for l in cell.source.splitlines() if l.strip().startswith('#|')]
        return any(re.match(r'eval:\s*false', d) for d in directives) or any(d in flags for d in directives)
    return preproc

def main(paths):
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    settings = configparser.ConfigParser(); settings.read(ROOT / 'settings.ini')
    flags = set(settings['DEFAULT'].get('tst_flags', '').split())
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    for path in map(Path, paths):
        path = path.resolve()
        dest = Path(tempfile.mkdtemp()) / path.name
        here = os.getcwd(); os.chdir(path.parent)
        try: CaptureShell().execute(path, dest, exc_stop=True, preproc=skipped(flags))
        finally: os.chdir(here)
        copy_outputs(json.loads(dest.read_text()), path)
        print(f"{path.relative_to(ROOT)}: outputs saved")

if __name__ == '__main__':
    main(sys.argv[1:])
