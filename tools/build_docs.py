#!/usr/bin/env python
"""Build the documentation site offline: nbdev's notebook processing, then Sphinx with myst-nb.

    python tools/build_docs.py            # writes _site/html/; open _site/html/index.html
    python tools/build_docs.py --clean    # rebuild everything from scratch

Needs the `docs` extra (`pip install -e ".[docs]"`, also part of `dev`) and nothing from the network: MathJax is
served from the site's own `_static/` (sphinx-mathjax-offline) and the search index is Sphinx's own.

Steps, all inside the git-ignored `_site/` (no tracked file is written):
1. `_site/stage/` gets a copy of settings.ini and nbs/. nbdev's `nbdev_sidebar` writes the site structure that
   `nbdev_docs` would give Quarto (`sidebar.yml`, listed in `_quarto.yml`'s metadata-files), and nbdev's own
   processing (`proc_nbs`, the work of `nbdev_proc_nbs` without its Quarto install step) writes `_site/stage/_proc/`:
   `show_doc` rendered, hidden and exported cells removed, `#|` directives applied.
2. `_site/stage/src/` is the Sphinx source: each processed notebook under its nbdev page name (`04_graph.ipynb` ->
   `graph`, the `output-file` nbdev gives Quarto), the front matter as the page title, `#|` options turned into
   myst-nb tags, links to notebooks and to nbdev's doc pages made relative, and one page per `results/` folder
   (its markdown tables and plots). Page order and sections follow `sidebar.yml`; the results come last.
3. Sphinx + myst-nb (outputs as saved in the notebooks, nothing is executed) and sphinx-book-theme write
   `_site/html/`; then every relative link and image of every page is checked to exist.

Everything is incremental: an unchanged notebook is neither processed nor rebuilt again.
"""
import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DOCS_MODULES = ('nbdev', 'sphinx', 'myst_nb', 'sphinx_book_theme')  # plus sphinx-mathjax-offline (a hyphenated folder)
PAGE_SUFFIXES = ('.ipynb', '.md', '.qmd')


def settings(root=ROOT):
    config = ConfigParser(delimiters=['='])
    config.read(root / 'settings.ini', encoding='utf-8')
    return config['DEFAULT']


def missing_docs_deps():
    "The docs extra's modules that cannot be imported (empty when the builder can run)."
    import importlib.util
    missing = [m for m in DOCS_MODULES if importlib.util.find_spec(m) is None]
    try:
        from importlib.metadata import distribution
        distribution('sphinx-mathjax-offline')
    except Exception:
        missing.append('sphinx-mathjax-offline')
    return missing


def _write_if_changed(path, data):
    "Write text or bytes only when different, so that unchanged files keep their mtime (incremental builds)."
    path = Path(path)
    old = path.read_bytes() if path.exists() else None
    new = data.encode('utf-8') if isinstance(data, str) else data
    if old != new:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(new)
    return path


def _prune(folder, keep, protect=()):
    "Remove files under `folder` that are not in `keep` (paths), except under the `protect` subfolders."
    keep = {Path(p).resolve() for p in keep}
    for p in sorted(Path(folder).rglob('*'), reverse=True):
        rel = p.relative_to(folder).parts
        if rel and rel[0] in protect: continue
        if p.is_file() and p.resolve() not in keep: p.unlink()
        elif p.is_dir() and not any(p.iterdir()): p.rmdir()


# ---------------------------------------------------------------------------------------------------------------
# 1. staging: a copy of settings.ini and nbs/, where nbdev may write what it wants
# ---------------------------------------------------------------------------------------------------------------
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$')


def _directives(source):
    "nbdev/Quarto `#|` options at the top of a code cell: ({name: value}, source without them)."
    lines, opts = source.splitlines(), {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or _re_directive.match(lines[i])):
        m = _re_directive.match(lines[i])
        if m: opts[m.group(1).lower()] = m.group(2).strip().strip('"\'')
        i += 1
    return opts, '\n'.join(lines[i:])


