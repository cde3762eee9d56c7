"""The MLflow UI over the toolkit's local tracking store: the one place that says how its
``mlflow server`` is started, shared by ``qmlops mlflow-ui`` and the UI proxied inside
JupyterLab (``qmlops_jupyter.server.mlflow_proxy``). Standard library only: MLflow runs in the
process this describes, never in the caller's."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrackingConfig

#: The UI listens on loopback only.
HOST = "127.0.0.1"


def mlflow_server_command(
    cfg: TrackingConfig, port: int, *, listen_fd: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and the environment additions of an ``mlflow server`` for ``cfg``'s local
    store on 127.0.0.1:``port`` with one worker. The store's URI (a database URL may carry a
    password, and any local user can read a command line) goes in the environment.
    ``listen_fd``: a listening socket, inherited as that descriptor, to serve on."""
    if cfg.artifact_root is None:
        raise ValueError("mlflow_server_command needs a local tracking store")
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if listen_fd is not None:
        # Requests are proxied and logged by the jupyter server already.
        argv += ["--uvicorn-opts", f"--fd {listen_fd} --no-access-log"]
    env = {
        "MLFLOW_BACKEND_STORE_URI": cfg.uri,
        "MLFLOW_DEFAULT_ARTIFACT_ROOT": cfg.artifact_root,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The job runner (GenAI scorers) is of no use to a UI over this store, and its seven
        # worker processes would outlive a SIGTERM to the server.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return argv, env
