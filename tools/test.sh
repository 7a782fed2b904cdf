#!/usr/bin/env bash
# The README's test command: regenerate hrkd/ and README.md from the notebooks and fail if that changed anything,
# run every library notebook (nbdev_test; cells flagged slow/gpu are skipped), then the pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONHASHSEED=0 MPLBACKEND=Agg

state() {  # a fingerprint of every tracked change and untracked file, to see whether the steps below touch anything
  { git diff --no-ext-diff HEAD 2>/dev/null || true
    git ls-files --others --exclude-standard -z 2>/dev/null | xargs -0 -r sha1sum; } | sha1sum
}
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  before=$(state)
  nbdev_export && nbdev_clean && python tools/sync_readme.py && python tools/sync_settings.py
  if [ "$before" != "$(state)" ]; then
    echo "FAILED: nbdev_export / nbdev_clean / tools/sync_readme.py changed files; commit the regenerated files:" >&2
    git status --short >&2
    exit 1
  fi
else
  nbdev_export && nbdev_clean && python tools/sync_readme.py --check && python tools/sync_settings.py --check
fi

start=$(date +%s)
nbdev_test --n_workers 2 --timing
echo "nbdev_test: $(( $(date +%s) - start ))s"
python -m pytest tests -q -p no:cacheprovider
