"""The installed `hrkd` console script (settings.ini console_scripts) reaches hrkd.cli.main."""
import os
import shutil
import subprocess
import sys

import pytest


def _hrkd(*args):
    exe = shutil.which('hrkd') or os.path.join(os.path.dirname(sys.executable), 'hrkd')
    if not os.path.exists(exe): pytest.fail("the `hrkd` console script is not installed: pip install -e . declares it")
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1'}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_the_subcommands():
    out = _hrkd('--help')
    assert out.returncode == 0, out.stderr
    for command in ('teacher', 'distill', 'evaluate', 'pipeline'): assert command in out.stdout


def test_bad_input_fails_before_training(tmp_path):
    out = _hrkd('pipeline', '--preset', 'huge', '--out', str(tmp_path / 'run'))
    assert out.returncode == 2 and "invalid choice: 'huge'" in out.stderr
    out = _hrkd('pipeline', '--dataset', 'toy', '--domains', 'books,garden', '--out', str(tmp_path / 'run'))
    assert out.returncode == 2 and "unknown domain(s) ['garden']" in out.stderr
    assert not (tmp_path / 'run' / 'teacher').exists()
