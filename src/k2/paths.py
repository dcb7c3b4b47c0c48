"""Where K2 keeps things: one cache for downloads and builds, one data dir per run."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Downloads and builds (Maven jars, Go binaries, the venv) shared by every clone."""
    path = Path(os.environ.get("K2_CACHE", Path.home() / ".cache" / "k2"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """State of a local run (`k2 up`, `k2 stack`): logs, checkpoints, the warehouse."""
    path = Path(os.environ.get("K2_DATA", REPO_ROOT / ".k2"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_dir() -> Path:
    """The team's shared folder beside the checkout (recorded frames, third-party CRDs)."""
    env = os.environ.get("K2_SHARED")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared"
