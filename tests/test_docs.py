"""The documentation site as a reader sees it: `python tools/build_docs.py` builds it offline (nbdev's processing, then
Sphinx with docs/conf.py, warnings as errors), then headless Chromium opens pages and checks that the equations are
typeset, that tables and plots are visible, that the sidebar follows docs/index.md and that search finds an API symbol;
every internal link and image of every page must exist. Screenshots land in `_site/screenshots/`.

Skipped without a Chromium binary (Debian: `apt-get install chromium`) or without the docs extra
(`pip install -e ".[docs]"`, part of `dev`)."""
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from base64 import b64decode
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs  # noqa: E402

BUILD = ROOT / '_site'
HTML = BUILD / 'html'
SHOTS = BUILD / 'screenshots'
CHROMIUM = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'))), None)
MISSING = build_docs.missing_docs_deps()

needs_docs = pytest.mark.skipif(bool(MISSING), reason=f'docs extra not installed ({", ".join(MISSING)}): pip install -e ".[docs]"')
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium to open the site in (Debian: apt-get install chromium)')


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4), with the standard library only."""

    FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
             '--disable-background-networking', '--disable-component-update', '--disable-extensions',
             '--hide-scrollbars', '--mute-audio', '--remote-debugging-pipe']

    def __init__(self, exe, width=1280, height=2000):
        self.profile = tempfile.mkdtemp(prefix='hrkd-chromium-')
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # move the child's ends above 4 first, so that placing them on 3 and 4 cannot overwrite one with the other
        hi_r, hi_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w))
        os.close(to_chrome_r), os.close(from_chrome_w)

        def child_fds():
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)
        self.proc = subprocess.Popen([exe, *self.FLAGS, f'--user-data-dir={self.profile}', 'about:blank'],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     close_fds=False, preexec_fn=child_fds)
        os.close(hi_r), os.close(hi_w)
        self._id, self._buf, self.events = 0, b'', []
        target = self.send('Target.createTarget', url='about:blank')['targetId']
        self.session = self.send('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        self.send('Page.enable', session=True)
        self.send('Emulation.setDeviceMetricsOverride', width=width, height=height, deviceScaleFactor=1, mobile=False,
                  session=True)

    def _read(self, timeout):
        "One message from the browser, or None after `timeout` seconds."
        end = time.time() + timeout
        while b'\0' not in self._buf:
            left = end - time.time()
            if left <= 0 or not select.select([self._r], [], [], left)[0]: return None
            chunk = os.read(self._r, 1 << 20)
            if not chunk: raise RuntimeError('Chromium closed the DevTools pipe')
            self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def send(self, method, session=False, timeout=30, **params):
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params}
        if session: msg['sessionId'] = self.session
        os.write(self._w, json.dumps(msg).encode() + b'\0')
        end = time.time() + timeout
        while time.time() < end:
            reply = self._read(end - time.time())
            if reply is None: break
            if reply.get('id') == self._id:
                if 'error' in reply: raise RuntimeError(f'{method}: {reply["error"]}')
                return reply.get('result', {})
            self.events.append(reply)
        raise TimeoutError(f'no answer to {method} in {timeout}s')

    def open(self, url, timeout=30):
        self.events.clear()
        self.send('Page.navigate', url=url, session=True)
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get('method') == 'Page.loadEventFired' for e in self.events): return
            ev = self._read(end - time.time())
            if ev: self.events.append(ev)
        raise TimeoutError(f'{url} did not load in {timeout}s')

    def evaluate(self, js, timeout=30):
        res = self.send('Runtime.evaluate', expression=js, awaitPromise=True, returnByValue=True, session=True,
                        timeout=timeout)
        if 'exceptionDetails' in res: raise RuntimeError(f'page script failed: {res["exceptionDetails"]}')
        return res['result'].get('value')

    def screenshot(self, path):
        data = self.send('Page.captureScreenshot', format='png', session=True)['data']
        Path(path).write_bytes(b64decode(data))

    def close(self):
        try: self.send('Browser.close', timeout=5)
        except Exception: pass
        try: self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        os.close(self._w), os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


# Runs in the page once it has loaded: waits for MathJax to finish typesetting and every image to decode, then
# measures what a reader sees.
PROBE = r'''(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const main = document.querySelector('main') || document.body;
  const hasMath = document.querySelector('.math') !== null;
  if (hasMath) {
    for (let i = 0; i < 150 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) await sleep(100);
    if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  }
  const imgs = [...main.querySelectorAll('img')];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  await document.fonts.ready;
  const size = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  const visible = e => { const s = getComputedStyle(e); return s.display !== 'none' && s.visibility !== 'hidden' && e.getClientRects().length > 0; };
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, .math, mjx-container').forEach(e => e.remove());
  return {
    title: document.title,
    h1: (main.querySelector('h1') || {}).textContent || '',
    text: main.innerText,
    prose: prose.textContent,
    math: document.querySelectorAll('span.math, div.math').length,
    math_untypeset: [...document.querySelectorAll('span.math, div.math')].filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    mjx: document.querySelectorAll('mjx-container').length,
    mjx_errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
    math_cut: [...document.querySelectorAll('mjx-container[display="true"]')].filter(e => e.scrollWidth > e.clientWidth + 1)
                .map(e => [e.scrollWidth, e.clientWidth, (e.getAttribute('aria-label') || e.textContent).slice(0, 60)]),
    tables: [...main.querySelectorAll('table')].filter(visible).map(t => ({size: size(t), rows: t.rows.length,
              overflow: t.scrollWidth > t.clientWidth + 1, fits: t.getBoundingClientRect().right <= window.innerWidth})),
    images: imgs.filter(visible).map(i => ({src: i.getAttribute('src'), size: size(i), natural: [i.naturalWidth, i.naturalHeight],
              fits: i.getBoundingClientRect().right <= window.innerWidth})),
    page_width: document.documentElement.scrollWidth, viewport: window.innerWidth,
    nav: [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')].map(a => a.getAttribute('href')),
    captions: [...document.querySelectorAll('nav.bd-docs-nav p.caption')].map(p => p.textContent.trim()),
    links: [...main.querySelectorAll('a[href]')].map(a => a.getAttribute('href').split('#')[0]),
    search_box: document.querySelector('form.bd-search input[name="q"], .search-button-field, input[name="q"]') !== null,
  };
})()'''

SEARCH_PROBE = r'''(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  for (let i = 0; i < 150; i++) {
    const hits = document.querySelectorAll('#search-results li, ul.search li');
    if (hits.length) return [...hits].map(li => (li.querySelector('a') || {}).getAttribute('href'));
    await sleep(100);
  }
  return [];
})()'''


def toctree(index=ROOT / 'docs' / 'index.md'):
    "The sidebar as docs/index.md writes it: [(caption, docname)] in reading order."
    out = []
    for block in re.findall(r'^```\{toctree\}\n(.*?)^```', index.read_text(encoding='utf-8'), re.M | re.S):
        caption = re.search(r'^:caption:\s*(.+)$', block, re.M)[1].strip()
        out += [(caption, line.strip()) for line in block.split('\n') if line.strip() and not line.startswith(':')]
    return out


@pytest.fixture(scope='module')
def site():
    "The site, built by its documented command (incremental: a second run only rebuilds what changed)."
    t0 = time.time()
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py')], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f'tools/build_docs.py failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}'
    print(f'docs build: {time.time() - t0:.1f}s')
    return toctree()


@pytest.fixture(scope='module')
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    b = Browser(CHROMIUM)
    yield b
    b.close()


def _nb(cells, **metadata):
    return {'cells': cells, 'metadata': metadata, 'nbformat': 4, 'nbformat_minor': 5}


def _cell(kind, source, **kw):
    return {'cell_type': kind, 'metadata': {}, 'source': source, **({'outputs': [], 'execution_count': None} if kind == 'code' else {}), **kw}


@pytest.fixture
def adapter(tmp_path):
    "The adapter over a tiny nbs/ and its nbdev-processed copy: 07_graph (a documented class), experiments/tables, index."
    nbs, proc = tmp_path / 'nbs', tmp_path / '_proc'
    show_doc = {'output_type': 'execute_result', 'execution_count': None, 'metadata': {}, 'data': {'text/markdown':
                '---\n\n[source](https://github.com/hrkd/hrkd/blob/main/hrkd/graph.py#L9){target="_blank" style="float:right"}\n\n'
                '### DomainRelationalGraph\n\n> DomainRelationalGraph (n)', 'text/plain': 'DomainRelationalGraph'}}
    notebooks = {
        '07_graph.ipynb': ([_cell('markdown', '# Domain-relational graph\n> Sec. 2.2: the graph.\n\nIntro text.'),
                            _cell('code', '#| export\nclass DomainRelationalGraph: pass')],
                           [_cell('raw', '---\ndescription: Sec. 2.2\noutput-file: graph.html\ntitle: Domain-relational graph\n---'),
                            _cell('code', '#| echo: false\n#| output: asis\nshow_doc(DomainRelationalGraph)', outputs=[show_doc]),
                            _cell('code', '#| code-fold: true\nx = 1')]),
        'experiments/tables.ipynb': ([_cell('markdown', '# Tables')], [_cell('raw', '---\noutput-file: tables.html\ntitle: Tables\n---')]),
        'index.ipynb': ([_cell('markdown', '# hrkd\n> summary')], [_cell('raw', '---\noutput-file: index.html\ntitle: hrkd\n---')]),
    }
    for rel, (original, processed) in notebooks.items():
        for folder, cells in ((nbs, original), (proc, processed)):
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(json.dumps(_nb(cells)))
    return build_docs.Adapter(build_docs.settings(), nbs, proc, build_docs.notebooks(nbs))


def test_links_between_pages_are_myst_links(adapter):
    "nbdev's links to its own doc site and notebook names in backticks become MyST links between the site's pages."
    fix = lambda text, doc='experiments/tables': adapter.markdown(text, doc)
    host = 'https://hrkd.github.io/hrkd/'
    assert fix(f'[`DomainRelationalGraph`]({host}graph.html#domainrelationalgraph)') == '[`DomainRelationalGraph`](../07_graph.ipynb#domainrelationalgraph)'
    # a method without a heading of its own: its class's heading; a name without any: the page
    assert fix(f'[`f`]({host}graph.html#domainrelationalgraph.forward)') == '[`f`](../07_graph.ipynb#domainrelationalgraph)'
    assert fix(f'[`g`]({host}graph.html#_private)') == '[`g`](../07_graph.ipynb)'
    assert fix(f'[x]({host}no_such_page.html#y)') == f'[x]({host}no_such_page.html#y)'  # left to the reader's network
    assert fix('see `07_graph`', 'index') == 'see [`07_graph`](07_graph.ipynb)'
    assert fix('see `07_graph`') == 'see [`07_graph`](../07_graph.ipynb)'
    assert fix('`05_missing` and `graph`') == '`05_missing` and `graph`'  # not a notebook: stays code
    assert fix('`results/amazon-offline-h100/`', 'index') == '[`results/amazon-offline-h100/`](results/amazon-offline-h100.md)'
    assert fix('```\n`07_graph` [x](https://hrkd.github.io/hrkd/graph.html)\n```') == '```\n`07_graph` [x](https://hrkd.github.io/hrkd/graph.html)\n```'
    assert fix('[x](https://example.org/a.html)') == '[x](https://example.org/a.html)'
    assert fix('87.06 ± 1.04') == '87.06\u00a0±\u00a01.04'  # one line in a narrow table cell


def test_a_processed_notebook_becomes_a_page(adapter, tmp_path, monkeypatch):
    "Title cell back in place, show_doc's markdown as the page's own section, Quarto options as myst-nb tags."
    monkeypatch.setattr(build_docs, 'DOCS', tmp_path / 'docs')
    page = json.loads(adapter.write(Path('07_graph.ipynb')).read_text())
    md = [c['source'] for c in page['cells'] if c['cell_type'] == 'markdown']
    code = [c for c in page['cells'] if c['cell_type'] == 'code']
    assert md[0] == '# Domain-relational graph\n> Sec. 2.2: the graph.\n\nIntro text.'  # nbdev kept only the first summary line
    assert md[1] == ('### DomainRelationalGraph\n\n[source](https://github.com/hrkd/hrkd/blob/main/hrkd/graph.py#L9){.showdoc-source}\n\n'
                     '> DomainRelationalGraph (n)')
    assert [(c['source'], c['metadata']['tags']) for c in code] == [('x = 1', ['hide-input'])]
    assert page['metadata']['language_info']['name'] == 'python'
    home = adapter.write(Path('index.ipynb'))
    assert home == tmp_path / 'docs' / build_docs.HOME and home.read_text().startswith('# hrkd\n> summary')


@needs_docs
def test_the_toctree_rules_fail_the_build(tmp_path):
    "docs/index.md is the list of pages: an entry without its notebook, and a notebook in no toctree, are errors."
    src = tmp_path / 'src'
    (src / 'a').mkdir(parents=True)
    for name in ('one', 'two'): (src / f'a/{name}.md').write_text(f'# {name}\n')
    (src / '_home.md').write_text('# home\n')
    def sphinx(entries):
        (src / 'index.md').write_text('```{include} _home.md\n```\n\n```{toctree}\n:caption: A\n\n' + '\n'.join(entries) + '\n```\n')
        return subprocess.run(build_docs.sphinx_cmd('html', tmp_path / 'out', src, tmp_path / 'doctrees'),
                              capture_output=True, text=True, timeout=300)
    assert sphinx(['a/one', 'a/two']).returncode == 0
    res = sphinx(['a/one', 'a/two', 'a/three'])
    assert res.returncode and "nonexisting document 'a/three'" in res.stderr
    res = sphinx(['a/one'])
    assert res.returncode and "document isn't included in any toctree" in res.stderr and 'two' in res.stderr


def _notebooks():
    return [str(p.with_suffix('')) for p in build_docs.notebooks(ROOT / 'nbs') if p.name != 'index.ipynb']


@needs_docs
def test_every_notebook_and_results_folder_is_a_page(site):
    docs = [doc for _, doc in site]
    assert len(docs) == len(set(docs)), 'a page listed twice in docs/index.md'
    assert sorted(d for d in docs if not d.startswith('results/')) == sorted(_notebooks())
    folders = sorted(p.parent.name for p in (ROOT / 'results').glob('*/README.md'))
    assert sorted(d for d in docs if d.startswith('results/')) == sorted(['results/index'] + [f'results/{f}' for f in folders] if folders else [])
    for doc in ['index'] + docs: assert (HTML / f'{doc}.html').is_file(), doc
    # nbdev's processed notebooks, written where Sphinx reads them, are git-ignored
    for path in ('docs/07_graph.ipynb', 'docs/experiments/tables.ipynb', f'docs/{build_docs.HOME}'):
        assert subprocess.run(['git', 'check-ignore', '-q', path], cwd=ROOT).returncode in (0, 128), path  # 128: no git


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        for key in ('href', 'src'):
            if a.get(key) and not (tag == 'link' and a.get('rel') == 'canonical'): self.links.append((tag, key, a[key]))


@needs_docs
def test_links_resolve_and_nothing_is_fetched_from_the_network(site):
    "Every relative href/src of every page (in the HTML a reader gets) is a file, and its #anchor an id of that page."
    pages = {p.resolve(): p for p in HTML.rglob('*.html') if p.relative_to(HTML).parts[0] != '_static'}
    parsed = {}
    for page in pages:
        parsed[page] = _Links()
        parsed[page].feed(page.read_text(encoding='utf-8'))
    broken, external = [], []
    for page, links in parsed.items():
        for tag, key, target in links.links:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc:
                if key == 'src' or tag == 'link' and parts.path.endswith('.css'): external.append(f'{page.name}: {target}')
                continue
            if target.startswith(('javascript:', 'mailto:', 'data:')): continue
            dest = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not dest.exists(): broken.append(f'{page.relative_to(HTML.resolve())}: {target}')
            elif parts.fragment and dest in parsed and unquote(parts.fragment) not in parsed[dest].ids:
                broken.append(f'{page.relative_to(HTML.resolve())}: {target} (no such anchor)')
    assert broken == [] and external == [], (broken[:20], external[:20])
    between = [t for p in parsed.values() for _, _, t in p.links if re.match(r'(\.\./)?\d\d\w*\.html#.', t)]
    assert len(between) >= 50, 'nbdev\'s links to API entries did not become links between pages'
    host = build_docs.settings()['doc_host']
    assert not [t for p in parsed.values() for _, _, t in p.links if t.startswith(host)], f'links left to {host}'
    assert (HTML / '_static' / 'mathjax' / 'tex-chtml.js').is_file() and (HTML / 'searchindex.js').is_file()
    # Sphinx's linkcheck ran on the same sources: no local link broken, every web link left alone (no network here)
    checked = [json.loads(line) for line in (BUILD / 'linkcheck' / 'output.json').read_text().splitlines()]
    assert checked and not [c for c in checked if c['status'] == 'broken']
    assert all(c['status'] == 'ignored' for c in checked if c['uri'].startswith(('http:', 'https:')))


def _probe(browser, page, name):
    browser.open((HTML / page).as_uri())
    seen = browser.evaluate(PROBE, timeout=60)
    browser.screenshot(SHOTS / f'{name}.png')
    where = f'{page} (screenshot: {SHOTS / name}.png)'
    assert '$$' not in seen['text'], f'raw $$ left in {where}'
    assert '$\\' not in seen['prose'], f'untypeset inline math in {where}'
    assert seen['math_untypeset'] == [], f'math MathJax did not typeset in {where}'
    assert seen['mjx_errors'] == [], f'MathJax errors in {where}'
    if seen['math']: assert seen['mjx'] >= seen['math']
    assert seen['math_cut'] == [], f'display equations wider than the text column in {where}'
    for t in seen['tables']: assert min(t['size']) > 0 and t['fits'], f'table not visible or off the page in {where}: {t}'
    for i in seen['images']:
        assert min(i['size']) > 0 and min(i['natural']) > 0 and i['fits'], f'image not shown in {where}: {i}'
    assert seen['page_width'] <= seen['viewport'], f'{where} is wider than the window'
    assert seen['search_box'], f'no search box on {where}'
    return seen


@needs_docs
@needs_browser
def test_home_page_is_the_paper_map_and_the_sidebar_is_docs_index(site, browser):
    seen = _probe(browser, 'index.html', 'home')
    assert 'Paper map' in seen['text'] and seen['mjx'] > 0
    assert not any(t['overflow'] for t in seen['tables']), 'a table of the home page needs scrolling at 1280 px'
    assert seen['tables'] and max(t['rows'] for t in seen['tables']) > 10
    assert '07_graph.html' in seen['links'], 'the Paper map does not link to the notebooks'
    nav = [h.split('#')[0] for h in seen['nav']]
    assert [h for h in nav if h not in ('', 'index.html')] == [f'{doc}.html' for _, doc in site], "the sidebar is not docs/index.md's order"
    captions = list(dict.fromkeys(c for c, _ in site))
    assert seen['captions'] == captions and captions[:2] == ['Data', 'Method']


@needs_docs
@needs_browser
def test_graph_page_typesets_the_equations(site, browser):
    seen = _probe(browser, '07_graph.html', 'graph')
    assert seen['mjx'] >= 5 and 'DomainRelationalGraph' in seen['text']


def _richest(docs):
    "The page with the most tables and pictures."
    return max(docs, key=lambda d: sum((HTML / f'{d}.html').read_text(encoding='utf-8').count(t) for t in ('<img', '<table')))


@needs_docs
@needs_browser
def test_an_experiment_page(site, browser):
    "The experiment notebook with the most tables and plots: whatever it shows is typeset and visible."
    exp = [doc for _, doc in site if doc.startswith('experiments/')]
    if not exp: pytest.skip('no experiment notebook in nbs/experiments/ yet')
    seen = _probe(browser, f'{_richest(exp)}.html', 'experiment')
    assert seen['h1'] and seen['h1'].rstrip('#') in seen['title']


@needs_docs
@needs_browser
def test_a_results_page_shows_its_tables_and_plots(site, browser):
    results = [doc for _, doc in site if doc.startswith('results/') and doc != 'results/index']
    if not results: pytest.skip('no results/ folder with a README')
    seen = _probe(browser, f'{_richest(results)}.html', 'results')
    assert seen['tables'] and seen['images']
    assert not any(t['overflow'] for t in seen['tables']), 'a results table needs scrolling at 1280 px'


@needs_docs
@needs_browser
def test_search_finds_an_api_symbol(site, browser):
    browser.open((HTML / 'search.html').as_uri() + '?q=DomainRelationalGraph')
    hits = browser.evaluate(SEARCH_PROBE, timeout=60)
    browser.screenshot(SHOTS / 'search.png')
    assert any(h and h.split('#')[0].split('?')[0] == '07_graph.html' for h in hits), hits
