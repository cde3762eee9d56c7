"""``GET /qmlops/api/v1/dashboards``: a dashboard is linked to its Voila page only when this
server's Voila serves it (the extension enabled and loaded) and its notebook is under the
server's root in no hidden folder; otherwise its ``path`` and ``url`` are null and the one-line
``hint`` says why and what to do.

In-process (pytest_jupyter's server, whose config holds only what each test gives it): Voila
not installed, installed but not enabled, enabled with the notebooks under the root (the links
under the server's base URL) or not. Then a real ``jupyter server`` (Voila enabled as
installed): the link is Voila's page of the Jobs dashboard for a request with the token, and a
request without it gets no page.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from qmlops_testing import JupyterServer, running_server
from traitlets.config import Config

from qmlops_jupyter.dashboards import DASHBOARDS
from qmlops_jupyter.server import dashboard_links
from qmlops_jupyter.server.dashboard_links import notebook_under

API = "qmlops/api/v1"
SOURCE = Path(__file__).resolve().parent.parent / "notebooks" / "dashboards"
SPEC_FILE = Path(__file__).resolve().parent.parent / "qmlops_jupyter" / "server" / "openapi.json"
SERVER_ENV = ("QMLOPS_SERVER_URL", "QMLOPS_SERVER_TOKEN_FILE", "MLFLOW_TRACKING_URI")


def copy_dashboards(root: Path, under: str = "notebooks/dashboards") -> Path:
    """The dashboard notebooks copied to ``root/under``."""
    target = root / under
    target.mkdir(parents=True, exist_ok=True)
    for board in DASHBOARDS.values():
        shutil.copyfile(SOURCE / board.filename, target / board.filename)
    return target


def check_spec(body: dict[str, Any]) -> None:
    """The answer conforms to the schema openapi.json declares for it."""
    from jsonschema import Draft202012Validator

    doc = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    schema = doc["paths"]["/dashboards"]["get"]["responses"]["200"]["content"]
    schema = {**schema["application/json"]["schema"], "components": doc["components"]}
    Draft202012Validator(schema).validate(body)


def assert_unlinked(body: dict[str, Any], *hint_has: str) -> None:
    assert [d["name"] for d in body["dashboards"]] == list(DASHBOARDS)
    assert all(d["url"] is None and d["path"] is None for d in body["dashboards"]), body
    hint = body["hint"]
    assert hint and "\n" not in hint, body
    for text in hint_has:
        assert text in hint, hint


# -- the notebooks under a root ----------------------------------------------------------------


def test_a_notebook_counts_under_the_root_and_not_in_a_hidden_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_links, "folders", lambda: [])
    root = tmp_path / "root"
    root.mkdir()
    assert notebook_under(root, "jobs.ipynb") is None
    copy_dashboards(root)
    assert notebook_under(root, "jobs.ipynb") == "notebooks/dashboards/jobs.ipynb"
    assert notebook_under(root, "other.ipynb") is None

    # The package's own copy counts when it lies under the root, not in a hidden folder.
    shutil.rmtree(root / "notebooks")
    package = copy_dashboards(root, ".venv/lib/qmlops_jupyter/dashboards/notebooks")
    visible = copy_dashboards(root, "src/qmlops/notebooks/dashboards")
    outside = copy_dashboards(tmp_path, "elsewhere")
    monkeypatch.setattr(dashboard_links, "folders", lambda: [outside, package, visible])
    assert notebook_under(root, "jobs.ipynb") == "src/qmlops/notebooks/dashboards/jobs.ipynb"
    assert notebook_under(root, "jobs.ipynb", hidden_ok=True) == (
        ".venv/lib/qmlops_jupyter/dashboards/notebooks/jobs.ipynb"
    )
    monkeypatch.setattr(dashboard_links, "folders", lambda: [outside, package])
    assert notebook_under(root, "jobs.ipynb") is None

    # A root reached through a symbolic link still holds what is under its target.
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    monkeypatch.setattr(dashboard_links, "folders", lambda: [visible])
    assert notebook_under(link, "cost.ipynb") == "src/qmlops/notebooks/dashboards/cost.ipynb"


# -- in process: which server serves them ------------------------------------------------------


@pytest.fixture
def voila() -> bool:
    """Whether the test's server enables Voila's server extension."""
    return False


@pytest.fixture
def jp_server_config(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voila: bool
) -> Config:
    monkeypatch.setenv("QMLOPS_HOME", str(tmp_path / "qmlops"))
    for var in SERVER_ENV:
        monkeypatch.setenv(var, "")  # recorded, so the teardown removes what the server sets
        monkeypatch.delenv(var)
    extensions = {"qmlops_jupyter": True}
    if voila:
        extensions["voila.server_extension"] = True
    return Config(
        {
            "ServerApp": {"jpserver_extensions": extensions},
            "QmlopsApp": {"home": str(tmp_path / "qmlops"), "run_engine": False},
        }
    )


@pytest.fixture
def dashboards(jp_serverapp: Any, jp_fetch: Any) -> Any:
    """``GET /dashboards`` of the in-process server: its JSON, checked against the spec."""

    async def get() -> dict[str, Any]:
        response = await jp_fetch(API, "dashboards", method="GET", request_timeout=60)
        assert response.code == 200
        body = json.loads(response.body)
        check_spec(body)
        return body

    return get


async def test_without_voila_enabled_nothing_is_linked_and_the_hint_says_enable_it(
    dashboards: Any, jp_root_dir: Path
) -> None:
    copy_dashboards(jp_root_dir)
    body = await dashboards()
    assert body["voila"] is False
    assert_unlinked(body, "Voila is not enabled", "jupyter server extension enable voila")
    assert [d["title"] for d in body["dashboards"]] == [b.title for b in DASHBOARDS.values()]
    assert [d["description"] for d in body["dashboards"]] == [
        b.description for b in DASHBOARDS.values()
    ]


async def test_without_voila_installed_the_hint_says_install_it(
    dashboards: Any, jp_root_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_dashboards(jp_root_dir)
    monkeypatch.setattr(dashboard_links, "find_spec", lambda name: None)
    body = await dashboards()
    assert body["voila"] is False
    assert_unlinked(body, "Voila is not installed", "pip install voila")


@pytest.mark.parametrize("voila", [True])
async def test_with_voila_the_dashboards_under_the_root_are_linked_under_the_base_url(
    dashboards: Any, jp_root_dir: Path, jp_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only what is under this server's root counts (not the source tree's copy).
    monkeypatch.setattr(dashboard_links, "folders", lambda: [SOURCE])
    body = await dashboards()
    assert body["voila"] is True
    assert_unlinked(body, "not in a visible folder under this server's root", "qmlops dashboard")

    copy_dashboards(jp_root_dir)
    (jp_root_dir / "notebooks" / "dashboards" / "cost.ipynb").unlink()
    body = await dashboards()
    linked = {d["name"]: d for d in body["dashboards"]}
    assert linked["jobs"]["path"] == "notebooks/dashboards/jobs.ipynb"
    assert linked["jobs"]["url"] == f"{jp_base_url}voila/render/notebooks/dashboards/jobs.ipynb"
    assert jp_base_url == "/a%40b/"  # pytest_jupyter's: the links are under it
    assert linked["cost"]["url"] is None and linked["cost"]["path"] is None
    assert body["hint"].startswith("The cost dashboard's notebook is not in a visible folder")

    copy_dashboards(jp_root_dir)
    body = await dashboards()
    assert body["hint"] is None
    assert [d["url"] for d in body["dashboards"]] == [
        f"{jp_base_url}voila/render/notebooks/dashboards/{name}.ipynb" for name in DASHBOARDS
    ]


@pytest.mark.parametrize("voila", [True])
async def test_voila_enabled_but_not_loaded_says_so(
    dashboards: Any, jp_root_dir: Path, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_dashboards(jp_root_dir)
    monkeypatch.setattr(dashboard_links, "routes_voila", lambda web_app, base_url: False)
    body = await dashboards()
    assert body["voila"] is False
    assert_unlinked(body, "did not load")


# -- a real server: the link is the page, behind the login ---------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A ``jupyter server`` with Voila enabled as installed, its root empty at first."""
    with running_server(tmp_path_factory.mktemp("dashboards")) as (server, _):
        yield server


