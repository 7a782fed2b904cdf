"""The documentation site as a reader sees it: `python tools/build_docs.py` builds it offline, then headless Chromium
opens pages and checks that the equations are typeset, that tables and plots are visible, and that search finds an
API symbol; every internal link and image of every page must exist. Screenshots land in `_site/screenshots/`.

Skipped without a Chromium binary (Debian: `apt-get install chromium`) or without the docs extra
(`pip install -e ".[docs]"`, part of `dev`)."""
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from base64 import b64decode
from pathlib import Path

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


@pytest.fixture(scope='module')
def site():
    "The site, built by its documented command (incremental: a second run only rebuilds what changed)."
    t0 = time.time()
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_docs.py')], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f'tools/build_docs.py failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}'
    print(f'docs build: {time.time() - t0:.1f}s')
    pages = json.loads((BUILD / 'pages.json').read_text())
    return pages


@pytest.fixture(scope='module')
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    b = Browser(CHROMIUM)
    yield b
    b.close()


def test_links_to_notebooks_and_repository_files_are_rewritten(tmp_path):
    "Links in notebooks and results notes, as written for GitHub or nbdev, become links between the site's pages."
    site = build_docs.Site(ROOT, tmp_path)
    for rel, doc, out in [('04_graph.ipynb', 'graph', 'graph.html'), ('experiments/tables.ipynb', 'experiments/tables', None),
                          ('index.ipynb', 'index', None)]:
        site.register(rel, doc, out)
        site.suffix[doc] = '.ipynb'
    site.anchors.update(graph={'domainrelationalgraph'}, index={'paper-map'})
    site.plan_results()
    fix = lambda text, doc='experiments/tables', where='nbs/experiments': site.rewrite_markdown(text, doc, where)
    assert fix('[g](../04_graph.ipynb)') == '[g](../graph.ipynb)'
    assert fix('see `04_graph`') == 'see [`04_graph`](../graph.ipynb)'
    assert fix('[h](../index.ipynb#paper-map)') == '[h](../index.ipynb#paper-map)'
    assert fix('[h](../index.ipynb#no-such-heading)') == '[h](../index.ipynb)'  # to the page, not to nowhere
    assert fix('[g](nbs/04_graph.ipynb)', 'index', 'nbs') == '[g](graph.ipynb)'  # README style, from the repo root
    assert fix('[g](04_graph.ipynb)', 'index', 'nbs') == '[g](graph.ipynb)'
    # nbdev's links to its own doc site, with a method that has no heading of its own
    assert fix(f'[D]({site.doc_host}graph.html#domainrelationalgraph.forward)') == '[D](../graph.ipynb#domainrelationalgraph)'
    assert fix('<a href="../04_graph.ipynb">g</a>') == '<a href="../graph.html">g</a>'
    assert fix('[code](../../hrkd/graph.py)') == f'[code]({site.git_blob}hrkd/graph.py)'
    assert site.git_blob.startswith('https://') and site.doc_host.startswith('https://')
    assert fix('[x](https://example.org/a.html)') == '[x](https://example.org/a.html)'
    assert fix('```\n[g](../04_graph.ipynb)\n```') == '```\n[g](../04_graph.ipynb)\n```'  # code stays code
    for folder, doc in site.results.items():
        assert fix(f'[r](../../{folder}/README.md)') == f'[r](../{doc}.md)'
        pic = next((ROOT / folder).rglob('*.png'), None)
        if pic:
            rel = pic.relative_to(ROOT).as_posix()
            assert fix(f'![p](../../{rel})') == f'![p](../_extra/_repo/{rel})'
            assert (tmp_path / 'src' / '_extra' / '_repo' / rel).read_bytes() == pic.read_bytes()
            assert fix(f'<img src="../../{rel}">') == f'<img src="../_repo/{rel}">'


def test_staging_keeps_the_text_of_the_title_cell_and_skips_lesson_code(tmp_path):
    "nbdev makes front matter of the whole title cell, and runs lesson cells that also import: the staged copy splits both."
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': '# Title\n> summary, line 1\n> line 2\n\nIntro text.'},
                    {'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,
                     'source': 'import json\nresult = run_for_minutes()'},
                    {'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,
                     'source': '#| export\nimport os\nX = 1'}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    cells = [c['source'] for c in json.loads(build_docs._stage_notebook(tmp_path / 'a.ipynb'))['cells']]
    assert cells == ['# Title\n> summary, line 1\n> line 2', 'Intro text.', '#| hide\nimport json',
                     '#| eval: false\nimport json\nresult = run_for_minutes()', '#| export\nimport os\nX = 1']
    assert build_docs._full_description(tmp_path / 'a.ipynb', 'summary, line 1') == 'summary, line 1 line 2'


