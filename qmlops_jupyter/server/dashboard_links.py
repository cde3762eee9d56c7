"""Which dashboards this Jupyter server can show, and where: the links of the sidebar's
Dashboards section (``GET /qmlops/api/v1/dashboards``).

A dashboard is linked when both hold:

- Voila's server extension is enabled in this server and loaded: the extension manager has it
  enabled and linked, and one of Voila's handlers routes ``<base_url>voila/render/...``;
- its notebook is a file under the server's contents root, in no hidden folder (what Voila's
  render page can open): ``notebooks/dashboards/<name>.ipynb`` under the root, else the
  registry's own copy (:func:`qmlops_jupyter.dashboards.folders`) when that lies under it.

Otherwise its ``path`` and ``url`` are null and ``hint`` says, in one line, why and what to do.
Voila is never imported here: the extension manager and the router already know.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jupyter_server.utils import url_path_join

from ..dashboards import DASHBOARDS, folders

if TYPE_CHECKING:
    from ..models import DashboardLinks

#: Names the Voila extension is enabled under (`jupyter server extension enable voila` writes
#: the first; Voila's own install enables the second).
VOILA_EXTENSIONS = ("voila", "voila.server_extension")
#: Where a dashboard's notebook is looked for first, relative to the server's root.
ROOT_FOLDER = Path("notebooks") / "dashboards"


def dashboard_links(serverapp: Any, base_url: str) -> DashboardLinks:
    """Every dashboard of the registry, linked where this server's Voila can render it."""
    from ..models import DashboardLink, DashboardLinks

    why_not = voila_problem(serverapp)
    root = contents_root(serverapp)
    hidden_ok = bool(getattr(serverapp.contents_manager, "allow_hidden", False))
    links = []
    for board in DASHBOARDS.values():
        path = None if why_not else notebook_under(root, board.filename, hidden_ok)
        links.append(
            DashboardLink(
                name=board.name,
                title=board.title,
                description=board.description,
                path=path,
                url=None if path is None else render_url(base_url, path),
            )
        )
    missing = [link.name for link in links if link.url is None]
    hint = why_not or (not_under_root(missing, len(links)) if missing else None)
    return DashboardLinks(dashboards=links, voila=why_not is None, hint=hint)


def not_under_root(missing: list[str], total: int) -> str:
    """The hint when Voila serves but the notebooks of ``missing`` are not under the root."""
    if len(missing) == total:
        which = "The dashboard notebooks are"
    elif len(missing) == 1:
        which = f"The {missing[0]} dashboard's notebook is"
    else:
        which = f"The {' and '.join(missing)} dashboards' notebooks are"
    return (
        f"{which} not in a visible folder under this server's root: copy notebooks/dashboards/ "
        f"into it, or run `qmlops dashboard {missing[0]}` for a page of its own"
    )


def voila_problem(serverapp: Any) -> str | None:
    """None when Voila's server extension serves notebooks in this server; else why it does
    not and what to do, in one line."""
    manager = serverapp.extension_manager
    enabled = [
        name
        for name in VOILA_EXTENSIONS
        if name in manager.extensions and manager.extensions[name].enabled
    ]
    if not enabled:
        if find_spec("voila") is None:
            return (
                "Voila is not installed where this server runs: `pip install voila`, "
                "then restart the server"
            )
        return (
            "Voila is not enabled in this server: "
            "`jupyter server extension enable voila`, then restart the server"
        )
    linked = any(manager.linked_extensions.get(name) for name in enabled)
    if not linked or not routes_voila(serverapp.web_app, serverapp.base_url):
        return "Voila is enabled but did not load in this server: its log says why"
    return None


def routes_voila(web_app: Any, base_url: str) -> bool:
    """Whether one of Voila's handlers answers ``<base_url>voila/render/...`` in ``web_app``
    (its extension loaded: the handlers are added last thing in its load hook)."""
    probe = url_path_join(base_url, "voila/render/probe.ipynb")
    for rule in web_app.default_router.rules:
        for inner in getattr(rule.target, "rules", [rule]):
            regex = getattr(inner.matcher, "regex", None)
            target = inner.target
            module = getattr(target, "__module__", "") if isinstance(target, type) else ""
            if regex is not None and module.startswith("voila.") and regex.match(probe):
                return True
    return False


def contents_root(serverapp: Any) -> Path:
    """The folder the server's contents (and so Voila's render page) are read from."""
    root = getattr(serverapp.contents_manager, "root_dir", None) or serverapp.root_dir
    return Path(os.path.abspath(os.path.expanduser(root)))


def notebook_under(root: Path, filename: str, hidden_ok: bool = False) -> str | None:
    """The path, relative to ``root`` and with ``/``, of the first copy of ``filename`` that is
    a file under ``root`` in no hidden folder; None if there is none."""
    for candidate in [root / ROOT_FOLDER / filename, *(f / filename for f in folders())]:
        if not candidate.is_file():
            continue
        relative = _relative(candidate, root)
        if relative is None:
            continue
        if not hidden_ok and any(part.startswith(".") for part in relative.parts):
            continue
        return relative.as_posix()
    return None


def _relative(path: Path, root: Path) -> Path | None:
    """``path`` relative to ``root`` as written, else with symbolic links resolved; None when
    it is not under it."""
    for inner, outer in (
        (Path(os.path.abspath(path)), root),
        (path.resolve(), root.resolve()),
    ):
        try:
            return inner.relative_to(outer)
        except ValueError:
            continue
    return None


def render_url(base_url: str, path: str) -> str:
    """Voila's page of the notebook at ``path`` (relative to the root), under ``base_url``."""
    return url_path_join(base_url, "voila/render", quote(path))