@pytest.mark.slow
def test_a_real_server_links_the_voila_page_which_needs_the_login(served: JupyterServer) -> None:
    server = served
    body = server.api("GET", "/dashboards")
    check_spec(body)
    assert body["voila"] is True, body
    assert_unlinked(body, "copy notebooks/dashboards/")

    copy_dashboards(server.root)
    body = server.api("GET", "/dashboards")
    check_spec(body)
    assert body["hint"] is None, body
    urls = {d["name"]: d["url"] for d in body["dashboards"]}
    assert urls["jobs"] == "/voila/render/notebooks/dashboards/jobs.ipynb"

    # With the token: Voila's page of the notebook, run (its title and its heading).
    token = {"Authorization": f"token {server.token}"}
    page = httpx.get(server.base + urls["jobs"], headers=token, timeout=240)
    assert page.status_code == 200, page.text[-2000:] + server.log_tail(3000)
    assert "<title>Jobs" in page.text or "<title>jobs" in page.text, page.text[:2000]
    assert 'id="Jobs"' in page.text or ">Jobs<" in page.text, page.text[:4000]
    assert server.token not in page.text

    # Without it (or with a wrong one): no page, a refusal or the login page's address.
    for headers in ({}, {"Authorization": "token wrong"}):
        refused = httpx.get(
            server.base + urls["jobs"], headers=headers, timeout=60, follow_redirects=False
        )
        assert refused.status_code in (302, 401, 403), refused.status_code
        if refused.status_code == 302:
            assert "/login" in refused.headers["location"]
        assert "jobs_dashboard" not in refused.text
