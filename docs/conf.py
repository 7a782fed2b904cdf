# Sphinx configuration of the documentation site: `python tools/build_docs.py` writes nbdev's processed notebooks
# next to this file (git-ignored) and runs `sphinx-build -W -n` (html, then linkcheck) on this folder.
# The sidebar is the toctree of index.md; the results pages are results/*.md.
from configparser import ConfigParser
from pathlib import Path

_ini = ConfigParser(delimiters=['='])
_ini.read(Path(__file__).resolve().parents[1] / 'settings.ini', encoding='utf-8')
_cfg = _ini['DEFAULT']

project = html_title = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']

extensions = ['myst_nb', 'sphinx-mathjax-offline']  # MathJax served from _static/: the site works offline
root_doc = 'index'
exclude_patterns = ['_home.md', '**.ipynb_checkpoints']  # _home.md: nbs/index.ipynb, included by index.md

nb_execution_mode = 'off'           # the outputs saved in the notebooks; nothing is run
nb_render_markdown_format = 'myst'  # markdown outputs: math and links too
nb_merge_streams = True
nb_ipywidgets_js = {}               # no widget scripts from a CDN: the saved widget state stays unrendered, offline
myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_inline', 'colon_fence']
myst_dmath_double_inline = True
myst_heading_anchors = 4            # headings are link targets (nbdev's links to API entries point at them)

html_theme = 'sphinx_book_theme'
html_theme_options = {
    'repository_url': _cfg['git_url'],
    'repository_branch': _cfg['branch'],
    'path_to_docs': _cfg['nbs_path'],
    'use_repository_button': False,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'home_page_in_toc': True,
    'navigation_with_keys': False,
}
html_static_path = ['_static']
html_css_files = ['hrkd.css']
html_js_files = ['hrkd.js']
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None

# `-b linkcheck`: no network here, so only local targets are checked; links between pages and to their headings are
# resolved by Sphinx itself, and `-n -W` makes an unresolved one an error.
linkcheck_ignore = [r'https?://', r'mailto:']
linkcheck_anchors = False


def _keep_plus_minus_together(app, relative_path, parent_docname, content):
    "`87.06 ± 1.04` stays on one line in a narrow table cell (the results' markdown, included by results/*.md)."
    content[0] = content[0].replace(' ± ', '\u00a0±\u00a0')


def setup(app):
    app.connect('include-read', _keep_plus_minus_together)