def _import_only(source, documented=()):
    """The top-level import statements of a cell that mixes them with other code, else None.

    nbdev executes such a cell in full when it renders `show_doc` (and warns: "Found cells containing imports and
    other code"), which can mean minutes of lesson code. For the site only the imports are needed: the cell's
    outputs are the ones saved in the notebook. A cell that defines a name given to `show_doc` (`documented`)
    runs in full, as nbdev does."""
    try: tree = ast.parse(source)
    except SyntaxError: return None
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imports or len(imports) == len(tree.body): return None
    defined = {t.id for n in tree.body for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    defined |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    if defined & set(documented): return None
    return '\n'.join(ast.get_source_segment(source, n) for n in imports)


def _split_title(source):
    "A title cell's `# title` and `> summary` lines, and the text after them ('' when there is none)."
    m = re.match(r'\s*#\s+[^\n]*(?:\n[ \t]*)*(?:\n?>[^\n]*(?:\n|$))*', source)
    if not m: return source, ''
    return source[:m.end()].rstrip('\n'), source[m.end():].strip('\n')


def _stage_notebook(src):
    nb = json.loads(src.read_text(encoding='utf-8'))
    documented = set(re.findall(r'^\s*show_doc\(\s*(\w+)', '\n'.join(
        ''.join(c.get('source', '')) for c in nb.get('cells', []) if c.get('cell_type') == 'code'), re.M))
    cells, titled = [], False
    for cell in nb.get('cells', []):
        source = ''.join(cell.get('source', ''))
        if cell.get('cell_type') == 'markdown' and not titled and re.search(r'^#\s+\S', source, re.M):
            titled = True
            head, body = _split_title(source)
            if body:  # nbdev turns the whole title cell into front matter: keep what follows the title and summary
                cells += [dict(cell, source=head), {'cell_type': 'markdown', 'metadata': {}, 'source': body}]
                continue
        if cell.get('cell_type') == 'code' and source.strip():
            opts, code = _directives(source)
            imports = None
            if not opts.keys() & {'export', 'exports', 'exporti', 'exec_doc', 'eval'}: imports = _import_only(code, documented)
            if imports:
                cells.append({'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [],
                              'source': '#| hide\n' + imports})
                cell = dict(cell, source='#| eval: false\n' + source)
        cells.append(cell)
    nb['cells'] = cells
    return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'


def stage(root, stage_dir):
    "Copy settings.ini and nbs/ into `stage_dir` (only what changed); remove what is gone."
    cfg = settings(root)
    nbs = root / cfg.get('nbs_path', 'nbs')
    out = stage_dir / 'nbs'
    kept = [_write_if_changed(stage_dir / 'settings.ini', (root / 'settings.ini').read_bytes())]
    for p in sorted(nbs.rglob('*')):
        rel = p.relative_to(nbs)
        if not p.is_file() or any(part.startswith('.') or part in ('_proc', '_docs', '_site') for part in rel.parts):
            continue
        dst = out / rel
        if p.suffix == '.ipynb': kept.append(_write_if_changed(dst, _stage_notebook(p)))
        else: kept.append(_write_if_changed(dst, p.read_bytes()))
    _prune(stage_dir, kept, protect=('_proc', 'src', 'doctrees'))
    return out


def nbdev_process(stage_dir, workers):
    "nbdev's sidebar and notebook processing, run in `stage_dir` (its own settings.ini, so `_proc/` lands there)."
    code = ('import sys\n'
            'from nbdev.quarto import nbdev_sidebar\n'
            'from nbdev.serve import proc_nbs\n'
            'nbdev_sidebar.__wrapped__(path="nbs")\n'
            'proc_nbs("nbs", n_workers=int(sys.argv[1]))\n')
    env = dict(os.environ, PYTHONWARNINGS='ignore', TOKENIZERS_PARALLELISM='false', MPLBACKEND='Agg',
               HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    # paths relative to the stage: nbdev skips every file whose absolute path has a part named _site or starting with '.'
    res = subprocess.run([sys.executable, '-c', code, str(workers)], cwd=stage_dir, env=env,
                         capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-8000:])
        raise SystemExit(f'nbdev processing failed (exit {res.returncode})')
    return stage_dir / '_proc'


# ---------------------------------------------------------------------------------------------------------------
# 2. the Sphinx source
# ---------------------------------------------------------------------------------------------------------------
def _front_matter(nb):
    "nbdev's front matter (a raw `---` cell: title, description, output-file); removes that cell."
    import yaml
    for i, cell in enumerate(nb['cells']):
        src = ''.join(cell.get('source', '')).strip()
        if cell.get('cell_type') == 'raw' and src.startswith('---') and src.endswith('---'):
            del nb['cells'][i]
            try: return yaml.safe_load(src.strip('-').strip()) or {}
            except yaml.YAMLError: return {}
    return {}


def _sidebar_entries(stage_nbs):
    """The pages in `sidebar.yml` order: [(section or None, path relative to nbs)]."""
    import yaml
    yml = stage_nbs / 'sidebar.yml'
    data = yaml.safe_load(yml.read_text()) if yml.exists() else {}
    contents = (((data or {}).get('website') or {}).get('sidebar') or {}).get('contents') or []
    out = []

    def walk(items, section):
        for it in items:
            if isinstance(it, str): out.append((section, it))
            elif isinstance(it, dict):
                if 'contents' in it:
                    sec = it.get('section') or section
                    walk(it['contents'] if isinstance(it['contents'], list) else [it['contents']],
                         sec if section is None else f'{section} / {sec}')
                elif 'href' in it or 'file' in it: out.append((section, it.get('href') or it.get('file')))
    walk(contents, None)
    return [(s, p) for s, p in out if Path(p).suffix in PAGE_SUFFIXES]


class Site:
    "Where every page of the site comes from and goes to, and how links between them are rewritten."

    def __init__(self, root, stage_dir):
        self.root, self.cfg = root, settings(root)
        self.nbs = root / self.cfg.get('nbs_path', 'nbs')
        self.stage_nbs, self.proc, self.src = stage_dir / 'nbs', stage_dir / '_proc', stage_dir / 'src'
        self.git_blob = f"{self.cfg.get('git_url', '').rstrip('/')}/blob/{self.cfg.get('branch', 'main')}/"
        host = self.cfg.get('doc_host', '').rstrip('/') + '/' + self.cfg.get('doc_baseurl', '').strip('/')
        self.doc_host = host.rstrip('/') + '/'
        self.pages = {}      # repo-relative source path (nbs/04_graph.ipynb) -> docname (graph)
        self.by_html = {}    # nbdev page file (graph.html) -> docname
        self.by_stem = {}    # notebook stem (04_graph) -> docname
        self.written = []
        self.results = {}    # results folder (results/amazon-offline-h100) -> docname
        self.entries, self.suffix, self.meta, self.anchors, self.titles = [], {}, {}, {}, {}

    # links ------------------------------------------------------------------------------------------------------
    def register(self, nb_rel, docname, output_file=None):
        rel = PurePosixPath(self.cfg.get('nbs_path', 'nbs')) / nb_rel
        self.pages[str(rel)] = docname
        self.by_html[str(PurePosixPath(nb_rel).with_suffix('.html'))] = docname
        if output_file: self.by_html[str(PurePosixPath(nb_rel).parent / output_file)] = docname
        self.by_stem.setdefault(PurePosixPath(nb_rel).stem, docname)

    def anchor(self, doc, fragment):
        "The heading of `doc` that nbdev's anchor `fragment` names (`kdlosses.layers`: `kdlosses` when that method has no heading of its own)."
        slug, known = _slug(fragment), self.anchors.get(doc, set())
        while slug and slug not in known:
            fragment = fragment.rpartition('.')[0]
            slug = _slug(fragment)
        return slug

    def _rel(self, docname, from_doc, anchor=''):
        "A MyST link from page `from_doc` to page `docname` (a path to its source file, which MyST resolves)."
        suffix = self.suffix[docname]
        rel = os.path.relpath(docname + suffix, str(PurePosixPath(from_doc).parent))
        return rel.replace(os.sep, '/') + (f'#{anchor}' if anchor else '')

    def resolve(self, target, from_doc, from_repo_dir, image=False):
        """Rewrite one link target of page `from_doc` whose source sits in the repo folder `from_repo_dir`."""
        if not target or target.startswith(('#', 'mailto:', 'data:')): return target
        parts = urlsplit(target)
        if target.startswith(self.doc_host):  # nbdev's doc links (`graph.html#domainrelationalgraph`)
            page = unquote(parts.path)[len(urlsplit(self.doc_host).path):] or 'index.html'
            doc = self.by_html.get(page)
            return self._rel(doc, from_doc, self.anchor(doc, parts.fragment)) if doc else target
        if parts.scheme or parts.netloc: return target
        path = unquote(parts.path)
        if not path: return target
        cands = [os.path.normpath(os.path.join(from_repo_dir, path)), os.path.normpath(path.lstrip('/'))]
        for cand in cands:
            cand = cand.replace(os.sep, '/')
            doc = self.pages.get(cand) or self.by_html.get(
                os.path.relpath(cand, self.cfg.get('nbs_path', 'nbs')).replace(os.sep, '/'))
            if doc: return self._rel(doc, from_doc, self.anchor(doc, parts.fragment))
            if not (self.root / cand).exists(): continue
            if image or (self.root / cand).suffix.lower() in ('.png', '.jpg', '.jpeg', '.gif', '.svg'):
                # a copy of the picture: MyST images are copied by Sphinx, raw HTML ones come from html_extra_path
                dst = self.src / '_extra' / '_repo' / cand
                self.copy(self.root / cand, dst)
                return os.path.relpath(dst, self.src / PurePosixPath(from_doc).parent).replace(os.sep, '/')
            folder = cand if (self.root / cand).is_dir() else os.path.dirname(cand)
            while folder and folder not in self.results: folder = os.path.dirname(folder)
            if folder: return self._rel(self.results[folder], from_doc)
            if self.results and cand.split('/')[0] == 'results': return self._rel('results/index', from_doc)
            return self.git_blob + cand  # another repository file: its page in the repository
        return target

    _re_md_link = re.compile(r'(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?((?:\s+"[^"]*")?)\s*\)')
    _re_html_link = re.compile(r'''(\b(?:href|src)\s*=\s*)(["'])([^"']+)\2''')
    _re_code_span = re.compile(r'(?<![\[`])`([0-9]{2}[a-z]?_[\w]+)`(?![`\]])')
    _re_fence = re.compile(r'^\s*(```|~~~)')
    _re_results_span = re.compile(r'(?<![\[`])`((results/[\w.-]+)/?)`(?![`\]])')  # `results/amazon-offline-h100/`

    def rewrite_markdown(self, text, from_doc, from_repo_dir, link_stems=True):
        "Rewrite the links of one markdown text; notebook names in code spans (`04_graph`) become links too."
        out, fenced = [], False
        for line in text.split('\n'):
            if self._re_fence.match(line): fenced = not fenced
            if not fenced:
                line = line.replace(' ± ', '\u00a0±\u00a0')  # "87.06 ± 1.04" stays on one line in narrow table cells
                line = self._re_md_link.sub(lambda m: f'{m[1]}[{m[2]}]({self.resolve(m[3], from_doc, from_repo_dir, bool(m[1]))}{m[4]})', line)
                line = self._re_html_link.sub(lambda m: f'{m[1]}{m[2]}{self._html_target(m[3], from_doc, from_repo_dir)}{m[2]}', line)
                if link_stems:
                    line = self._re_code_span.sub(
                        lambda m: f'[`{m[1]}`]({self._rel(self.by_stem[m[1]], from_doc)})' if m[1] in self.by_stem else m[0], line)
                line = self._re_results_span.sub(
                    lambda m: f'[`{m[1]}`]({self._rel(self.results[m[2]], from_doc)})' if m[2] in self.results else m[0], line)
            out.append(line)
        return '\n'.join(out)

    def _html_target(self, target, from_doc, from_repo_dir):
        "Raw HTML links are not resolved by MyST: point them at the built .html file."
        new = self.resolve(target, from_doc, from_repo_dir)
        if new == target or urlsplit(new).scheme: return new
        p = urlsplit(new)
        path = re.sub(r'\.(ipynb|md|qmd)$', '.html', p.path).replace('_extra/_repo/', '_repo/')
        return path + (f'#{p.fragment}' if p.fragment else '')

    def copy(self, src, dst):
        _write_if_changed(dst, Path(src).read_bytes())
        self.written.append(Path(dst))

    # notebooks --------------------------------------------------------------------------------------------------
    def plan(self, entries):
        "Decide every page's docname before writing any (links need them all)."
        for section, rel in entries:
            proc = self.proc / rel
            if not proc.exists(): continue
            if proc.suffix == '.ipynb':
                nb = json.loads(proc.read_text(encoding='utf-8'))
                fm = _front_matter(nb)
                out = fm.get('output-file')
                stem = Path(out).stem if out else Path(rel).stem
                suffix = '.ipynb'
            else:
                nb, fm, out, stem, suffix = None, {}, None, Path(rel).stem, '.md'
            docname = str(PurePosixPath(rel).parent / stem)
            if docname in self.suffix: docname = str(PurePosixPath(rel).with_suffix(''))  # two notebooks, one name
            self.register(rel, docname, out)
            self.anchors[docname] = _heading_slugs(nb['cells'] if nb else [_md(proc.read_text(encoding='utf-8'))])
            self.suffix[docname] = suffix
            self.meta[docname] = (section, rel, nb, fm)
            self.entries.append((section, docname))
            self.titles[docname] = fm.get('title') or _first_heading_text(nb['cells'] if nb else [_md(proc.read_text(encoding='utf-8'))]) or Path(rel).stem

    def write_notebook(self, docname):
        section, rel, nb, fm = self.meta[docname]
        repo_dir = str(PurePosixPath(self.cfg.get('nbs_path', 'nbs')) / PurePosixPath(rel).parent)
        cells = []
        title = fm.get('title')
        if title:
            head = f'# {title}'
            desc = _full_description(self.stage_nbs / rel, fm.get('description'))
            if desc: head += f"\n\n```{{container}} page-description\n{desc}\n```"
            cells.append(_md(head))
        for cell in nb['cells']:
            cell = _clean_cell(cell)
            if cell is None: continue
            if cell['cell_type'] == 'markdown':
                cell['source'] = self.rewrite_markdown(cell['source'], docname, repo_dir)
            elif cell['cell_type'] == 'code':
                for o in cell.get('outputs', []):
                    md = o.get('data', {}).get('text/markdown')
                    if md is not None:
                        o['data']['text/markdown'] = self.rewrite_markdown(_text(md), docname, repo_dir, link_stems=False)
                    html = o.get('data', {}).get('text/html')
                    if html is not None:
                        o['data']['text/html'] = self._re_html_link.sub(
                            lambda m: f'{m[1]}{m[2]}{self._html_target(m[3], docname, repo_dir)}{m[2]}', _text(html))
            cells.append(cell)
        cells = _show_doc_cells(cells)
        if not any(c['cell_type'] == 'markdown' and re.match(r'#\s', c['source'].lstrip()) for c in cells[:3]):
            cells.insert(0, _md(f'# {PurePosixPath(rel).stem}'))
        nb['cells'] = cells
        md = nb.setdefault('metadata', {})
        md.setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
        md.setdefault('language_info', {'name': 'python'})
        for k in ('widgets',): md.pop(k, None)
        if docname == 'index': nb['cells'].append(_md(self.toctree()))
        self.written.append(_write_if_changed(self.src / (docname + '.ipynb'),
                                              json.dumps(nb, indent=1, ensure_ascii=False) + '\n'))

    def write_markdown_page(self, docname):
        section, rel, _, _ = self.meta[docname]
        repo_dir = str(PurePosixPath(self.cfg.get('nbs_path', 'nbs')) / PurePosixPath(rel).parent)
        text = (self.proc / rel).read_text(encoding='utf-8')
        m = re.match(r'^---\n(.*?)\n---\n', text, re.S)
        if m:
            import yaml
            fm = yaml.safe_load(m.group(1)) or {}
            text = text[m.end():]
            if fm.get('title'): text = f"# {fm['title']}\n\n" + text
        self.written.append(_write_if_changed(self.src / (docname + '.md'), self.rewrite_markdown(text, docname, repo_dir)))

    def manifest(self):
        "Every page in navigation order: its source, the built HTML file, its title and sidebar section."
        pages = [{'source': rel if rel.startswith('results/') else str(PurePosixPath(self.cfg.get('nbs_path', 'nbs')) / rel),
                  'html': doc + '.html', 'title': self.titles.get(doc, doc), 'section': section}
                 for section, doc in self.entries for rel in [self.meta[doc][1]]]
        if self.results: pages.append({'source': 'results', 'html': 'results/index.html', 'title': 'Results', 'section': 'Results'})
        for folder, doc in sorted(self.results.items()):
            pages.append({'source': folder, 'html': doc + '.html', 'title': _first_heading(self.root / folder) or PurePosixPath(folder).name,
                          'section': 'Results'})
        return pages

    def toctree(self):
        "The site's navigation: sidebar.yml's pages and sections, then the results."
        groups, order = {}, []
        for section, doc in self.entries:
            if doc == 'index': continue
            if section not in groups: groups[section] = []; order.append(section)
            groups[section].append(doc)
        out = []
        for section in order:
            caption = f':caption: {section.replace("_", " ").capitalize()}\n' if section else ':caption: Notebooks\n'
            out.append('```{toctree}\n:hidden:\n' + caption + ':titlesonly:\n\n' + '\n'.join(groups[section]) + '\n```')
        if self.results:
            out.append('```{toctree}\n:hidden:\n:caption: Results\n:titlesonly:\n\n' + '\n'.join(
                ['results/index'] + sorted(self.results.values())) + '\n```')
        return '\n\n'.join(out)

    # results ----------------------------------------------------------------------------------------------------
    def plan_results(self):
        res = self.root / 'results'
        if not res.is_dir(): return
        for folder in sorted(p for p in res.iterdir() if p.is_dir()):
            if any(f.suffix.lower() in ('.md', '.png') for f in folder.rglob('*')):
                self.results[f'results/{folder.name}'] = f'results/{folder.name}'
                self.suffix[f'results/{folder.name}'] = '.md'
        self.suffix['results/index'] = '.md'

    def write_results(self):
        if not self.results: return
        res = self.root / 'results'
        lines = ['# Results', '',
                 'The results committed to `results/`: one page per run folder, with its notes, the markdown tables '
                 'and the plots the pipeline and `benchmarks/` wrote.', '']
        for folder, doc in sorted(self.results.items()):
            lines.append(f'- [{_first_heading(self.root / folder) or PurePosixPath(folder).name}]({os.path.relpath(doc, "results")}.md)')
        for f in sorted(res.glob('*.md')):  # notes at the top of results/
            lines += ['', f'## {f.name}', '', self.rewrite_markdown(_demote(f.read_text(encoding='utf-8'), 2), 'results/index', 'results', link_stems=False)]
        benches = sorted(res.glob('*.json'))
        if benches:
            lines += ['', '## Benchmarks', '']
            for b in benches:
                lines += [f'### `{b.name}`', '', '```json', b.read_text(encoding='utf-8').strip(), '```', '']
        self.written.append(_write_if_changed(self.src / 'results/index.md', '\n'.join(lines) + '\n'))
        for folder, doc in self.results.items():
            self.written.append(_write_if_changed(self.src / f'{doc}.md', self._results_page(self.root / folder, doc)))

    def _results_page(self, folder, doc):
        rel_folder = folder.relative_to(self.root).as_posix()
        readme = folder / 'README.md'
        out = []
        if readme.exists():
            text = readme.read_text(encoding='utf-8')
            if not re.match(r'#\s', text): out.append(f'# {folder.name}\n')
            out.append(self.rewrite_markdown(text, doc, rel_folder, link_stems=False))
        else:
            out.append(f'# {folder.name}\n')
        out.append(self._folder_body(folder, doc, level=2))
        return '\n\n'.join(o.strip('\n') for o in out if o.strip()) + '\n'

    def _folder_body(self, folder, doc, level):
        "The markdown files (their headings moved under `level`) and pictures of a folder, then its subfolders."
        rel_folder = folder.relative_to(self.root).as_posix()
        out = []
        for f in sorted(folder.iterdir()):
            if not f.is_file() or f.name == 'README.md' and level == 2: continue
            if f.suffix.lower() == '.md':
                body = self.rewrite_markdown(_demote(f.read_text(encoding='utf-8'), level), doc, rel_folder, link_stems=False)
                if level == 2: out.append(f'## {f.name}\n\n{body}')  # a file of the folder itself: a section
                else: out.append(f'{body}\n\n```{{rubric}} {rel_folder}/{f.name}\n:class: results-caption\n```')
            elif f.suffix.lower() in ('.png', '.jpg', '.jpeg', '.svg'):
                dst = self.src / doc / f.relative_to(self.root / 'results' / PurePosixPath(doc).name)
                self.copy(f, dst)
                rel = os.path.relpath(dst, (self.src / doc).parent).replace(os.sep, '/')
                # a width makes Sphinx link the picture to its full-size copy: click to read a wide plot
                out.append(f'```{{figure}} {rel}\n:alt: {f.name} in {rel_folder}\n:width: 100%\n\n'
                           f'{rel_folder}/{f.name} (click for full size)\n```')
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if any(f.suffix.lower() in ('.md', '.png') for f in sub.rglob('*')):
                body = self._folder_body(sub, doc, level + 1)
                out.append(f'{"#" * level} {sub.relative_to(self.root / "results" / PurePosixPath(doc).name).as_posix()}\n\n{body}')
        return '\n\n'.join(out)


def _text(x): return ''.join(x) if isinstance(x, list) else x


def _slug(anchor):
    "MyST's (GitHub-style) heading slug for nbdev's (Pandoc's) anchor of the same heading: `kdlosses.layers` -> `kdlosseslayers`."
    return re.sub(r'[^\w\- ]', '', unquote(anchor).strip().lower()).replace(' ', '-')


def _full_description(nb_path, description):
    """The whole `> ...` summary under the notebook's title: nbdev's front matter keeps only its first line when a
    blank line separates it from the title."""
    if not description: return description
    try: nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    except (OSError, ValueError): return description
    for c in nb.get('cells', []):
        src = _text(c.get('source', '')) if c.get('cell_type') == 'markdown' else ''
        m = re.match(r'\s*#\s+[^\n]*\n\s*((?:>[^\n]*(?:\n|$))+)', src)
        if m:
            full = ' '.join(l.lstrip('>').strip() for l in m.group(1).splitlines())
            squash = lambda t: re.sub(r'[\s`*_]+', '', t)
            return full if squash(full).startswith(squash(description)) else description
        if src.strip(): break
    return description


def _heading_slugs(cells):
    "The slugs of the markdown headings of some cells (and of their markdown outputs: `show_doc`)."
    texts = []
    for c in cells:
        if c.get('cell_type') == 'markdown': texts.append(_text(c.get('source', '')))
        for o in c.get('outputs', []): texts.append(_text(o.get('data', {}).get('text/markdown', '')))
    slugs, fenced = set(), False
    for line in '\n'.join(texts).split('\n'):
        if re.match(r'^\s*(```|~~~)', line): fenced = not fenced
        m = None if fenced else re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if m: slugs.add(_slug(re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', m.group(1)).replace('`', '')))
    return slugs


def _first_heading_text(cells):
    for c in cells:
        m = re.search(r'^#\s+(.+)$', _text(c.get('source', ''))) if c.get('cell_type') == 'markdown' else None
        if m: return m.group(1).strip()


def _md(source): return {'cell_type': 'markdown', 'metadata': {}, 'source': source}


def _first_heading(folder):
    readme = folder / 'README.md'
    if readme.exists():
        m = re.match(r'#\s+(.+)', readme.read_text(encoding='utf-8'))
        if m: return m.group(1).strip()


def _demote(text, level):
    "Move the headings of an included markdown file under a heading of `level`."
    out, fenced = [], False
    for line in text.split('\n'):
        if re.match(r'^\s*(```|~~~)', line): fenced = not fenced
        if not fenced and re.match(r'#{1,6}\s', line): line = '#' * level + line
        out.append(line)
    return '\n'.join(out)


def _clean_cell(cell):
    "One processed cell as myst-nb should see it: `#|` options as tags, removed cells dropped."
    source = _text(cell.get('source', ''))
    kind = cell.get('cell_type')
    if kind == 'raw' or (not source.strip() and not cell.get('outputs')): return None
    cell = dict(cell, source=source, metadata=dict(cell.get('metadata') or {}))
    cell['metadata'].pop('tags', None)
    if kind != 'code': return cell
    opts, code = _directives(source)
    cell['source'] = code.strip('\n')
    tags = []
    if str(opts.get('include', '')).lower() == 'false': return None
    if str(opts.get('echo', '')).lower() == 'false' or not cell['source'].strip(): tags.append('remove-input')
    if str(opts.get('output', '')).lower() == 'false': tags.append('remove-output')
    if opts.get('code-fold') == 'true': tags.append('hide-input')  # Quarto's folded code: myst-nb's collapsed input
    outputs = []
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if o.get('output_type') == 'execute_result' and set(data) <= {'text/plain'} and not _text(data.get('text/plain', '')).strip():
            continue  # the empty result of a test cell
        outputs.append(o)
    cell['outputs'] = outputs
    cell['metadata']['tags'] = tags
    cell['metadata']['_asis'] = str(opts.get('output', '')).lower() == 'asis'
    return cell


def _show_doc_cells(cells):
    """`show_doc` output (markdown, `output: asis`, input hidden) becomes markdown: its heading a real section of
    the page (in the page's table of contents, with an anchor), the source link beside it."""
    out = []
    for cell in cells:
        asis = cell.get('metadata', {}).pop('_asis', False)
        if (cell['cell_type'] == 'code' and asis and 'remove-input' in cell['metadata'].get('tags', [])
                and cell.get('outputs') and all('text/markdown' in o.get('data', {}) for o in cell['outputs'])):
            for o in cell['outputs']:
                md = _text(o['data']['text/markdown']).strip()
                md = re.sub(r'^---\s*\n', '', md)
                src = re.match(r'\s*(\[source\]\([^)]*\))(\{[^}]*\})?\s*\n', md)
                if src:
                    md = md[src.end():].lstrip('\n')
                    head = re.match(r'(#{1,6} .*)\n', md)
                    link = src.group(1) + '{.showdoc-source}'
                    md = (head.group(1) + '\n\n' + link + '\n' + md[head.end():]) if head else link + '\n\n' + md
                out.append(_md(md))
            continue
        if cell['cell_type'] == 'code' and not cell['metadata'].get('tags'): cell['metadata'].pop('tags', None)
        out.append(cell)
    return out


CONF = '''# Sphinx configuration written by tools/build_docs.py: edit that file, not this one.
import os
project = {title!r}
author = {author!r}
copyright = {copyright!r}
html_title = {title!r}
extensions = ['myst_nb', 'sphinx-mathjax-offline']
root_doc = 'index'
exclude_patterns = ['_build', '_extra', '**.ipynb_checkpoints']
html_extra_path = ['_extra'] if os.path.isdir(os.path.join(os.path.dirname(__file__), '_extra')) else []  # raw-HTML pictures
nb_execution_mode = 'off'             # the outputs saved in the notebooks; nothing is run
nb_render_markdown_format = 'myst'    # show_doc and other markdown outputs: math and links too
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_inline', 'colon_fence']
myst_dmath_double_inline = True
myst_heading_anchors = 4
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure', 'myst.strikethrough']
html_theme = 'sphinx_book_theme'
html_theme_options = {{
    'repository_url': {git_url!r},
    'repository_branch': {branch!r},
    'path_to_docs': {nbs_path!r},
    'use_repository_button': False,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'home_page_in_toc': True,
    'navigation_with_keys': False,
}}
html_static_path = ['_static']
html_css_files = ['hrkd.css']
html_js_files = ['hrkd.js']
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
'''

CSS = '''/* written by tools/build_docs.py */
.page-description { font-size: 1.15em; color: var(--pst-color-text-muted); margin-bottom: 1.5em; }
a.showdoc-source { float: right; font-size: smaller; }
p.rubric.results-caption, figure figcaption { font-size: 0.85em; font-weight: normal; border-bottom: none; color: var(--pst-color-text-muted); text-align: center; margin-top: 0.25rem; }
/* data tables: compact, and a table wider than the text column scrolls inside it instead of widening the page */
.bd-article table { display: block; overflow-x: auto; max-width: 100%; font-size: 0.85em; }
.bd-article table.table { width: auto; }
.bd-article table th, .bd-article table td { padding: 0.3rem 0.45rem; }
.bd-article table td:first-child { min-width: 6em; }
.bd-article img { max-width: 100%; height: auto; }
.cell_output .output.text_html { overflow-x: auto; }
mjx-container[display="true"] { overflow-x: auto; overflow-y: hidden; max-width: 100%; }
'''


JS = '''// written by tools/build_docs.py
// A display equation wider than the text column is scaled down to fit (to 60% at the least; a wider one scrolls),
// rather than having its end cut off at the column's edge.
(function () {
  function fit() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (e) {
      if (e.dataset.fontSize === undefined) e.dataset.fontSize = e.style.fontSize;  // MathJax's own scaling
      e.style.fontSize = e.dataset.fontSize;
      var room = e.parentElement.clientWidth, need = e.scrollWidth;
      if (need > room + 1) {
        var size = parseFloat(getComputedStyle(e).fontSize);
        e.style.fontSize = (size * Math.max(0.6, (room - 2) / need)) + 'px';
      }
    });
  }
  function whenTypeset() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(fit);
  }
  window.addEventListener('load', whenTypeset);
  window.addEventListener('resize', fit);
})();
'''


def write_source(site):
    cfg = site.cfg
    conf = CONF.format(title=cfg.get('title', cfg.get('lib_name', 'docs')), author=cfg.get('author', ''),
                       copyright=cfg.get('copyright', ''), git_url=cfg.get('git_url', ''),
                       branch=cfg.get('branch', 'main'), nbs_path=cfg.get('nbs_path', 'nbs'))
    site.written.append(_write_if_changed(site.src / 'conf.py', conf))
    site.written.append(_write_if_changed(site.src / '_static' / 'hrkd.css', CSS))
    site.written.append(_write_if_changed(site.src / '_static' / 'hrkd.js', JS))
    for docname in site.meta:
        if site.suffix[docname] == '.ipynb': site.write_notebook(docname)
        else: site.write_markdown_page(docname)
    site.write_results()
    _prune(site.src, site.written)


# ---------------------------------------------------------------------------------------------------------------
# 3. Sphinx, and the check of every link
# ---------------------------------------------------------------------------------------------------------------
def sphinx(src, html, doctrees):
    # one process: sphinx-mathjax-offline does not declare itself safe for parallel reading
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-d', str(doctrees), str(src), str(html)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    warnings = [l for l in res.stderr.splitlines() if l.strip()]
    if res.returncode:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-8000:])
        raise SystemExit(f'sphinx-build failed (exit {res.returncode})')
    return warnings


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        for key in ('href', 'src'):
            if a.get(key) and not (tag == 'link' and a.get('rel') in ('canonical',)): self.links.append((tag, key, a[key]))


