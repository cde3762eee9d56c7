"""Import cost and architecture rules: the core stays light and free of Jupyter's server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qmlops_jupyter"
CORE = [
    "states",
    "errors",
    "models",
    "config",
    "circuits",
    "client",
    "ledger",
    "backends",
    "engine",
]


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def test_import_is_light() -> None:
    loaded = modules_after("import qmlops_jupyter")
    heavy = {
        "qiskit",
        "qiskit_aer",
        "sqlalchemy",
        "alembic",
        "pydantic",
        "mlflow",
        "braket",
        "pennylane",
        "qiskit_ibm_runtime",
        "numpy",
        "tornado",
        "jupyter_server",
    }
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_core_never_imports_tornado_or_jupyter_server() -> None:
    imports = "; ".join(f"import qmlops_jupyter.{m}" for m in CORE)
    loaded = {m.split(".")[0] for m in modules_after(imports + "; import qmlops_jupyter.cli")}
    assert "tornado" not in loaded and "jupyter_server" not in loaded
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "import tornado" not in text and "from tornado" not in text, path
        assert "jupyter_server" not in text, path


def test_lazy_attributes() -> None:
    import qmlops_jupyter

    assert callable(qmlops_jupyter.submit) and qmlops_jupyter.JobState.COMPLETED.terminal
    with pytest.raises(AttributeError):
        _ = qmlops_jupyter.nope


def test_aer_is_an_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="qmlops_jupyter.backends")}
    assert names["aer"] == "qmlops_jupyter.backends.aer:AerBackend"


def test_missing_sdk_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from qmlops_jupyter.backends import BackendRegistry
    from qmlops_jupyter.config import BackendsFile
    from qmlops_jupyter.errors import MissingBackendDependency

    fake = EntryPoint(
        name="ionq", value="qmlops_nonexistent_sdk.adapter:Backend", group="qmlops_jupyter.backends"
    )
    monkeypatch.setattr("qmlops_jupyter.backends.entry_points", lambda group: [fake])
    registry = BackendRegistry(BackendsFile())
    with pytest.raises(MissingBackendDependency, match=r"pip install 'qmlops-jupyter\[ionq\]'"):
        registry.get("ionq")
