"""Where a job comes from: the notebook (the real ``.ipynb``, not ``ipykernel_launcher.py``),
the git commit and whether the tree was dirty, the user, and the parameters of the pipeline run
it is part of. Captured once per submission; the expensive parts are cached for a few seconds so
a training loop pays microseconds per job.

How the notebook is found, first answer wins:

1. ``QMLOPS_NOTEBOOK_PATH`` (set by ``qmlops pipeline run`` and by anyone who wants to say);
2. a kernel started by papermill, nbconvert or ``jupyter execute``: the first ``.ipynb`` on the
   parent process's command line (and papermill's ``-p``/``-r``/``-y``/``-f`` parameters);
3. a kernel started by a Jupyter server (JupyterLab, Notebook, Voila): ``JPY_SESSION_NAME``,
   which the server sets to the notebook's path;
4. otherwise the script (``sys.argv[0]``), or nothing for an interactive interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..vault.redaction import redact
from .config import safe_uri

#: Seconds a git answer is reused (a loop of jobs needs one ``git status``, not one per job).
GIT_CACHE_SECONDS = 3.0
_RUNNERS = ("papermill", "nbconvert", "jupyter-execute", "nbclient")

_lock = threading.Lock()
_git_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
_parent_cache: dict[int, tuple[str | None, dict[str, Any] | None, str | None]] = {}


def source() -> dict[str, Any]:
    """``{"notebook": path|None, "script": path|None, "via": how, "parameters": {...}|None,
    "pipeline_run": id|None}`` for this process."""
    via = None
    notebook = os.environ.get("QMLOPS_NOTEBOOK_PATH") or None
    parameters: dict[str, Any] | None = None
    if notebook:
        via = "QMLOPS_NOTEBOOK_PATH"
    raw = os.environ.get("QMLOPS_PIPELINE_PARAMETERS")
    if raw:
        try:
            loaded = json.loads(raw)
            parameters = loaded if isinstance(loaded, dict) else None
        except ValueError:
            parameters = None
    if "ipykernel" in sys.modules:
        runner_nb, runner_params, runner = _runner_notebook()
        if runner_nb and not notebook:
            notebook, via = runner_nb, runner
        if runner_params is not None and parameters is None:
            parameters = runner_params
        if not notebook:
            session = os.environ.get("JPY_SESSION_NAME")
            if session:
                notebook, via = _resolve_session_path(session), "jupyter-server"
    script = None
    if not notebook:
        argv0 = sys.argv[0] if sys.argv else ""
        if argv0 and not argv0.endswith("ipykernel_launcher.py") and Path(argv0).is_file():
            script = str(Path(argv0).resolve())
    return {
        "notebook": str(Path(notebook).resolve()) if notebook else None,
        "script": script,
        "via": via,
        "parameters": _clean(parameters) if parameters else None,
        "pipeline_run": os.environ.get("QMLOPS_PIPELINE_RUN_ID") or None,
    }


def _resolve_session_path(path: str) -> str:
    """``JPY_SESSION_NAME`` is absolute with current servers; older ones give a path relative to
    the server's root, where the kernel's working folder is the notebook's own."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    here = Path.cwd() / p.name
    return str(here if here.exists() else p)


def _runner_notebook() -> tuple[str | None, dict[str, Any] | None, str | None]:
    ppid = os.getppid()
    with _lock:
        if ppid in _parent_cache:
            return _parent_cache[ppid]
    found: tuple[str | None, dict[str, Any] | None, str | None] = (None, None, None)
    try:
        argv = Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = os.readlink(f"/proc/{ppid}/cwd")
    except OSError:
        argv, cwd = [], "."
    runner = next((r for r in _RUNNERS if any(r in a for a in argv[:3])), None)
    if runner is not None:
        notebook = next((a for a in argv[1:] if a.endswith(".ipynb")), None)
        if notebook:
            path = Path(notebook)
            notebook = str(path if path.is_absolute() else Path(cwd) / path)
        params = papermill_parameters(argv, cwd) if runner == "papermill" else None
        found = (notebook, params, runner)
    with _lock:
        _parent_cache[ppid] = found
    return found


