"""Write README.md from nbs/index.ipynb without Quarto (`nbdev_readme` needs Quarto, which installs only online).

Markdown cells are copied; code cells are shown as Python blocks unless they carry `#| hide`; `#| echo: false`
shows only a cell's output; markdown and plain-text outputs follow their cell.
Usage: python tools/sync_readme.py [--check]   (--check: exit 1 if README.md is not up to date)
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK, README = ROOT / 'nbs' / 'index.ipynb', ROOT / 'README.md'
HEADER = '<!-- Generated from nbs/index.ipynb by tools/sync_readme.py: edit the notebook, not this file. -->\n\n'


def _directives(source):
    "Split a code cell into its `#|` directives and the rest."
    lines = source.splitlines()
    flags = {ln[3:].strip() for ln in lines if ln.startswith('#|')}
    return flags, '\n'.join(ln for ln in lines if not ln.startswith('#|')).strip()


def _output_text(output):
    data = output.get('data', {})
    if 'text/markdown' in data:
        return ''.join(data['text/markdown']).strip()
    if output.get('output_type') == 'stream':
        return '```\n' + ''.join(output['text']).rstrip() + '\n```'
    if 'text/plain' in data:
        return '```\n' + ''.join(data['text/plain']).rstrip() + '\n```'
    return ''


def render(nb):
    parts = []
    for cell in nb['cells']:
        source = ''.join(cell['source'])
        if cell['cell_type'] == 'markdown':
            parts.append(source.strip())
            continue
        if cell['cell_type'] != 'code':
            continue
        flags, code = _directives(source)
        if 'hide' in flags or 'exporti' in flags:
            continue
        if code and 'echo: false' not in flags:
            parts.append('```python\n' + code + '\n```')
        parts.extend(t for t in map(_output_text, cell.get('outputs', [])) if t)
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = render(json.loads(NOTEBOOK.read_text(encoding='utf-8')))
    if '--check' in argv:
        if not README.exists() or README.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/sync_readme.py`')
        return
    if not README.exists() or README.read_text(encoding='utf-8') != text:
        README.write_text(text, encoding='utf-8')


if __name__ == '__main__':
    main()
