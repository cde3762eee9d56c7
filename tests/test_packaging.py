"""Import cost and architecture rules: the core stays light and free of Jupyter's server."""

from __future__ import annotations

import json
import re
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
    "vault",
    "cost",
    "tracking",
    "remote",
]
#: The one package that may import tornado and jupyter_server.
SERVER = PACKAGE / "server"


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


def test_loading_the_server_extension_leaves_the_heavy_imports_for_later() -> None:
    """What the extension runs before the server listens (its app module, the handlers'
    routes, the event pump and metrics, the home folder) loads neither pydantic nor SQLAlchemy
    nor an SDK: the client and the request models are built by the start hook, after the
    server listens (start-up, benchmark 6c)."""
    loaded = modules_after(
        "from qmlops_jupyter.server.app import QmlopsApp\n"
        "from qmlops_jupyter.server.handlers import routes\n"
        "assert len(routes()) >= 10\n"
        "import qmlops_jupyter.server.events, qmlops_jupyter.server.metrics\n"
        "from qmlops_jupyter.paths import resolve_home\n"
        "resolve_home()"
    )
    top = {m.split(".")[0] for m in loaded}
    assert not {"pydantic", "pydantic_core", "sqlalchemy", "qiskit", "mlflow"} & top
    assert "tornado" in top  # the handlers were really imported


def test_core_never_imports_tornado_or_jupyter_server() -> None:
    imports = "; ".join(f"import qmlops_jupyter.{m}" for m in CORE)
    loaded = {m.split(".")[0] for m in modules_after(imports + "; import qmlops_jupyter.cli")}
    assert "tornado" not in loaded and "jupyter_server" not in loaded
    for path in PACKAGE.rglob("*.py"):
        if SERVER in path.parents:
            continue
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(tornado|jupyter_server)\b", text, re.M), path


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


def test_the_server_extension_is_enabled_on_install() -> None:
    """The install put jupyter-config/server-config/qmlops_jupyter.json where jupyter_server
    reads it, and the server finds, enables and validates the extension."""
    config = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d"
    shipped = Path(__file__).resolve().parents[1] / "jupyter-config" / "server-config"
    assert json.loads((config / "qmlops_jupyter.json").read_text()) == json.loads(
        (shipped / "qmlops_jupyter.json").read_text()
    )
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home())},
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # colours
    assert re.search(r"^\s*qmlops_jupyter enabled$", text, re.M), text
    assert re.search(r"^\s*qmlops_jupyter \S+ OK$", text, re.M), text
