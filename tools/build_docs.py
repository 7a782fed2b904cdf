#!/usr/bin/env python
"""Build the documentation site offline: nbdev's notebook processing, then Sphinx as configured in docs/.

    python tools/build_docs.py            # writes _site/html/; open _site/html/index.html
    python tools/build_docs.py --clean    # rebuild everything from scratch

Needs the `docs` extra (`pip install -e ".[docs]"`, also part of `dev`) and nothing from the network.

1. nbdev's `proc_nbs` (what `nbdev_proc_nbs` runs, without its Quarto install and its rewrite of nbs/'s Quarto files)
   writes the git-ignored `_proc/`: `show_doc` rendered, hidden and exported cells gone, API names linked.
2. The adapter below writes each processed notebook into docs/ (git-ignored there) as myst-nb reads it: the title
   cell nbdev turned into front matter back in place, Quarto's `#|` options as myst-nb tags, `show_doc` output as
   markdown (a section of the page), nbdev's links to its own site and notebook names in backticks as links between
   pages. nbs/index.ipynb becomes docs/_home.md, which docs/index.md (the home page and the sidebar) includes.
3. `sphinx-build -W -n`: docs/ -> `_site/html/` (warnings are errors: a broken link between pages, a notebook in no
   toctree, a toctree entry without its notebook), then Sphinx's `linkcheck` builder on the local links.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS, SITE = ROOT / 'docs', ROOT / '_site'
HOME = '_home.md'  # nbs/index.ipynb as markdown, included by docs/index.md
ENV = dict(os.environ, TOKENIZERS_PARALLELISM='false', MPLBACKEND='Agg', HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1',
           # quiet, but for nbdev's warning on a cell it runs in full because it also imports (see nbdev's FAQ)
           PYTHONWARNINGS='ignore,default:Found cells containing imports')


def settings():
    ini = ConfigParser(delimiters=['='])
    ini.read(ROOT / 'settings.ini', encoding='utf-8')
    return ini['DEFAULT']


def missing_docs_deps():
    "The docs extra's modules that cannot be imported (empty when the builder can run)."
    mods = {'nbdev': 'nbdev', 'sphinx': 'sphinx', 'myst_nb': 'myst-nb', 'sphinx_book_theme': 'sphinx-book-theme',
            'sphinx-mathjax-offline': 'sphinx-mathjax-offline'}  # the last one imports by its hyphenated name
    return [pkg for mod, pkg in mods.items() if importlib.util.find_spec(mod) is None]


def notebooks(nbs):
    "The notebooks nbdev documents: nbs/**/*.ipynb, without hidden or `_` folders (nbdev's _proc, checkpoints)."
    return sorted(p.relative_to(nbs) for p in nbs.rglob('*.ipynb')
                  if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts))


def _text(x): return ''.join(x) if isinstance(x, list) else x
def _md(source): return {'cell_type': 'markdown', 'metadata': {}, 'source': source}


class Adapter:
    "One processed notebook (nbdev's `_proc/`) -> one myst-nb page in docs/."
    QUARTO_TAGS = {('echo', 'false'): 'remove-input', ('output', 'false'): 'remove-output',
                   ('include', 'false'): 'remove-cell', ('code-fold', 'true'): 'hide-input'}

    def __init__(self, cfg, nbs, proc, pages):
        self.nbs, self.proc = nbs, proc
        self.docs = {p.with_suffix('').as_posix() for p in pages}  # docnames: a notebook's path without .ipynb
        self.by_page, self.anchors = {}, {}  # nbdev's page name -> docname (07_graph -> graph.html), docname -> anchors
        for p in pages:
            cells = json.loads((proc / p).read_text(encoding='utf-8'))['cells']
            raw = '\n'.join(_text(c['source']) for c in cells if c['cell_type'] == 'raw')  # front matter: output-file
            m = re.search(r'^output-file:\s*(\S+)\.html\s*$', raw, re.M)
            self.by_page[(p.parent / m[1]).as_posix() if m else p.with_suffix('').as_posix()] = doc = p.with_suffix('').as_posix()
            text = '\n'.join([_text(c['source']) for c in cells if c['cell_type'] == 'markdown'] + [
                _text(o['data']['text/markdown']) for c in cells for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})])
            self.anchors[doc] = {self.slug(h) for h in re.findall(r'^#{1,6}\s+(.*?)\s*$', text, re.M)}
        host = re.escape(cfg['doc_host'].rstrip('/') + '/' + cfg['doc_baseurl'].strip('/') + '/')
        self.re_nbdev = re.compile(rf'\]\({host}([\w./-]+)\.html(?:#([^)\s]*))?\)')
        self.re_span = re.compile(r'(?<![\[`])`([\w./-]+?)/?`(?![`\]])')

    @staticmethod
    def slug(heading): return re.sub(r'[^\w\- ]', '', re.sub(r'[`*]', '', heading).strip().lower()).replace(' ', '-')  # MyST's

    def link(self, target, doc, anchor=''):
        """A MyST link from page `doc` to page `target`, at the heading nbdev's (Pandoc's) `anchor` names; one with no
        heading of its own (a method, a private class) goes to its class's heading, else to the page."""
        rel = os.path.relpath(target + ('.md' if target.startswith('results/') else '.ipynb'), os.path.dirname(doc) or '.')
        while anchor and self.slug(anchor) not in self.anchors.get(target, ()): anchor = anchor.rpartition('.')[0]
        return rel + ('#' + self.slug(anchor) if anchor else '')

    def markdown(self, text, doc):
        """Links of one markdown text, outside code blocks: nbdev's doc site -> pages; `07_graph`, `results/x/` -> links;
        `87.06 ± 1.04` on one line (as docs/conf.py does for the results' markdown)."""
        def nbdev(m):
            target = self.by_page.get(m[1])
            return f']({self.link(target, doc, m[2] or "")})' if target else m[0]

        def span(m):
            name = m[1]
            if name in self.docs and '/' not in name and name != 'index': return f'[{m[0]}]({self.link(name, doc)})'
            if re.fullmatch(r'results/[\w.-]+', name) and (DOCS / f'{name}.md').exists(): return f'[{m[0]}]({self.link(name, doc)})'
            return m[0]
        parts = re.split(r'(^[ \t]*```.*?^[ \t]*```)', text, flags=re.M | re.S)  # fenced code stays as it is
        return ''.join(p if i % 2 else self.re_span.sub(span, self.re_nbdev.sub(nbdev, p)).replace(' ± ', '\u00a0±\u00a0')
                       for i, p in enumerate(parts))

    def title_cell(self, rel):
        "The notebook's title cell (`# title`, `> summary`, any text after them), which nbdev makes front matter of."
        for c in json.loads((self.nbs / rel).read_text(encoding='utf-8'))['cells']:
            if c['cell_type'] == 'markdown' and re.search(r'^#\s+\S', _text(c['source']), re.M): return _text(c['source'])

    @staticmethod
    def show_doc(md):
        "nbdev's `---` and Quarto-styled `[source]` link before an entry's heading -> the link under the heading (CSS floats it)."
        md = re.sub(r'^\s*---\s*\n', '', md)
        return re.sub(r'^\s*(\[source\]\([^)\s]*\))(?:\{[^}]*\})?\s*\n+(#{1,6} [^\n]*\n)', r'\2\n\1{.showdoc-source}\n', md)

    def code(self, cell, doc):
        lines, opts = _text(cell['source']).split('\n'), {}
        while lines and (m := re.match(r'\s*#\|\s*([\w-]+):?\s*(.*?)\s*$', lines[0])):
            opts[m[1].lower()] = m[2].strip('"\'').lower()
            lines.pop(0)
        tags = cell.get('metadata', {}).get('tags', []) + [t for (k, v), t in self.QUARTO_TAGS.items() if opts.get(k) == v]
        out = []
        if opts.get('output') == 'asis':  # show_doc: its markdown is part of the page, its heading a section
            out = [_md(self.markdown(self.show_doc(_text(o['data']['text/markdown'])), doc))
                   for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            tags.append('remove-output')
        for o in cell.get('outputs', []):
            if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = self.markdown(_text(o['data']['text/markdown']), doc)
        cell = dict(cell, source='\n'.join(lines).strip('\n'), metadata=dict(cell.get('metadata', {}), tags=tags))
        return out if 'remove-input' in tags and 'remove-output' in tags else [cell] + out

    def write(self, rel):
        nb = json.loads((self.proc / rel).read_text(encoding='utf-8'))
        doc, cells = rel.with_suffix('').as_posix(), []
        for cell in nb['cells']:
            if cell['cell_type'] == 'markdown': cells.append(dict(cell, source=self.markdown(_text(cell['source']), doc)))
            elif cell['cell_type'] == 'code' and _text(cell['source']).strip(): cells += self.code(cell, doc)
        if not any(c['cell_type'] == 'markdown' and re.match(r'\s*#\s', c['source']) for c in cells):
            cells.insert(0, _md(self.markdown(self.title_cell(rel) or f'# {rel.stem}', doc)))
        if doc == 'index':
            if any(c['cell_type'] != 'markdown' for c in cells): raise SystemExit('nbs/index.ipynb: the home page takes markdown cells only')
            return write_if_changed(DOCS / HOME, '\n\n'.join(c['source'] for c in cells) + '\n')
        nb['metadata'].setdefault('language_info', {'name': 'python'})  # nbdev_clean drops it; myst-nb's highlighting needs it
        return write_if_changed(DOCS / rel, json.dumps(dict(nb, cells=cells), indent=1, ensure_ascii=False) + '\n')


def write_if_changed(path, text):
    "Unchanged pages keep their modification time, so that Sphinx does not read them again."
    if not path.exists() or path.read_text(encoding='utf-8') != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding='utf-8')
    return path


