#!/usr/bin/env bash
# Build the pinned Go tools (etcd, kube-apiserver, kube-controller-manager, kubectl, helm,
# skaffold) into $K2_CACHE/bin/<tool>-<version>/ (default ~/.cache/k2). Idempotent: a second
# run only checks stamps. Pass tool names to build a subset; see src/k2/stack/tools.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="${K2_PYTHON:-${K2_CACHE:-$HOME/.cache/k2}/venv/bin/python}"
[ -x "$py" ] || py=python3
PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m k2.stack.tools build "$@"
