"""The job files run as main files, as the SparkApplications name them (mainApplicationFile).

Run from a copy of the package elsewhere (as in the Spark image, /opt/k2/jobs/k2_jobs),
each must import *that* k2_jobs package and get as far as its argument parser.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import k2_jobs

JOBS = Path(k2_jobs.__file__).parent


@pytest.mark.parametrize("layer", ["bronze", "silver", "gold"])
def test_job_file_runs_as_a_main_file(layer: str, tmp_path: Path) -> None:
    copy = tmp_path / "opt" / "k2_jobs"
    shutil.copytree(JOBS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "__init__.py"
    init.write_text(init.read_text() + '\nprint("k2_jobs from", __file__)\n')
    done = subprocess.run(
        [sys.executable, str(copy / f"{layer}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "-f" in done.stdout
    assert f"k2_jobs from {copy / '__init__.py'}" in done.stdout  # the copy, not the installed one


def test_job_all_refuses_available_now(capsys: pytest.CaptureFixture[str]) -> None:
    """Draining runs layer by layer; `all` would stop the others when the first is done."""
    from k2.paths import REPO_ROOT
    from k2_jobs import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["all", "-f", str(REPO_ROOT / "examples" / "pipeline.yaml"), "--available-now"]
    )
    assert cli.run(args) == 2
    assert "one layer at a time" in capsys.readouterr().err
