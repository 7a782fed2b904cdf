#!/usr/bin/env python
"""Save an example run's outputs into an experiment notebook, so that its documentation page shows them.

    python tools/example_outputs.py nbs/experiments/tables.ipynb           # its default parameters, from the checkout
    python tools/example_outputs.py nbs/experiments/pipeline.ipynb --cwd /tmp/example

The notebook runs with papermill and its default parameters (no injected cell), in `--cwd` (default: the checkout);
its cells' outputs are copied into the committed notebook, cell by cell, without progress-bar widgets; sources, ids
and metadata stay as they are. papermill replaces these outputs whenever it runs the notebook for a grid cell, so
they are an example only. Run `nbdev_clean` afterwards (the test command checks that it would change nothing).
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from refresh_outputs import copy_outputs  # noqa: E402

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebook', type=Path)
    p.add_argument('--cwd', type=Path, default=ROOT)
    args = p.parse_args()
    args.cwd.mkdir(parents=True, exist_ok=True)
    executed = Path(tempfile.mkdtemp()) / args.notebook.name
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    subprocess.run([sys.executable, '-m', 'papermill', str(args.notebook.resolve()), str(executed), '--cwd', str(args.cwd),
                    '--no-progress-bar'], check=True, env=env)
    kept = copy_outputs(json.loads(executed.read_text()), args.notebook)
    print(f"{args.notebook}: {kept} outputs saved from {executed}")

if __name__ == '__main__':
    main()