def check_links(html_dir, anchors=False):
    """Every relative href/src of every built page points to an existing file (and, with `anchors`, to an existing
    id of that page). Returns the broken ones as 'page: target' strings."""
    html_dir = Path(html_dir)
    parsed = {}
    for page in html_dir.rglob('*.html'):
        if page.relative_to(html_dir).parts[0] == '_static': continue  # the themes' template snippets, not pages
        p = _Links()
        p.feed(page.read_text(encoding='utf-8', errors='replace'))
        parsed[page.resolve()] = p
    broken = []
    for page, p in parsed.items():
        for tag, key, target in p.links:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith(('#', 'javascript:', 'mailto:', 'data:')):
                if anchors and target.startswith('#') and len(target) > 1 and unquote(target[1:]) not in p.ids:
                    broken.append(f'{page.relative_to(html_dir.resolve())}: {target}')
                continue
            dest = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if dest.is_dir(): dest = dest / 'index.html'
            if not dest.exists():
                broken.append(f'{page.relative_to(html_dir.resolve())}: {target}')
            elif anchors and parts.fragment and dest in parsed and unquote(parts.fragment) not in parsed[dest].ids:
                broken.append(f'{page.relative_to(html_dir.resolve())}: {target} (no such anchor)')
    return sorted(broken)


