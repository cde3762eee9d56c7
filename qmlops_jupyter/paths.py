"""Where qmlops keeps its state, resolved without loading the settings' models (the server
extension needs the folder while the server starts, before anything heavier is imported)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """``<jupyter data dir>/qmlops``."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "qmlops"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state folder: ``explicit``, else ``QMLOPS_HOME``, else :func:`default_home`;
    absolute, ``~`` expanded."""
    home = Path(explicit or os.environ.get("QMLOPS_HOME") or default_home())
    return home.expanduser().resolve()
