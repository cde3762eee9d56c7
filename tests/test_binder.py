"""Binder's environment builds and works: ``scripts/check-binder.sh`` end to end.

The script copies the tree as a fresh clone has it, makes a fresh venv, installs
``binder/requirements.txt``, runs ``binder/postBuild`` from the copy's root (which builds the
JupyterLab extension through the package's build hook), runs ``notebooks/quickstart.ipynb`` with
papermill in that venv's kernel, checks ``jupyter labextension list`` and asks a briefly started
``jupyter server`` for ``/qmlops/api/v1/health``. pip and npm use the registries they are
configured with. About 3 to 4 minutes on 2 cores.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check-binder.sh"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_binder_environment_builds_and_runs_the_quickstart(tmp_path: Path) -> None:
    for program in ("node", "npm", "git"):
        if not shutil.which(program):
            pytest.fail(f"the Binder check needs {program} (make test installs Node.js)")
    started = time.monotonic()
    run = subprocess.run(
        [str(SCRIPT), str(tmp_path / "binder")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=880,
    )
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"after {took:.0f} s:\n{output[-6000:]}"
    assert "OK: Binder's environment builds and works" in run.stdout, output[-3000:]
    assert "qmlops-jupyter v" in run.stdout and "health: ok" in run.stdout