def run(cmd, what):
    res = subprocess.run(cmd, cwd=ROOT, env=ENV)
    if res.returncode: raise SystemExit(f'{what} failed (exit {res.returncode})')


def sphinx_cmd(builder, out, src=DOCS, doctrees=SITE / 'doctrees'):
    "sphinx-build with docs/conf.py, warnings as errors, nitpicky (one process: sphinx-mathjax-offline is not parallel-safe)."
    return [sys.executable, '-m', 'sphinx', '-W', '-n', '--keep-going', '-q', '-b', builder, '-c', str(DOCS),
            '-d', str(doctrees), str(src), str(out)]


def build(clean=False):
    "Build the site; returns the folder of the HTML pages."
    missing = missing_docs_deps()
    if missing: raise SystemExit(f'the docs extra is not installed ({", ".join(missing)}): pip install -e ".[docs]"')
    cfg = settings()
    nbs, proc = ROOT / cfg.get('nbs_path', 'nbs'), ROOT / '_proc'
    if clean: shutil.rmtree(SITE, ignore_errors=True)
    pages = notebooks(nbs)
    run([sys.executable, '-c', 'import sys; from nbdev.serve import proc_nbs; proc_nbs(sys.argv[1], n_workers=0, force=sys.argv[2] == "1")',
         os.path.relpath(nbs, ROOT), str(int(clean))], 'nbdev processing')  # a relative path: nbdev skips any under _site/ or .x/
    adapter = Adapter(cfg, nbs, proc, pages)
    written = {adapter.write(rel) for rel in pages}
    for old in DOCS.rglob('*.ipynb'):  # pages of notebooks that are gone
        if old not in written: old.unlink()
    html = SITE / 'html'
    run(sphinx_cmd('html', html), 'sphinx-build (html)')
    run(sphinx_cmd('linkcheck', SITE / 'linkcheck'), 'sphinx-build (linkcheck)')
    print(f'{len(pages)} notebooks and {len(list((DOCS / "results").glob("*.md")))} results pages: open {html / "index.html"}')
    return html


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--clean', action='store_true', help='rebuild everything from scratch (_site/ and nbdev\'s _proc/)')
    build(clean=p.parse_args().clean)
