"""Dashboards: the Jobs, Experiments and Cost pages, as notebooks Voila serves.

The notebooks live in ``notebooks/dashboards/`` (a wheel carries them in
``qmlops_jupyter/dashboards/notebooks/``); each is a title and one call into
:mod:`qmlops_jupyter.dashboards.views`, which builds the page from the ledger and the MLflow
store. They are served two ways:

- by the Jupyter server, through Voila's server extension at ``/voila/render/<path>`` (its
  login, tracebacks off), linked from the sidebar when the notebook is under the server's root;
- standalone, by ``qmlops dashboard NAME [--port P]``: Voila on 127.0.0.1 with a token.

This module only names them and finds their files: importing it loads nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import QmlopsError

__all__ = ["DASHBOARDS", "Dashboard", "UnknownDashboard", "dashboard", "notebook_path"]


class UnknownDashboard(QmlopsError):
    http_status = 404
    exit_code = 3
    code = "unknown_dashboard"


@dataclass(frozen=True)
class Dashboard:
    name: str
    title: str
    description: str

    @property
    def filename(self) -> str:
        return f"{self.name}.ipynb"


DASHBOARDS: dict[str, Dashboard] = {
    d.name: d
    for d in (
        Dashboard(
            "jobs",
            "Jobs",
            "Live counts by state and backend, a filterable job table, queue and run times, "
            "jobs needing attention.",
        ),
        Dashboard(
            "experiments",
            "Experiments",
            "MLflow runs of an experiment side by side, metric curves, the circuits and jobs "
            "behind a run.",
        ),
        Dashboard(
            "cost",
            "Cost and budget",
            "Shots and money by day, backend and user; budgets used against their limits; "
            "what queued jobs will cost.",
        ),
    )
}

_PACKAGE = Path(__file__).resolve().parent


def folders() -> list[Path]:
    """Where the dashboard notebooks are looked for: inside the installed package, then the
    source tree's ``notebooks/dashboards`` (an editable install)."""
    return [_PACKAGE / "notebooks", _PACKAGE.parent.parent / "notebooks" / "dashboards"]


def dashboard(name: str) -> Dashboard:
    """The dashboard called ``name``; UnknownDashboard names the ones there are."""
    found = DASHBOARDS.get(name.strip().lower())
    if found is None:
        raise UnknownDashboard(f"no dashboard named {name!r}; there are: {', '.join(DASHBOARDS)}")
    return found


def notebook_path(name: str) -> Path:
    """The notebook of dashboard ``name``."""
    board = dashboard(name)
    for folder in folders():
        path = folder / board.filename
        if path.is_file():
            return path
    raise UnknownDashboard(
        f"the {board.name} dashboard's notebook {board.filename} is missing from "
        + " and ".join(str(f) for f in folders())
    )
