"""What a notebook run as a pipeline can call: :func:`wait_for`.

>>> from qmlops_jupyter.pipeline import wait_for
>>> job = qmlops_jupyter.submit(circuit, backend="ionq:qpu.aria-1", credential=credential)
>>> # --- a new cell ---
>>> result = wait_for(job)          # parks the pipeline run while the job is queued

Outside a pipeline run it simply waits. Inside one (``qmlops pipeline run``, a schedule, a
sweep), while a job is still queued or running at a provider and an engine host is alive, it
*parks* the run instead: the kernel's variables are saved, the kernel is stopped (nothing waits
for hours holding memory), and an engine host resumes the run when every job has ended, in a
new kernel with the variables put back, from the cell that called ``wait_for``. That cell runs
again from its top, and ``wait_for`` now returns the results at once: call it at the top of
its own cell.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Job
    from .models import JobResult

#: The exception name a parked cell ends with (the runner looks for it).
PARKED_ENAME = "PipelineParked"
#: The file ``wait_for`` leaves in the run's folder for the runner: the jobs and the state.
PARK_REQUEST = "park-request.json"


class PipelineParked(BaseException):
    """Ends the cell that parked the run (a BaseException: ``except Exception`` in the
    notebook does not stop a park)."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the park is not a failure.
        return [f"{PARKED_ENAME}: {self}"]


def wait_for(
    jobs: Job | str | Sequence[Job | str], timeout: float | None = None
) -> JobResult | list[JobResult]:
    """The results of ``jobs`` once they have ended: for one job (a handle or a job id) its
    :class:`~qmlops_jupyter.models.JobResult`, for a list the list of results in the same
    order. Raises :class:`~qmlops_jupyter.errors.JobFailed` for a job that did not complete,
    and :class:`~qmlops_jupyter.errors.WaitTimeout` when ``timeout`` seconds (for all of
    them together) pass first.

    In a pipeline run, while some job is not done and an engine host is alive, the run parks
    here instead of waiting (see the module's doc): this call does not return in this kernel.
    """
    from .client import Job, get_client

    single = isinstance(jobs, (str, Job))
    items: list[Any] = [jobs] if single else list(jobs)  # type: ignore[list-item]
    client = get_client()
    handles = [client.get_job(j) if isinstance(j, str) else j for j in items]
    run_dir = _parking_folder(client, handles)
    if run_dir is not None:
        _park(run_dir, handles)
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    for handle in handles:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        results.append(handle.result(left))
    return results[0] if single else results


def _done(handle: Job) -> bool:
    from .states import JobState

    state = handle.refresh().state
    return state.terminal or state is JobState.NEEDS_ATTENTION


def _parking_folder(client: Any, handles: list[Job]) -> Path | None:
    """The run's folder when this call should park; None to wait here."""
    run_id = os.environ.get("QMLOPS_PIPELINE_RUN_ID")
    folder = os.environ.get("QMLOPS_PIPELINE_RUN_DIR")
    if not run_id or not folder or _ipython() is None:
        return None  # not a pipeline run's kernel
    pending = [h for h in handles if not _done(h)]
    if not pending:
        return None
    if all(_local(client, h.backend) for h in pending):
        return None  # a local simulator's job takes seconds: parking would cost more
    if not client.engine_alive():
        return None  # nobody would resume the run: wait here (this kernel advances the jobs)
    return Path(folder)


def _local(client: Any, backend: str) -> bool:
    try:
        return bool(client.registry.get(backend).capabilities.local)
    except Exception:
        return False


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


# -- the state ----------------------------------------------------------------------------------


def _pickler() -> tuple[str, Any]:
    """cloudpickle (functions and classes defined in the notebook are saved by value), else
    dill, else the standard pickle."""
    for name in ("cloudpickle", "dill"):
        try:
            return name, __import__(name)
        except ImportError:
            continue
    return "pickle", pickle


def _saved_names(shell: Any) -> dict[str, Any]:
    """The user's variables: not IPython's own (``In``, ``Out``, ``_``, ``_i3`` ...)."""
    hidden = getattr(shell, "user_ns_hidden", {})
    out = {}
    for name, value in shell.user_ns.items():
        if name.startswith("_") or (name in hidden and hidden[name] is value):
            continue
        if name in ("In", "Out", "get_ipython", "exit", "quit"):
            continue
        out[name] = value
    return out


def save_namespace(shell: Any, path: Path) -> list[str]:
    """Save the kernel's variables to ``path`` (owner-only); the names that could not be
    saved. Modules are saved by name and imported again."""
    kind, module = _pickler()
    names = _saved_names(shell)
    modules = {n: v.__name__ for n, v in names.items() if isinstance(v, types.ModuleType)}
    values = {n: v for n, v in names.items() if n not in modules}
    try:
        blob = module.dumps(values)
        skipped: list[str] = []
    except Exception:
        # One at a time, to find the ones that cannot be saved; the rest together (values
        # that share an object keep sharing it).
        skipped = []
        for name, value in values.items():
            try:
                module.dumps(value)
            except Exception:
                skipped.append(name)
        blob = module.dumps({n: v for n, v in values.items() if n not in skipped})
    payload = {"pickler": kind, "modules": modules, "values": blob, "skipped": skipped}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        pickle.dump(payload, out)
    os.replace(tmp, path)
    return skipped


def restore_namespace(path: str | Path) -> None:
    """Put the saved variables back into this kernel (the first cell of a resumed part)."""
    import importlib

    shell = _ipython()
    with open(path, "rb") as source:
        payload = pickle.load(source)
    loader = pickle if payload["pickler"] == "pickle" else __import__(payload["pickler"])
    namespace = shell.user_ns if shell is not None else sys.modules["__main__"].__dict__
    failed = []
    for name, module_name in payload["modules"].items():
        try:
            namespace[name] = importlib.import_module(module_name)
        except Exception:
            failed.append(name)
    namespace.update(loader.loads(payload["values"]))
    lost = [*payload["skipped"], *failed]
    if lost:
        print(f"qmlops: not restored after the park (could not be saved): {', '.join(lost)}")


def _park(folder: Path, handles: list[Job]) -> None:
    shell = _ipython()
    token = secrets.token_hex(4)
    state = folder / f"parked-state-{token}.pkl"
    skipped = save_namespace(shell, state)
    ids = [h.id for h in handles]
    request = {"jobs": ids, "state": state.name, "skipped": skipped}
    tmp = folder / (PARK_REQUEST + ".tmp")
    tmp.write_text(json.dumps(request))
    os.replace(tmp, folder / PARK_REQUEST)
    note = f"; not saved: {', '.join(skipped)}" if skipped else ""
    raise PipelineParked(
        f"the run is parked until job{'s' if len(ids) > 1 else ''} {', '.join(ids)} "
        f"end{'' if len(ids) > 1 else 's'}; its kernel stops now and the run resumes from this "
        f"cell{note}"
    )