def papermill_parameters(argv: list[str], cwd: str = ".") -> dict[str, Any]:
    """The parameters a ``papermill`` command line passes (``-p``, ``-r``, ``-y``, ``-f``),
    typed the way papermill types them."""
    import yaml

    params: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-p", "--parameters") and i + 2 < len(argv):
            params[argv[i + 1]] = _papermill_value(argv[i + 2])
            i += 3
            continue
        if arg in ("-r", "--parameters_raw") and i + 2 < len(argv):
            params[argv[i + 1]] = argv[i + 2]
            i += 3
            continue
        if arg in ("-y", "--parameters_yaml") and i + 1 < len(argv):
            loaded = yaml.safe_load(argv[i + 1])
            if isinstance(loaded, dict):
                params.update(loaded)
            i += 2
            continue
        if arg in ("-f", "--parameters_file") and i + 1 < len(argv):
            path = Path(argv[i + 1])
            try:
                loaded = yaml.safe_load(
                    (path if path.is_absolute() else Path(cwd) / path).read_text()
                )
            except (OSError, yaml.YAMLError):
                loaded = None
            if isinstance(loaded, dict):
                params.update(loaded)
            i += 2
            continue
        i += 1
    return params


def _papermill_value(value: str) -> Any:
    if value == "True":
        return True
    if value == "False":
        return False
    if value == "None":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def git_info(folder: Path, notebook: str | None = None) -> dict[str, Any] | None:
    """``{"commit", "branch", "dirty", "repo_url"}`` of the repository holding ``folder``, or
    None outside one (or without git). ``dirty``: tracked files changed, or the notebook itself
    not committed."""
    key = f"{folder}|{notebook}"
    now = time.monotonic()
    with _lock:
        cached = _git_cache.get(key)
        if cached is not None and now - cached[0] < GIT_CACHE_SECONDS:
            return cached[1]
    info = _read_git(folder, notebook)
    with _lock:
        _git_cache[key] = (now, info)
    return info


def _read_git(folder: Path, notebook: str | None) -> dict[str, Any] | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain=v2", "--branch", "-z"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    commit = branch = None
    dirty = False
    untracked: list[str] = []
    for entry in out.stdout.decode(errors="replace").split("\0"):
        if entry.startswith("# branch.oid "):
            commit = entry.split(" ", 2)[2]
        elif entry.startswith("# branch.head "):
            branch = entry.split(" ", 2)[2]
        elif entry.startswith(("1 ", "2 ", "u ")):
            dirty = True
        elif entry.startswith("? "):
            untracked.append(entry[2:])
    if commit in (None, "(initial)"):
        commit = None
        dirty = True
    if notebook and untracked and not dirty:
        top = _git_toplevel(folder)
        if top is not None:
            rel = os.path.relpath(notebook, top)
            dirty = any(rel == u or (u.endswith("/") and rel.startswith(u)) for u in untracked)
    repo_url = None
    try:
        remote = subprocess.run(
            ["git", "-C", str(folder), "config", "--get", "remote.origin.url"],
            capture_output=True,
            timeout=5,
            check=False,
        )
        if remote.returncode == 0 and remote.stdout.strip():
            repo_url = safe_uri(remote.stdout.decode().strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "commit": commit,
        "branch": None if branch == "(detached)" else branch,
        "dirty": dirty,
        "repo_url": repo_url,
    }


def _git_toplevel(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode().strip() or None if out.returncode == 0 else None


def capture(owner: str) -> dict[str, Any]:
    """Everything a job records about where it came from (no secret: values pass redaction)."""
    src = source()
    where = src["notebook"] or src["script"]
    folder = Path(where).parent if where else Path.cwd()
    return {**src, "user": owner, "git": git_info(folder, src["notebook"])}


def clear_caches() -> None:
    with _lock:
        _git_cache.clear()
        _parent_cache.clear()


def _clean(value: Any) -> Any:
    """JSON-safe, redacted copy of pipeline parameters (a secret must never be one, but if it
    is, it is masked here)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(repr(value))
