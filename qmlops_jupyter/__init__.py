"""qmlops_jupyter: quantum machine-learning operations for Jupyter.

One persistent job ledger for every quantum backend, advanced by a long-lived engine::

    import qmlops_jupyter as q
    job = q.submit(circuit, backend="aer", shots=1024, wait=True)
    job.result().counts

    with q.track("vqe", run_name="lr=0.1") as run:      # jobs inside log to one MLflow run
        ...
        run.log_step(step, loss=loss)

In a notebook, ``%load_ext qmlops_jupyter`` adds the ``%qmlops`` magics (``%qmlops help``).

Heavy SDKs (qiskit, aer, sqlalchemy) are imported on first use, so importing this package
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .bridges.qiskit_backend import QmlopsBackend
    from .client import Client, Job, get_client, get_job, jobs, reset_client, submit
    from .states import JobState
    from .tracking import Profile, TrackedRun, profile, track

__all__ = [
    "Client",
    "Job",
    "JobState",
    "Profile",
    "QmlopsBackend",
    "TrackedRun",
    "__version__",
    "get_client",
    "get_job",
    "jobs",
    "profile",
    "reset_client",
    "submit",
    "track",
]

_LAZY = {
    "Client": "client",
    "Job": "client",
    "get_client": "client",
    "get_job": "client",
    "jobs": "client",
    "reset_client": "client",
    "submit": "client",
    "JobState": "states",
    "QmlopsBackend": "bridges.qiskit_backend",
    "track": "tracking",
    "profile": "tracking",
    "TrackedRun": "tracking",
    "Profile": "tracking",
}


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The jupyter-server extension (enabled on install by ``jupyter-config``)."""
    from .server import _jupyter_server_extension_points as points

    return points()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (the sidebar), for ``jupyter labextension develop``;
    wheels install it under ``share/jupyter/labextensions/qmlops-jupyter``."""
    return [{"src": "labextension", "dest": "qmlops-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext qmlops_jupyter``: the ``%qmlops`` line magic and ``%%qmlops run`` cell magic
    (:mod:`qmlops_jupyter.notebook.magics`; ``%qmlops help`` lists the commands)."""
    from .notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext qmlops_jupyter``: remove the magics (a run ``%qmlops track`` opened is
    ended)."""
    from .notebook.magics import unload

    unload(ipython)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qmlops_jupyter' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
