#!/usr/bin/env bash
# Regenerate requirements/lock.txt from the active environment (./.venv) after changing requirements/runtime.txt:
#   .venv/bin/pip install -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/tests.txt
#   bash tools/install/freeze_lock.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
{
    echo "# Full pinned environment for declip-mm (pip freeze of a working install; regenerate with"
    echo "# tools/install/freeze_lock.sh after changing requirements/runtime.txt). Its hash names the shared environment."
    "$REPO/.venv/bin/python" -m pip freeze --exclude-editable | grep -v '^-e'
} >"$REPO/requirements/lock.txt"
echo "wrote $REPO/requirements/lock.txt"
