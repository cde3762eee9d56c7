"""The JupyterLab extension as it ships: prebuilt in the wheel, found and served by a real
JupyterLab, its settings schema valid and enforced, its strings ready for translation.

The sidebar itself is driven in headless Chromium by ``test_sidebar_browser.py``; its client and
model by jest (``labextension/src/__tests__``, run by ``make test``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from qmlops_testing import JupyterServer, jupyter_env

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "labextension"
BUILT = ROOT / "qmlops_jupyter" / "labextension"
NAME = "qmlops-jupyter"
PLUGIN = f"{NAME}:plugin"


def built_or_fail() -> None:
    if not (BUILT / "static" / "style.js").exists():
        pytest.fail("the JupyterLab extension is not built: run `make labextension`")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip wheel .` builds from this tree (the extension is already built, so the
    build hook reuses it)."""
    built_or_fail()
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [path] = out.glob("qmlops_jupyter-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_the_prebuilt_extension_enabled(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    prefix = next(n for n in names if ".data/data/share/jupyter/labextensions/" in n)
    base = prefix[: prefix.index("labextensions/")] + f"labextensions/{NAME}/"
    shipped = {n[len(base) :] for n in names if n.startswith(base)}
    assert {"package.json", "install.json", "static/style.js"} <= shipped, sorted(shipped)
    assert f"schemas/{NAME}/plugin.json" in shipped
    package = json.loads(wheel.read(base + "package.json"))
    entry = package["jupyterlab"]["_build"]["load"]
    assert entry in shipped, f"{entry} (the remote entry JupyterLab loads) is not in the wheel"
    assert json.loads(wheel.read(base + "install.json"))["packageName"] == "qmlops-jupyter"
    # The MLflow launcher icon ships with the package.
    assert "qmlops_jupyter/server/static/mlflow.svg" in names
    # The server extension is enabled on install beside it.
    assert any(n.endswith("etc/jupyter/jupyter_server_config.d/qmlops_jupyter.json") for n in names)
    # Only the build output ships: no TypeScript sources, node_modules, or a second copy inside
    # the Python package.
    assert not [n for n in names if "node_modules" in n or n.endswith((".ts", ".tsx"))]
    assert not [n for n in names if n.startswith("qmlops_jupyter/labextension/")]


def test_the_wheel_ships_the_dashboard_notebooks(wheel: zipfile.ZipFile) -> None:
    """``qmlops dashboard NAME`` of an installed wheel finds its notebook in the package."""
    names = set(wheel.namelist())
    for name in ("jobs", "experiments", "cost"):
        assert f"qmlops_jupyter/dashboards/notebooks/{name}.ipynb" in names


class Lab(JupyterServer):
    app = "lab"
    extra_args = (
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    built_or_fail()
    scratch = tmp_path_factory.mktemp("lab")
    server = Lab(scratch / "root", jupyter_env(scratch / "home", scratch), scratch / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_jupyterlab_loads_the_extension_and_its_settings(lab: Lab) -> None:
    status, page = lab.request("GET", "/lab", headers={"Authorization": f"token {lab.token}"})
    assert status == 200
    config = json.loads(
        re.search(
            r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S
        )[1]  # type: ignore[index]
    )
    [federated] = [e for e in config["federated_extensions"] if e["name"] == NAME]
    assert federated["load"].startswith("static/remoteEntry.")
    assert NAME not in config.get("disabledExtensions", [])
    # The remote entry itself is served from the installed extension.
    status, _ = lab.request("GET", f"/lab/extensions/{NAME}/{federated['load']}")
    assert status == 200

    status, settings = lab.request("GET", f"/lab/api/settings/{PLUGIN}")
    assert status == 200, settings
    properties = settings["schema"]["properties"]
    assert properties["defaultBackend"]["default"] == "aer"
    assert properties["refreshInterval"]["default"] == 10
    # A user's change is kept; one the schema refuses is refused with a 400.
    status, _ = lab.request(
        "PUT", f"/lab/api/settings/{PLUGIN}", {"raw": json.dumps({"refreshInterval": 3})}
    )
    assert status == 204
    assert lab.request("GET", f"/lab/api/settings/{PLUGIN}")[1]["settings"]["refreshInterval"] == 3
    status, body = lab.request(
        "PUT", f"/lab/api/settings/{PLUGIN}", {"raw": json.dumps({"refreshInterval": 0})}
    )
    assert status == 400, body


def test_every_user_facing_string_goes_through_the_translator() -> None:
    """JSX text and the labels of commands come from ``trans.__``/``trans._n``: a literal
    English word between tags would escape language packs."""
    offenders = []
    for path in sorted((SOURCE / "src").glob("*.tsx")):
        source = path.read_text()
        # Text between a tag's closing '>' (not an arrow's '=>') and the next '<', on one line or
        # several, that has letters and no JavaScript in it.
        for match in re.finditer(r"(?<![=\-])>\s*([A-Za-z][^<>{};]*?)\s*<", source):
            line = source.count("\n", 0, match.start(1)) + 1
            offenders.append(f"{path.name}:{line}: {match[1]!r}")
    assert not offenders, "untranslated text:\n" + "\n".join(offenders)
    index = (SOURCE / "src" / "index.ts").read_text()
    labels = re.findall(r"(?:label|caption|title|tooltip):\s*('[^']*'|\"[^\"]*\")", index)
    assert not labels, f"command labels not translated: {labels}"


def test_the_package_points_jupyterlab_at_its_built_extension() -> None:
    """What ``jupyter labextension develop`` links: the build output, named as in the wheel."""
    import qmlops_jupyter

    built_or_fail()
    [path] = qmlops_jupyter._jupyter_labextension_paths()
    assert path["dest"] == NAME
    folder = Path(qmlops_jupyter.__file__).parent / path["src"]
    assert json.loads((folder / "package.json").read_text())["name"] == NAME
