"""Where tracking goes: the embedded MLflow store by default, any tracking URI when asked.

Precedence, first found wins: ``MLFLOW_TRACKING_URI`` (MLflow's own variable), ``tracking.uri``
in ``config.yaml``, the embedded SQLite store ``<QMLOPS_HOME>/mlflow/mlflow.db`` with artifacts
in ``<QMLOPS_HOME>/mlflow/artifacts``. The experiment: ``MLFLOW_EXPERIMENT_NAME``, then
``QMLOPS_EXPERIMENT``, then ``tracking.experiment`` (default ``qmlops``).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings

_OFF = {"0", "off", "false", "no", "disabled"}
#: Stores that live on this machine: their artifacts go under a folder we choose.
_LOCAL_SCHEMES = {"sqlite", "file", "", "postgresql", "mysql", "mssql"}


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool
    #: The tracking URI as configured (may carry a password: never log or store it as is).
    uri: str
    experiment: str
    #: Artifact location for new experiments of a local store (None: the server decides).
    artifact_root: str | None
    #: True for the embedded store under QMLOPS_HOME (what ``qmlops mlflow-ui`` serves).
    embedded: bool
    #: Why tracking is off, when it is.
    reason: str | None = None

    @property
    def safe_uri(self) -> str:
        return safe_uri(self.uri)


def embedded_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"


def embedded_artifact_root(home: Path) -> str:
    return (home / "mlflow" / "artifacts").as_uri()


def resolve(settings: Settings) -> TrackingConfig:
    """The tracking settings of this process (cheap: no MLflow import)."""
    section = settings.config().tracking
    env = os.environ
    experiment = (
        env.get("MLFLOW_EXPERIMENT_NAME") or env.get("QMLOPS_EXPERIMENT") or section.experiment
    ).strip()
    if not experiment:
        raise ConfigError("the MLflow experiment name is empty")
    uri = (env.get("MLFLOW_TRACKING_URI") or section.uri or "").strip()
    embedded = not uri
    if embedded:
        uri = embedded_uri(settings.home)
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    artifact_root = None
    if scheme in _LOCAL_SCHEMES:
        artifact_root = section.artifact_root or embedded_artifact_root(settings.home)
    reason = None
    enabled = section.enabled
    if env.get("QMLOPS_TRACKING", "").strip().lower() in _OFF:
        enabled, reason = False, "QMLOPS_TRACKING is off"
    elif not section.enabled:
        reason = f"tracking.enabled is false in {settings.config_file}"
    elif not mlflow_installed():
        enabled = False
        reason = "MLflow is not installed: pip install 'qmlops-jupyter[mlflow]'"
    return TrackingConfig(enabled, uri, experiment, artifact_root, embedded, reason)


@cache
def mlflow_installed() -> bool:
    return find_spec("mlflow") is not None


_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def scrub(message: str) -> str:
    """Remove ``user:password@`` from every URL in a message (MLflow's errors quote the URL
    they tried, password and all)."""
    return _USERINFO.sub(r"\1***@", message)


def register_uri_secrets(uri: str) -> None:
    """Let redaction mask a tracking URI's password wherever it shows up."""
    from ..vault.redaction import register

    try:
        parts = urllib.parse.urlsplit(uri)
        register(parts.password, urllib.parse.unquote(parts.password or "") or None)
    except ValueError:
        pass


def safe_uri(uri: str) -> str:
    """The URI without any ``user:password@`` part and without a query string (which may
    carry tokens)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable tracking URI>"
    if "@" not in parts.netloc and not parts.query:
        return uri  # nothing to hide; kept as written (sqlite:////abs/path must stay so)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    head = f"{parts.scheme}://{netloc}" if parts.scheme else netloc
    return head + parts.path