def build(root=ROOT, out=None, clean=False, jobs=None, quiet=False):
    "Build the site; returns the folder of the HTML pages."
    missing = missing_docs_deps()
    if missing: raise SystemExit(f'the docs extra is not installed ({", ".join(missing)}): pip install -e ".[docs]"')
    root = Path(root)
    build_dir = Path(out) if out else root / '_site'
    if clean and build_dir.exists(): shutil.rmtree(build_dir)
    stage_dir, html = build_dir / 'stage', build_dir / 'html'
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t0 = time.time()
    stage_dir.mkdir(parents=True, exist_ok=True)
    stage_nbs = stage(root, stage_dir)
    nbdev_process(stage_dir, jobs or 0)
    t1 = time.time()
    say(f'nbdev processing: {t1 - t0:.1f}s')
    site = Site(root, stage_dir)
    site.plan_results()
    site.plan(_sidebar_entries(stage_nbs))
    write_source(site)
    warnings = sphinx(site.src, html, stage_dir / 'doctrees')
    t2 = time.time()
    pages = sum(1 for p in html.rglob('*.html') if p.relative_to(html).parts[0] != '_static')
    say(f'sphinx: {t2 - t1:.1f}s, {len(warnings)} warning line(s)')
    for w in warnings[:40]: say('  ' + w)
    _write_if_changed(build_dir / 'pages.json', json.dumps(site.manifest(), indent=1) + '\n')
    broken = check_links(html)
    if broken:
        for b in broken: print('broken link:', b, file=sys.stderr)
        raise SystemExit(f'{len(broken)} broken internal link(s)')
    say(f'{len(site.manifest())} pages ({pages} HTML files with search and index), links checked, '
        f'in {t2 - t0:.1f}s: open {html / "index.html"}')
    return html


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='build folder (default: _site/ in the repository; the site is its html/)')
    p.add_argument('--clean', action='store_true', help='delete the build folder first')
    p.add_argument('--jobs', type=int, default=0,
                   help="nbdev's worker processes (default 0: one process, which imports the library once)")
    a = p.parse_args(argv)
    build(out=a.out, clean=a.clean, jobs=a.jobs)


if __name__ == '__main__':
    main()