def _notebooks():
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'nbs').rglob('*.ipynb')
                  if not any(part.startswith(('.', '_')) for part in p.relative_to(ROOT / 'nbs').parts))


@needs_docs
def test_every_notebook_and_results_folder_is_a_page_in_notebook_order(site):
    sources = [p['source'] for p in site]
    for nb in _notebooks(): assert nb in sources, f'{nb} has no page'
    for p in site: assert (HTML / p['html']).is_file(), p
    assert site[0]['html'] == 'index.html'
    numbered = [s for s in sources if s.startswith('nbs/') and s.count('/') == 1 and s[4:6].isdigit()]
    assert numbered == sorted(numbered) and len(numbered) >= 2
    assert any(p['section'] == 'Results' for p in site) == (ROOT / 'results').is_dir()
    # experiments (nbs/experiments/) come after the numbered notebooks, in their own sidebar section
    exp = [i for i, s in enumerate(sources) if s.startswith('nbs/experiments/')]
    assert all(i > sources.index(numbered[-1]) for i in exp)
    if exp: assert {site[i]['section'] for i in exp} == {'experiments'}


@needs_docs
def test_links_resolve_and_nothing_is_fetched_from_the_network(site):
    assert build_docs.check_links(HTML, anchors=True) == []
    external = []
    for page in HTML.rglob('*.html'):
        if page.relative_to(HTML).parts[0] == '_static': continue
        parser = build_docs._Links()
        parser.feed(page.read_text(encoding='utf-8'))
        external += [f'{page.name}: {t}' for tag, key, t in parser.links
                     if key == 'src' or tag == 'link' and t.split('?')[0].endswith('.css')
                     if t.startswith(('http:', 'https:', '//'))]
    assert external == [], 'scripts, styles or images that need the network'
    assert (HTML / '_static' / 'mathjax' / 'tex-chtml.js').is_file() and (HTML / 'searchindex.js').is_file()


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
def test_home_page_is_the_paper_map(site, browser):
    seen = _probe(browser, 'index.html', 'home')
    assert 'Paper map' in seen['text'] and seen['mjx'] > 0
    assert not any(t['overflow'] for t in seen['tables']), 'a table of the home page needs scrolling at 1280 px'
    assert seen['tables'] and max(t['rows'] for t in seen['tables']) > 10
    nav = [h.split('#')[0] for h in seen['nav']]
    order = [p['html'] for p in site if p['html'] != 'index.html']
    assert [h for h in nav if h in order] == order, 'the sidebar does not follow the notebooks\' order'


@needs_docs
@needs_browser
def test_graph_page_typesets_the_equations(site, browser):
    page = next(p['html'] for p in site if p['source'] == 'nbs/04_graph.ipynb')
    seen = _probe(browser, page, 'graph')
    assert seen['mjx'] >= 5 and 'DomainRelationalGraph' in seen['text']


def _richest(pages):
    "The page with the most tables and pictures."
    return max(pages, key=lambda p: sum((HTML / p['html']).read_text(encoding='utf-8').count(t) for t in ('<img', '<table')))


@needs_docs
@needs_browser
def test_an_experiment_page(site, browser):
    "The experiment notebook with the most tables and plots: whatever it shows is typeset and visible."
    exp = [p for p in site if p['source'].startswith('nbs/experiments/')]
    if not exp: pytest.skip('no experiment notebook in nbs/experiments/ yet')
    page = _richest(exp)
    seen = _probe(browser, page['html'], 'experiment')
    assert seen['h1'] and seen['h1'] in seen['title']


@needs_docs
@needs_browser
def test_a_results_page_shows_its_tables_and_plots(site, browser):
    results = [p for p in site if p['section'] == 'Results']
    if not results: pytest.skip('no results/ folder with markdown tables or plots')
    seen = _probe(browser, _richest(results)['html'], 'results')
    assert seen['tables'] and seen['images']
    assert not any(t['overflow'] for t in seen['tables']), 'a results table needs scrolling at 1280 px'


@needs_docs
@needs_browser
def test_search_finds_an_api_symbol(site, browser):
    browser.open((HTML / 'search.html').as_uri() + '?q=DomainRelationalGraph')
    hits = browser.evaluate(SEARCH_PROBE, timeout=60)
    browser.screenshot(SHOTS / 'search.png')
    graph = next(p['html'] for p in site if p['source'] == 'nbs/04_graph.ipynb')
    assert any(h and h.split('#')[0].split('?')[0] == graph for h in hits), hits
