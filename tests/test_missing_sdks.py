"""A provider SDK that is not installed gives MissingBackendDependency naming the extra to
install, never an ImportError; the rest of qmlops goes on working. Each case runs in a fresh
interpreter where the SDK's import is blocked, as on a machine without it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from qmlops_testing import BELL_QASM2

BLOCKER = textwrap.dedent("""
    import sys
    # What Python does for a package that is not installed: import raises
    # ModuleNotFoundError, importlib.util.find_spec returns None.
    for name in sys.argv[1].split(","):
        sys.modules[name] = None
    sys.argv = sys.argv[2:]
    code = sys.argv.pop(0)
    exec(code)
""")

CASES = [
    ("braket_local", "braket", "braket"),
    ("braket:sv1", "braket", "braket"),
    ("ibm:fake_manila", "qiskit_ibm_runtime", "ibm"),
    ("ionq:simulator", "httpx", "ionq"),
    ("pennylane:default.qubit", "pennylane", "pennylane"),
]


def run_blocked(blocked: str, code: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"QMLOPS_HOME": str(home), "PATH": "/usr/bin:/bin", "IONQ_API_KEY": "k"}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, blocked, code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("backend", "module", "extra"), CASES)
def test_submit_names_the_extra(backend: str, module: str, extra: str, tmp_path: Path) -> None:
    qasm = tmp_path / "bell.qasm"
    qasm.write_text(BELL_QASM2)
    code = (
        "from qmlops_jupyter.cli.main import cli; "
        "cli(['submit', '--backend', sys.argv[0], sys.argv[1]], prog_name='qmlops')"
    )
    done = run_blocked(module, code, backend, str(qasm), home=tmp_path / "home")
    assert done.returncode == 5, done.stderr  # backend unavailable
    last = done.stderr.strip().splitlines()[-1]
    assert f"pip install 'qmlops-jupyter[{extra}]'" in last, done.stderr
    assert "Traceback" not in done.stderr
    # Nothing was recorded.
    code = "from qmlops_jupyter.cli.main import cli; cli(['jobs', '--json'], prog_name='qmlops')"
    listed = run_blocked(module, code, home=tmp_path / "home")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"


def test_listing_goes_on_without_the_sdks(tmp_path: Path) -> None:
    code = (
        "from qmlops_jupyter.cli.main import cli; cli(['backends', '--json'], prog_name='qmlops')"
    )
    done = run_blocked("braket,qiskit_ibm_runtime,httpx,pennylane", code, home=tmp_path)
    assert done.returncode == 0, done.stderr
    import json

    infos = {i["name"]: i for i in json.loads(done.stdout)}
    assert infos["aer"]["available"] is True
    for plugin, extra in [
        ("braket", "braket"),
        ("ionq", "ionq"),
        ("ibm", "ibm"),
        ("pennylane", "pennylane"),
    ]:
        names = [n for n in infos if n == plugin or n.startswith(plugin + ":")]
        assert names, (plugin, sorted(infos))
        for name in names:
            assert infos[name]["available"] is False, infos[name]
            assert f"qmlops-jupyter[{extra}]" in infos[name]["status"], infos[name]


def test_without_mlflow_jobs_run_and_runs_names_the_extra(tmp_path: Path) -> None:
    """MLflow missing: tracking turns itself off (jobs run, no lineage), and ``qmlops runs``
    names the install."""
    qasm = tmp_path / "bell.qasm"
    qasm.write_text(BELL_QASM2)
    code = (
        "import json; from qmlops_jupyter.cli.main import cli\n"
        "cli(['submit', '--wait', '--json', sys.argv[0]], prog_name='qmlops')"
    )
    done = run_blocked("mlflow", code, str(qasm), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "COMPLETED" and job["lineage"] is None
    code = "from qmlops_jupyter.cli.main import cli; cli(['runs'], prog_name='qmlops')"
    done = run_blocked("mlflow", code, home=tmp_path / "home")
    assert done.returncode == 5
    assert done.stderr.strip() == (
        "qmlops: error: tracking needs MLflow, which is not installed; install it with: "
        "pip install 'qmlops-jupyter[mlflow]'"
    )
