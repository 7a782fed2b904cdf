"""Install hrkd from the values in settings.ini (nbdev 2 layout) without pkg_resources."""
import re
import shlex
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=['='])
config.read(here / 'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
lic = licenses[cfg['license']]
requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
offline_requirements = shlex.split(cfg.get('offline_requirements', ''))
docs_requirements = shlex.split(cfg.get('docs_requirements', ''))
# the docs builder runs nbdev's notebook processing: the docs extra takes nbdev and its pins from dev_requirements
nbdev_pins = [r for r in dev_requirements if re.split(r'[<>=!~;\[ ]', r)[0].lower() in ('nbdev', 'fastcore', 'execnb')]
console_scripts = [s.strip() for s in cfg.get('console_scripts', '').split(',') if s.strip()]
readme = here / 'README.md'

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else '',
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    url=cfg['git_url'],
    license=lic[0],
    keywords=cfg['keywords'].split(),
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status']) - 1],
        'Intended Audience :: ' + cfg['audience'].title(),
        'License :: ' + lic[1],
        'Natural Language :: ' + cfg['language'].title(),
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    packages=setuptools.find_packages(include=['hrkd', 'hrkd.*']),
    include_package_data=True,
    python_requires='>=' + cfg['min_python'],
    install_requires=requirements,
    extras_require={'dev': sorted(set(dev_requirements + offline_requirements + docs_requirements)),
                    'offline': offline_requirements, 'docs': docs_requirements + nbdev_pins},
    entry_points={
        'console_scripts': console_scripts,
        'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
